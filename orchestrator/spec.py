"""JobSpec: the TOML file an ML lead writes to describe one labeling job.

Backend-independent rules live here; each backend adds its own (Ground Truth's ARN and price
rules, MTurk's reward format) in its `validate`. Every problem names the key it came from.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.errors import NotFound, SpecError

# Ground Truth's LabelingJobName pattern; used for every backend because names become S3 paths.
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ATTRIBUTE_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,126}$")
# Far beyond any backend's own limit (those are checked by each backend, naming its rule); it keeps
# every date computed from a duration within what datetime can hold.
MAX_DURATION_SECONDS = 3650 * 86400
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: object) -> int:
    """Seconds from `300`, `"300"`, `"5m"`, `"6h"` or `"2d"`: more than 0, at most 3650 days."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 300, '5m', '6h' or '2d'")
    if isinstance(value, (int, float)):
        seconds = value  # an int is compared as it is: a huge one does not fit a float
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration like 300, '5m', '6h' or '2d'")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0 < seconds <= MAX_DURATION_SECONDS:  # NaN fails this too
        raise ValueError("must be more than 0 s and at most 3650 days")
    return int(seconds)


Duration = Annotated[int, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AdaptiveSpec(_Model):
    """`[task.adaptive]`: ask for another answer only where the crowd disagrees (docs/consolidation.md,
    Adaptive overlap). `max_workers` defaults to `task.workers_per_object` + 2."""

    min_workers: int = Field(2, ge=1)
    max_workers: int | None = Field(None, ge=1)
    edge_tolerance: float = Field(0.12, ge=0, le=1)
    support_margin: float = Field(0.1, ge=0, le=0.5)
    min_label_share: float = Field(0.6, ge=0, le=1)


class TaskSpec(_Model):
    title: str = Field("Draw a box around each object", min_length=1, max_length=128)
    description: str = Field("Draw one tight box around every object of the listed labels.", min_length=1)
    keywords: list[str] = Field(default_factory=lambda: ["image", "bounding box"])
    instructions: str | None = None
    workers_per_object: int = Field(5, ge=1)
    time_limit: Duration = 300
    lifetime: Duration = 6 * 3600
    max_concurrent: int = Field(1000, ge=1)
    adaptive: AdaptiveSpec | None = None

    @model_validator(mode="after")
    def _adaptive_bounds(self) -> TaskSpec:
        adaptive = self.adaptive
        if adaptive is not None:
            if adaptive.max_workers is None:
                adaptive.max_workers = self.workers_per_object + 2
            if adaptive.max_workers < adaptive.min_workers:
                raise ValueError(
                    f"adaptive.max_workers ({adaptive.max_workers}) must be at least "
                    f"adaptive.min_workers ({adaptive.min_workers})"
                )
        return self


class WorkforceSpec(_Model):
    type: Literal["private", "vendor", "public"] = "private"
    team: str | None = None
    price_usd: float | None = Field(None, ge=0)


class GroundTruthSpec(_Model):
    role_arn: str
    consolidation: Literal["aws", "labeljob"] = "aws"
    consolidation_lambda_arn: str | None = None
    content_classifiers: list[Literal["FreeOfPersonallyIdentifiableInformation", "FreeOfAdultContent"]] = (
        Field(default_factory=list)
    )
    # The job's region; the session's (--region, AWS_REGION, profile) when omitted.
    region: str | None = None
    # Overrides the built-in table of Ground Truth's per-labeled-object fee.
    per_object_fee_usd: float | None = Field(None, ge=0)
    # Chained jobs (`launch --adjust-from/--verify-from`): the earlier job and its label attribute.
    chain: Literal["adjust", "verify"] | None = None
    chain_from: str | None = None
    chain_attribute: str | None = None
    # A follow-up job (`launch --more-from`): the earlier job whose unsettled objects it labels again.
    more_from: str | None = None


class MTurkSpec(_Model):
    sandbox: bool = True
    reward_usd: str = "0.10"
    auto_approve_after: Duration = 3 * 86400
    min_approval_rate: int | None = Field(None, ge=0, le=100)
    min_approved_hits: int | None = Field(None, ge=0)
    locales: list[str] = Field(default_factory=list)
    masters: bool = False
    question: Literal["html", "external"] = "html"
    external_url: str | None = None
    review_policy: Literal["approve_all", "agreement"] = "approve_all"
    block_after_rejections: int | None = Field(None, ge=1)
    # How many times a HIT that expired with answers missing is extended by task.lifetime.
    max_extensions: int = Field(1, ge=0)

    @field_validator("reward_usd", mode="before")
    @classmethod
    def _reward_text(cls, value: object) -> str:
        # MTurk wants a string like "0.12"; a TOML float would round-trip badly.
        text = str(value)
        if not re.fullmatch(r"[0-9]+(\.[0-9]{1,2})?", text):
            raise ValueError(f"{text!r} is not an amount in USD like '0.12'")
        return text


class PortalSpec(_Model):
    public_url: str | None = None
    # The one local folder a portal job's file:// images must lie in (docs/portal.md).
    image_folder: str | None = None


class ConsolidationSpec(_Model):
    iou_threshold: float = Field(0.5, gt=0, le=1)
    min_support: float = Field(0.5, gt=0, le=1)
    coordinates: Literal["median", "mean"] = "median"
    weighting: Literal["none", "agreement"] = "agreement"


class QualitySpec(_Model):
    """Gold tasks (docs/portal.md, "Gold tasks"): `gold` is an augmented manifest of known boxes."""

    gold: str | None = None
    gold_rate: float = Field(0.1, gt=0, lt=1)
    gold_min_f1: float | None = Field(None, ge=0, le=1)
    gold_min_seen: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _min_f1_needs_gold(self) -> QualitySpec:
        if self.gold_min_f1 is not None and self.gold is None:
            raise ValueError("gold_min_f1 needs gold, the manifest of gold tasks")
        return self


class VerifySpec(_Model):
    """A portal verification job on an earlier job's output (`launch --verify-from`, docs/portal.md)."""

    from_job: str
    attribute: str
    below: float | None = Field(None, gt=0, le=1)
    # The review's decisions that select the lines (`--verify-decision`, docs/review.md).
    decisions: list[Literal["undecided", "accept", "fix", "reject"]] | None = None


class JobSpec(_Model):
    name: str
    backend: Literal["groundtruth", "mturk", "portal"] = "portal"
    labels: list[str]
    label_attribute: str = "bbox"
    input_manifest: str
    output: str
    task: TaskSpec = Field(default_factory=TaskSpec)
    workforce: WorkforceSpec = Field(default_factory=WorkforceSpec)
    groundtruth: GroundTruthSpec | None = None
    mturk: MTurkSpec | None = None
    portal: PortalSpec = Field(default_factory=PortalSpec)
    consolidation: ConsolidationSpec = Field(default_factory=ConsolidationSpec)
    quality: QualitySpec | None = None
    verify: VerifySpec | None = None

    @model_validator(mode="after")
    def _gold_on_the_portal(self) -> JobSpec:
        if self.quality is not None and self.quality.gold is not None and self.backend == "groundtruth":
            raise ValueError("quality.gold: gold tasks run on the portal and mturk backends only")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                "must be 1-63 letters, digits and hyphens, starting and ending with a letter or digit "
                "(no underscores)"
            )
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        if not 1 <= len(value) <= 10:
            raise ValueError("give 1 to 10 labels (the bounding-box tool shows at most 10)")
        for label in value:
            if not label.strip() or len(label) > 256:
                raise ValueError(f"label {label!r} must be 1-256 characters")
        duplicates = sorted({label for label in value if value.count(label) > 1})
        if duplicates:
            raise ValueError(f"duplicate labels: {', '.join(duplicates)}")
        return value

    @field_validator("label_attribute")
    @classmethod
    def _attribute(cls, value: str) -> str:
        if not ATTRIBUTE_PATTERN.fullmatch(value):
            raise ValueError("must be 1-127 letters, digits and hyphens (no underscores)")
        if value.endswith(("-metadata", "-ref")) or value in ("source", "source-ref"):
            raise ValueError("must not end with -metadata or -ref, nor be source or source-ref")
        return value

    def fingerprint(self) -> str:
        """A hash of everything that defines the job, to tell a re-launch from a name clash."""
        data = self.model_dump(mode="json")
        for *parents, key in ADDED_LATER:
            holder = data
            for parent in parents:
                holder = holder.get(parent) or {}
            if key in holder and holder[key] is None:
                del holder[key]
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# Keys added after jobs were launched, left out of the fingerprint while unset: a spec without them
# hashes as it did before they existed, so those jobs are still recognised when launched again.
ADDED_LATER = (
    ("task", "adaptive"),
    ("quality",),
    ("verify",),
    ("verify", "decisions"),
    ("portal", "image_folder"),
    ("groundtruth", "more_from"),
)

MTURK_CLOSED = "Amazon Mechanical Turk closed permanently on 2026-09-30, as its API reference says"
PORTAL_INSTEAD = (
    'the portal (backend = "portal") needs no AWS account and takes workers from any marketplace '
    "through `labeljob portal link` (docs/portal.md)"
)


def marketplace_warning(spec: JobSpec) -> str | None:
    """Why the service may refuse a job that needs Mechanical Turk, and what to use instead."""
    if spec.backend == "mturk":
        return f"{MTURK_CLOSED}; it may no longer accept this job: {PORTAL_INSTEAD}"
    if spec.backend == "groundtruth" and spec.workforce.type == "public":
        return (
            f"Ground Truth's public workforce is Mechanical Turk's crowd. {MTURK_CLOSED}; Ground Truth may "
            f"no longer accept this job: use a private or vendor team, or {PORTAL_INSTEAD}"
        )
    return None


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        problems.append((key, message))
    return problems


def parse_spec(data: dict, source: str = "job spec") -> JobSpec:
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_problems(exc), source=source) from None


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a job spec; relative local paths in it are relative to the spec file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise NotFound(
            f"job spec {path}: no such file", hint="`labeljob init` writes an example spec"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError([("(file)", f"not valid TOML: {exc}")], source=str(path)) from None
    base = path.resolve().parent

    def resolve(value: object) -> object:
        if isinstance(value, str) and "://" not in value and not Path(value).is_absolute():
            return str(base / value)
        return value

    for key in ("input_manifest", "output"):
        data[key] = resolve(data.get(key))
    quality = data.get("quality")
    if isinstance(quality, dict) and "gold" in quality:
        quality["gold"] = resolve(quality["gold"])
    task = data.get("task")
    if isinstance(task, dict) and isinstance(task.get("instructions"), str):
        instructions = Path(task["instructions"])
        if not instructions.is_absolute() and (base / instructions).is_file():
            task["instructions"] = str(base / instructions)
    return parse_spec(data, source=str(path))


def example_spec_toml(backend: str = "portal") -> str:
    """An example spec for `labeljob init`, valid for the given backend once paths are filled in."""
    extra = {
        "groundtruth": '\n[groundtruth]\nrole_arn = "arn:aws:iam::123456789012:role/GroundTruthExecution"\n'
        'consolidation = "aws"             # aws (ACS-BoundingBox) | labeljob (our Lambda)\n',
        "mturk": '\n[mturk]\nsandbox = true\nreward_usd = "0.10"\nauto_approve_after = "3d"\n'
        "min_approval_rate = 95\nmin_approved_hits = 100\n",
        "portal": '\n# [quality]                         # gold tasks (docs/portal.md, "Gold tasks")\n'
        '# gold = "gold.manifest"            # an augmented manifest of images with known boxes\n'
        "# gold_rate = 0.1\n# gold_min_f1 = 0.5\n# gold_min_seen = 5\n",
    }[backend]
    workforce = {
        "groundtruth": 'type = "private"                     # private | vendor | public\nteam = "my-team"\n',
        # The open MTurk crowd needs no granted pool, so this example launches as it is.
        "mturk": 'type = "public"                      # public | private (workers granted with '
        "`labeljob workforce grant`)\n",
        "portal": 'type = "private"                     # invited workers or marketplace links\n',
    }[backend]
    return f'''# A labeljob job spec. Validate it with `labeljob launch THIS_FILE --dry-run`.
name = "street-objects-001"
backend = "{backend}"                # groundtruth | mturk | portal
labels = ["car", "pedestrian"]
label_attribute = "bbox"
input_manifest = "../../labeljob-workspace/manifests/train.manifest"
output = "../../labeljob-workspace/labeling/"

[task]
title = "Draw a box around every car and pedestrian"
description = "Tight boxes, one per object"
keywords = ["image", "bounding box"]
workers_per_object = 5
time_limit = "5m"
lifetime = "6h"
max_concurrent = 1000

[workforce]
{workforce}
[consolidation]
iou_threshold = 0.5
min_support = 0.5
coordinates = "median"               # median | mean
weighting = "agreement"              # none | agreement
{extra}'''

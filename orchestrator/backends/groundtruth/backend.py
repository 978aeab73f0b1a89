"""SageMaker Ground Truth: validated CreateLabelingJob, polling, stopping, cost, chained and follow-up jobs.

Every limit of docs/groundtruth.md ("Limits") is checked before any call, each problem naming its spec
key; then the whole request is checked against botocore's service model (pattern, max, enum).

Files Ground Truth reads (label categories, the rendered template, a chained job's filtered
manifest, a follow-up job's manifest of unsettled objects) go beside the job record when the
workspace is on S3 (`<workspace>/jobs/<name>/`). With a local workspace Ground Truth could not
read them, so they go to `<output>/<name>/labeljob-inputs/` instead, beside the outputs Ground
Truth writes.
Ground Truth writes its own worker responses and output manifest; `poll` returns no answers and
the finish step reads them from S3.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.aws import client
from orchestrator.backends.groundtruth.arns import (
    LAMBDA_ACCOUNTS,
    TASK_FOR_CHAIN,
    WORKTEAM_ARN,
    lambda_arn,
    private_workteam_arn,
    public_workteam_arn,
)
from orchestrator.backends.groundtruth.chaining import filter_manifest
from orchestrator.backends.groundtruth.client import GroundTruthError, call
from orchestrator.backends.groundtruth.followup import followup_manifest
from orchestrator.errors import BackendError, InputError, SpecError
from orchestrator.jobs import (
    FOLLOWUP_MANIFEST,
    CostEstimate,
    CostLine,
    JobStore,
    LaunchPlan,
    PollResult,
    job_output_prefix,
)
from orchestrator.service_model import validate_request
from orchestrator.spec import NAME_PATTERN, marketplace_warning
from orchestrator.storage import S3Store, bucket_name, is_s3_uri, open_object

if TYPE_CHECKING:
    import boto3

    from orchestrator.jobs import JobRecord, ManifestItem
    from orchestrator.spec import JobSpec
    from orchestrator.storage import ObjectStore

# Public workforce prices per task for bounding boxes (API model, PublicWorkforceTaskPrice).
ALLOWED_PRICES_USD = (0.036, 0.048, 0.060, 0.072, 0.120, 0.240, 0.360, 0.480, 0.600, 0.720, 0.840, 0.960)
ALLOWED_PRICES_USD += (1.080, 1.200)
# Ground Truth's fee per labeled object by monthly volume (objects per account and month), from
# the pricing page and AWS's tutorial ("$0.08 + 5 * $0.036"). Not verified against today's
# prices: `[groundtruth] per_object_fee_usd` overrides the table.
PER_OBJECT_FEE_TIERS: tuple[tuple[int | None, float], ...] = ((50_000, 0.08), (950_000, 0.04), (None, 0.02))

MIN_TASK_SECONDS, MAX_TASK_SECONDS = 30, 28_800
MIN_LIFETIME_SECONDS = 60
MAX_PUBLIC_LIFETIME_SECONDS = 43_200
MAX_LIFETIME_SECONDS = 30 * 86_400
MAX_CONCURRENT, SUPPORT_CONCURRENT = 5000, 1000
MAX_WORKERS = 9
MAX_KEYWORDS, MAX_KEYWORD_CHARS = 5, 30
MAX_DESCRIPTION_CHARS = 255
PII_CLASSIFIER = "FreeOfPersonallyIdentifiableInformation"

KEYWORD = re.compile(r"[A-Za-z0-9]+( [A-Za-z0-9]+)*")
ROLE_ARN = re.compile(r"arn:aws[a-z\-]*:iam::(\d{12}):role/?[a-zA-Z_0-9+=,.@\-_/]+")
LAMBDA_ARN = re.compile(r"arn:aws[a-z\-]*:lambda:[a-z0-9\-]*:[0-9]{12}:function:.+")

LABEL_FILE = "label-categories.json"
TEMPLATE_FILE = "template.liquid.html"
CHAINED_MANIFEST = "input.manifest"
LABEL_DOCUMENT_VERSION = "2018-11-28"

STATUS = {
    "Initializing": "in_progress",
    "InProgress": "in_progress",
    "Stopping": "in_progress",
    "Completed": "completed",
    "Failed": "failed",
    "Stopped": "stopped",
}

# Which spec key a CreateLabelingJob member comes from; the first matching prefix wins.
_REQUEST_KEYS = (
    ("LabelingJobName", "name"),
    ("LabelAttributeName", "label_attribute"),
    ("InputConfig.DataAttributes", "groundtruth.content_classifiers"),
    ("InputConfig", "input_manifest"),
    ("OutputConfig", "output"),
    ("RoleArn", "groundtruth.role_arn"),
    ("LabelCategoryConfigS3Uri", "output"),
    ("HumanTaskConfig.WorkteamArn", "workforce.team"),
    ("HumanTaskConfig.UiConfig", "output"),
    ("HumanTaskConfig.PreHumanTaskLambdaArn", "groundtruth.region"),
    ("HumanTaskConfig.TaskKeywords", "task.keywords"),
    ("HumanTaskConfig.TaskTitle", "task.title"),
    ("HumanTaskConfig.TaskDescription", "task.description"),
    ("HumanTaskConfig.NumberOfHumanWorkersPerDataObject", "task.workers_per_object"),
    ("HumanTaskConfig.TaskTimeLimitInSeconds", "task.time_limit"),
    ("HumanTaskConfig.TaskAvailabilityLifetimeInSeconds", "task.lifetime"),
    ("HumanTaskConfig.MaxConcurrentTaskCount", "task.max_concurrent"),
    ("HumanTaskConfig.AnnotationConsolidationConfig", "groundtruth.consolidation_lambda_arn"),
    ("HumanTaskConfig.PublicWorkforceTaskPrice", "workforce.price_usd"),
)


def price_amount(price_usd: float) -> dict:
    """`{Dollars, Cents, TenthFractionsOfACent}` of a price: 0.036 -> 0/3/6, 1.2 -> 1/20/0."""
    mills = round(price_usd * 1000)
    return {"Dollars": mills // 1000, "Cents": mills % 1000 // 10, "TenthFractionsOfACent": mills % 10}


def spec_key(path: str) -> str:
    """The spec key behind a service-model problem path like `CreateLabelingJobRequest.RoleArn: ...`."""
    member = path.split(":", 1)[0].split(".", 1)[-1]
    return next((key for prefix, key in _REQUEST_KEYS if member.startswith(prefix)), "(request)")


def label_categories(spec: JobSpec) -> bytes:
    """The label category file; `class_id` in the output is the index in this list."""
    document = {"document-version": LABEL_DOCUMENT_VERSION, "labels": [{"label": x} for x in spec.labels]}
    return json.dumps(document, indent=2, ensure_ascii=False).encode()


def adjustment_initial_value(attribute: str) -> str:
    """Ground Truth Liquid drawing the earlier job's boxes (under `attribute`) as the initial value."""
    line = "task.input.manifestLine"
    return (
        f"[{{% for box in {line}.{attribute}.annotations %}}"
        "{% capture class_id %}{{ box.class_id }}{% endcapture %}"
        f"{{% assign label = {line}.{attribute}-metadata.class-map[class_id] %}}"
        '{"label": {{ label | to_json | escape }}, "left": {{ box.left }}, "top": {{ box.top }}, '
        '"width": {{ box.width }}, "height": {{ box.height }}}'
        "{% unless forloop.last %},{% endunless %}{% endfor %}]"
    )


def render_template(spec: JobSpec) -> bytes:
    """The worker task template Ground Truth renders per task; adjustment jobs pre-draw old boxes."""
    from orchestrator.templates import render_task

    html = render_task(spec, target="groundtruth")
    gt = spec.groundtruth
    if gt is not None and gt.chain == "adjust" and gt.chain_attribute:
        # render_task escapes every brace it is given, so the per-task Liquid is added here.
        anchor = "<crowd-bounding-box"
        if html.count(anchor) != 1:
            raise RuntimeError(f"the task template must hold exactly one {anchor} element")
        html = html.replace(
            anchor, f"{anchor}\n    initial-value='{adjustment_initial_value(gt.chain_attribute)}'"
        )
    return html.encode()


def job_buckets(spec: JobSpec) -> list[str]:
    """The buckets of the input manifest and the output: the only ones a job's images may come from."""
    return sorted({bucket_name(uri) for uri in (spec.input_manifest, spec.output) if is_s3_uri(uri)})


def foreign_source_refs(spec: JobSpec, refs: Iterable[str]) -> list[str]:
    """The source-refs outside the job's buckets.

    The execution role is granted the job's buckets (`labeljob iam-policy JOB.toml`), and a
    manifest naming other buckets would have Ground Truth show workers whatever that role can read.
    """
    buckets = set(job_buckets(spec))
    return [ref for ref in refs if not (is_s3_uri(ref) and bucket_name(ref) in buckets)]


class GroundTruthBackend:
    """Bounding-box labeling jobs on SageMaker Ground Truth."""

    name = "groundtruth"

    def __init__(self, boto3_session: boto3.Session | None = None, workspace: ObjectStore | None = None):
        self.session = boto3_session
        self.workspace = workspace
        self._clients: dict[str, object] = {}

    # ------------------------------------------------------------------------------ helpers

    def region(self, spec: JobSpec) -> str | None:
        """The job's region: `[groundtruth] region`, else the session's."""
        if spec.groundtruth is not None and spec.groundtruth.region:
            return spec.groundtruth.region
        if self.session is not None:
            return self.session.region_name
        import boto3

        return boto3.Session().region_name

    def sagemaker(self, spec: JobSpec):
        """The SageMaker client of the job's region."""
        region = self.region(spec)
        if region not in self._clients:
            self._clients[region] = client("sagemaker", self.session, region_name=region)
        return self._clients[region]

    def input_uri(self, spec: JobSpec, filename: str) -> str:
        """Where a file Ground Truth reads for this job goes (see the module docstring)."""
        if isinstance(self.workspace, S3Store):
            return self.workspace.uri(JobStore.key(spec.name, filename))
        return job_output_prefix(spec) + "labeljob-inputs/" + filename

    def _put_input(self, spec: JobSpec, filename: str, data: bytes, content_type: str) -> str:
        if isinstance(self.workspace, S3Store):
            return JobStore(self.workspace).put_file(spec.name, filename, data, content_type)
        uri = self.input_uri(spec, filename)
        store, key = open_object(uri, self.session)
        store.put(key, data, content_type)
        return uri

    def _manifest_uri(self, spec: JobSpec) -> str:
        gt = spec.groundtruth
        written = gt is not None and (gt.chain is not None or gt.more_from is not None)
        return self.input_uri(spec, CHAINED_MANIFEST) if written else spec.input_manifest

    def _workteam_arn(self, spec: JobSpec, region: str) -> str:
        team = spec.workforce.team or ""
        if spec.workforce.type == "public":
            return team or public_workteam_arn(region)
        if team.startswith("arn:"):
            return team
        role = ROLE_ARN.fullmatch(spec.groundtruth.role_arn if spec.groundtruth else "")
        # An invalid role is reported under its own key; a placeholder keeps this ARN well formed.
        account = role.group(1) if role else "000000000000"
        return private_workteam_arn(region, account, team)

    # ----------------------------------------------------------------------------- protocol

    def validate(self, spec: JobSpec) -> list[tuple[str, str]]:
        """Every Ground Truth rule the spec breaks, then every service-model violation of the request."""
        problems = self._rule_problems(spec)
        if spec.groundtruth is None:
            return problems
        seen = {key for key, _ in problems}
        for problem in validate_request("sagemaker", "CreateLabelingJob", self.request(spec)):
            key = spec_key(problem)
            if key not in seen:
                problems.append((key, f"Ground Truth would reject {problem}"))
                seen.add(key)
        return problems

    def _rule_problems(self, spec: JobSpec) -> list[tuple[str, str]]:
        p: list[tuple[str, str]] = []
        task, workforce, gt = spec.task, spec.workforce, spec.groundtruth
        if spec.backend != "groundtruth":
            p.append(("backend", f"is {spec.backend!r}; the Ground Truth backend needs 'groundtruth'"))
        if gt is None:
            p.append(("groundtruth", "missing: add a [groundtruth] table with role_arn"))
        for key in ("input_manifest", "output"):
            if not is_s3_uri(getattr(spec, key)):
                p.append((key, "must be an s3:// URI: Ground Truth reads and writes only S3"))
        region = self.region(spec)
        if region not in LAMBDA_ACCOUNTS:
            source = "[groundtruth] region" if gt is not None and gt.region else "--region / AWS_REGION"
            p.append(
                (
                    "groundtruth.region",
                    f"{region or 'no region'} (from {source}) has no Ground Truth bounding-box Lambdas; "
                    f"use one of {', '.join(LAMBDA_ACCOUNTS)}",
                )
            )
        if len(task.keywords) > MAX_KEYWORDS:
            p.append(("task.keywords", f"give at most {MAX_KEYWORDS} keywords, not {len(task.keywords)}"))
        bad = [k for k in task.keywords if len(k) > MAX_KEYWORD_CHARS or not KEYWORD.fullmatch(k)]
        if bad:
            p.append(
                (
                    "task.keywords",
                    f"{', '.join(map(repr, bad))}: each keyword is 1-{MAX_KEYWORD_CHARS} letters and "
                    "digits in words separated by single spaces (no hyphens or punctuation)",
                )
            )
        if len(task.description) > MAX_DESCRIPTION_CHARS:
            p.append(
                ("task.description", f"{len(task.description)} characters; at most {MAX_DESCRIPTION_CHARS}")
            )
        if not 1 <= task.workers_per_object <= MAX_WORKERS:
            p.append(("task.workers_per_object", f"{task.workers_per_object}: must be 1 to {MAX_WORKERS}"))
        adaptive = task.adaptive
        if adaptive is not None and not (gt is not None and gt.more_from):
            # Every object gets workers_per_object answers; a follow-up job adds more where the rule asks.
            assert adaptive.max_workers is not None  # the spec fills it in
            if not adaptive.min_workers <= task.workers_per_object < adaptive.max_workers:
                p.append(
                    (
                        "task.workers_per_object",
                        f"{task.workers_per_object}: with [task.adaptive] a Ground Truth job asks this many "
                        f"workers per object, from adaptive.min_workers ({adaptive.min_workers}) to below "
                        f"adaptive.max_workers ({adaptive.max_workers}), and `launch --more-from` the rest",
                    )
                )
        if not MIN_TASK_SECONDS <= task.time_limit <= MAX_TASK_SECONDS:
            p.append(
                (
                    "task.time_limit",
                    f"{task.time_limit}s: must be {MIN_TASK_SECONDS}s to {MAX_TASK_SECONDS}s (8h)",
                )
            )
        max_lifetime = MAX_PUBLIC_LIFETIME_SECONDS if workforce.type == "public" else MAX_LIFETIME_SECONDS
        if not MIN_LIFETIME_SECONDS <= task.lifetime <= max_lifetime:
            limit = "12h for the public workforce" if workforce.type == "public" else "30 days"
            p.append(("task.lifetime", f"{task.lifetime}s: must be 60s to {limit}"))
        if not 1 <= task.max_concurrent <= MAX_CONCURRENT:
            p.append(("task.max_concurrent", f"{task.max_concurrent}: must be 1 to {MAX_CONCURRENT}"))
        if task.instructions is not None and not Path(task.instructions).is_file():
            p.append(("task.instructions", f"file not found: {task.instructions}"))
        p += self._workforce_problems(spec)
        if gt is not None:
            p += _groundtruth_problems(spec)
        return p

    def _workforce_problems(self, spec: JobSpec) -> list[tuple[str, str]]:
        p: list[tuple[str, str]] = []
        workforce, gt = spec.workforce, spec.groundtruth
        team = workforce.team
        if workforce.type == "public":
            price = workforce.price_usd
            if price is None or not any(abs(price - allowed) < 1e-9 for allowed in ALLOWED_PRICES_USD):
                p.append(
                    (
                        "workforce.price_usd",
                        f"{price}: the public workforce needs one of "
                        + ", ".join(f"{x:.3f}" for x in ALLOWED_PRICES_USD),
                    )
                )
            if gt is not None and PII_CLASSIFIER not in gt.content_classifiers:
                p.append(
                    (
                        "groundtruth.content_classifiers",
                        f"the public workforce needs {PII_CLASSIFIER!r} (the job fails without it); "
                        "never send images with personal data to the public crowd",
                    )
                )
            region = self.region(spec)
            if team and not (region in LAMBDA_ACCOUNTS and team == public_workteam_arn(region)):
                p.append(("workforce.team", "leave it out for the public workforce (its ARN is built in)"))
            return p
        if workforce.price_usd is not None:
            p.append(
                (
                    "workforce.price_usd",
                    f"only for the public workforce; a {workforce.type} team is not paid through it",
                )
            )
        if not team:
            p.append(("workforce.team", f"a {workforce.type} workforce needs a work team name or ARN"))
        elif team.startswith("arn:"):
            match = WORKTEAM_ARN.fullmatch(team)
            kind = "private-crowd" if workforce.type == "private" else "vendor-crowd"
            if not match or not match.group(3).startswith(kind + "/"):
                p.append(("workforce.team", f"{team!r} is not a {kind} work team ARN"))
            elif match.group(1) != self.region(spec):
                p.append(
                    ("workforce.team", f"the team is in {match.group(1)}, the job in {self.region(spec)}")
                )
        elif workforce.type == "vendor":
            p.append(
                ("workforce.team", "a vendor team is given by its ARN (from the AWS Marketplace listing)")
            )
        elif not NAME_PATTERN.fullmatch(team):
            p.append(("workforce.team", f"{team!r}: 1-63 letters, digits and hyphens"))
        return p

    def request(self, spec: JobSpec) -> dict:
        """The exact CreateLabelingJob parameters for `spec`; makes no call."""
        gt, task = spec.groundtruth, spec.task
        if gt is None:
            raise SpecError([("groundtruth", "missing: add a [groundtruth] table with role_arn")])
        region = self.region(spec) or ""
        # An unknown region is reported by validate; the table's first keeps the ARNs well formed.
        arn_region = region if region in LAMBDA_ACCOUNTS else next(iter(LAMBDA_ACCOUNTS))
        kind = TASK_FOR_CHAIN[gt.chain]
        if gt.consolidation == "labeljob" and gt.consolidation_lambda_arn:
            consolidation = gt.consolidation_lambda_arn
        else:
            consolidation = lambda_arn(arn_region, "ACS", kind)
        input_config: dict = {"DataSource": {"S3DataSource": {"ManifestS3Uri": self._manifest_uri(spec)}}}
        if gt.content_classifiers:
            input_config["DataAttributes"] = {"ContentClassifiers": list(gt.content_classifiers)}
        human: dict = {
            "WorkteamArn": self._workteam_arn(spec, region),
            "UiConfig": {"UiTemplateS3Uri": self.input_uri(spec, TEMPLATE_FILE)},
            "PreHumanTaskLambdaArn": lambda_arn(arn_region, "PRE", kind),
            "TaskTitle": task.title,
            "TaskDescription": task.description,
            "NumberOfHumanWorkersPerDataObject": task.workers_per_object,
            "TaskTimeLimitInSeconds": task.time_limit,
            "TaskAvailabilityLifetimeInSeconds": task.lifetime,
            "MaxConcurrentTaskCount": task.max_concurrent,
            "AnnotationConsolidationConfig": {"AnnotationConsolidationLambdaArn": consolidation},
        }
        if task.keywords:
            human["TaskKeywords"] = list(task.keywords)
        if spec.workforce.type == "public" and spec.workforce.price_usd is not None:
            human["PublicWorkforceTaskPrice"] = {"AmountInUsd": price_amount(spec.workforce.price_usd)}
        return {
            "LabelingJobName": spec.name,
            "LabelAttributeName": spec.label_attribute,
            "InputConfig": input_config,
            "OutputConfig": {"S3OutputPath": spec.output},
            "RoleArn": gt.role_arn,
            "LabelCategoryConfigS3Uri": self.input_uri(spec, LABEL_FILE),
            "HumanTaskConfig": human,
        }

    def estimate(self, spec: JobSpec, n_objects: int) -> CostEstimate:
        """Public worker pay (objects x workers x price) plus Ground Truth's per-object fee."""
        lines: list[CostLine] = []
        notes: list[str] = []
        workforce, workers = spec.workforce, spec.task.workers_per_object
        if workforce.type == "public" and workforce.price_usd is not None:
            lines.append(
                CostLine(
                    f"public workers: {n_objects} objects x {workers} workers",
                    n_objects * workers,
                    workforce.price_usd,
                )
            )
        elif workforce.type == "vendor":
            notes.append("vendor pay is set by the vendor's AWS Marketplace listing and is not included")
        else:
            notes.append("private workers are not paid through Ground Truth")
        fee = spec.groundtruth.per_object_fee_usd if spec.groundtruth else None
        if fee is not None:
            lines.append(
                CostLine(
                    "Ground Truth fee per labeled object ([groundtruth] per_object_fee_usd)", n_objects, fee
                )
            )
            return CostEstimate(lines, notes)
        first, remaining = 1, n_objects
        for limit, unit in PER_OBJECT_FEE_TIERS:
            count = remaining if limit is None else min(remaining, limit)
            if count:
                lines.append(CostLine(f"Ground Truth fee, objects {first}-{first + count - 1}", count, unit))
            first, remaining = first + count, remaining - count
        notes.append(
            "Ground Truth's fee tiers count objects per account and month, and new accounts get a free "
            "tier; the table is not verified against today's prices: set [groundtruth] per_object_fee_usd "
            "to override it"
        )
        return CostEstimate(lines, notes)

    def plan(self, spec: JobSpec, items: list[ManifestItem] | None, record: JobRecord) -> LaunchPlan:
        """The files launch writes and the CreateLabelingJob request; no remote call."""
        request = self.request(spec)
        requests: list[dict] = []
        gt = spec.groundtruth
        if gt is not None and gt.chain is not None:
            requests.append(
                {
                    "operation": "s3:PutObject",
                    "uri": request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"],
                    "body": f"{spec.input_manifest} without the classes missing from labels",
                }
            )
        if gt is not None and gt.more_from is not None:
            requests.append(
                {
                    "operation": "s3:PutObject",
                    "uri": request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"],
                    "body": [item.line for item in items or ()],
                }
            )
        requests += [
            {
                "operation": "s3:PutObject",
                "uri": request["LabelCategoryConfigS3Uri"],
                "body": json.loads(label_categories(spec)),
            },
            {
                "operation": "s3:PutObject",
                "uri": request["HumanTaskConfig"]["UiConfig"]["UiTemplateS3Uri"],
                "body": render_template(spec).decode(),
            },
            {"operation": "sagemaker:CreateLabelingJob", "region": self.region(spec), "params": request},
        ]
        if items is None:
            cost = self.estimate(spec, 1)
            cost.notes.append("cost of ONE object: a dry run does not read an s3:// manifest")
        else:
            cost = self.estimate(spec, len(items))
        return LaunchPlan(requests, cost, self._warnings(spec))

    @staticmethod
    def _warnings(spec: JobSpec) -> list[str]:
        warnings = []
        if spec.task.max_concurrent > SUPPORT_CONCURRENT:
            warnings.append(
                f"task.max_concurrent {spec.task.max_concurrent} > {SUPPORT_CONCURRENT} needs a quota "
                "increase from AWS Support"
            )
        if warning := marketplace_warning(spec):
            warnings.append(warning)
        return warnings

    def check_items(self, spec: JobSpec, items: list[ManifestItem]) -> None:
        """The final request passes the service model and every source-ref is in the job's buckets."""
        problems = validate_request("sagemaker", "CreateLabelingJob", self.request(spec))
        if problems:
            raise SpecError([(spec_key(x), x) for x in problems], source=f"job spec {spec.name}")
        foreign = foreign_source_refs(spec, (item.source_ref for item in items))
        if foreign:
            raise InputError(
                f"{spec.input_manifest}: {len(foreign)} source-ref(s) outside the job's bucket(s) "
                f"{', '.join(job_buckets(spec))}, first {foreign[0]}",
                hint="Ground Truth jobs read images only from the bucket of input_manifest or output: "
                "copy the images there and rebuild the manifest (`labeljob manifest build`)",
            )

    def launch(self, spec: JobSpec, items: list[ManifestItem], record: JobRecord) -> dict:
        """Write the input files and create the job; a job this spec created before is adopted."""
        request = self.request(spec)
        if spec.groundtruth is not None and spec.groundtruth.chain is not None:
            store, key = open_object(spec.input_manifest, self.session)
            filtered = filter_manifest(store.get(key), spec.groundtruth.chain_attribute or "", spec.labels)
            self._put_input(spec, CHAINED_MANIFEST, filtered, "application/x-ndjson")
        state = {}
        if spec.groundtruth is not None and spec.groundtruth.more_from is not None:
            uri = self._put_input(spec, CHAINED_MANIFEST, followup_manifest(items), "application/x-ndjson")
            state[FOLLOWUP_MANIFEST] = uri
        self._put_input(spec, LABEL_FILE, label_categories(spec), "application/json")
        self._put_input(spec, TEMPLATE_FILE, render_template(spec), "text/html")
        sm = self.sagemaker(spec)
        try:
            arn = call(sm, "CreateLabelingJob", **request)["LabelingJobArn"]
        except GroundTruthError as exc:
            if exc.code != "ResourceInUse":
                raise
            arn = self._adopt(sm, request)
        return {**state, "labeling_job_arn": arn, "region": self.region(spec)}

    @staticmethod
    def _adopt(sm, request: dict) -> str:
        """The ARN of the existing job of this name, if an earlier launch of this spec created it."""
        name = request["LabelingJobName"]
        existing = call(sm, "DescribeLabelingJob", LabelingJobName=name)

        def source(d: dict) -> str:
            return d["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]

        ours = (
            existing.get("LabelingJobName") == name
            and existing.get("LabelAttributeName") == request["LabelAttributeName"]
            and existing.get("LabelCategoryConfigS3Uri") == request["LabelCategoryConfigS3Uri"]
            and existing.get("OutputConfig", {}).get("S3OutputPath")
            == request["OutputConfig"]["S3OutputPath"]
            and source(existing) == source(request)
        )
        if not ours:
            raise BackendError(
                f"a Ground Truth job named {existing.get('LabelingJobName', name)!r} already exists in this "
                "account and region and was not launched from this spec",
                hint="job names are unique case-insensitively and can never be reused: choose another name",
            )
        return existing["LabelingJobArn"]

    def poll(self, spec: JobSpec, record: JobRecord) -> PollResult:
        """Status and label counters from DescribeLabelingJob."""
        try:
            described = call(self.sagemaker(spec), "DescribeLabelingJob", LabelingJobName=spec.name)
        except GroundTruthError as exc:
            if exc.code != "ResourceNotFound":
                raise
            raise BackendError(
                f"Ground Truth has no job named {spec.name} in {self.region(spec)}",
                hint="launch it with `labeljob launch`, or check --region",
            ) from None
        counters = described.get("LabelCounters", {})
        labeled = counters.get("TotalLabeled", 0)
        failed = counters.get("FailedNonRetryableError", 0)
        total = labeled + failed + counters.get("Unlabeled", 0)
        state = {
            "labeling_job_arn": described["LabelingJobArn"],
            "groundtruth_status": described["LabelingJobStatus"],
        }
        output = described.get("LabelingJobOutput", {}).get("OutputDatasetS3Uri")
        if output:
            state["output_manifest_uri"] = output
        return PollResult(
            status=STATUS[described["LabelingJobStatus"]],
            total=total or record.counters.total,
            labeled=labeled,
            failed=failed,
            failure_reason=described.get("FailureReason"),
            backend_state=state,
        )

    def stop(self, spec: JobSpec, record: JobRecord) -> None:
        """StopLabelingJob; a job that has already ended or is stopping is left as it is."""
        sm = self.sagemaker(spec)
        try:
            call(sm, "StopLabelingJob", LabelingJobName=spec.name)
        except GroundTruthError:
            status = call(sm, "DescribeLabelingJob", LabelingJobName=spec.name)["LabelingJobStatus"]
            if status not in ("Stopping", "Stopped", "Completed", "Failed"):
                raise


def _groundtruth_problems(spec: JobSpec) -> list[tuple[str, str]]:
    p: list[tuple[str, str]] = []
    gt = spec.groundtruth
    assert gt is not None
    if not ROLE_ARN.fullmatch(gt.role_arn):
        p.append(
            (
                "groundtruth.role_arn",
                f"{gt.role_arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
            )
        )
    if gt.consolidation == "labeljob":
        if not gt.consolidation_lambda_arn:
            p.append(
                (
                    "groundtruth.consolidation_lambda_arn",
                    "consolidation = 'labeljob' needs the ARN of the deployed consolidation Lambda",
                )
            )
        elif not LAMBDA_ARN.fullmatch(gt.consolidation_lambda_arn):
            p.append(
                (
                    "groundtruth.consolidation_lambda_arn",
                    f"{gt.consolidation_lambda_arn!r} is not a Lambda ARN",
                )
            )
    elif gt.consolidation_lambda_arn:
        p.append(("groundtruth.consolidation_lambda_arn", "only used with consolidation = 'labeljob'"))
    if gt.more_from is not None and gt.chain is not None:
        p.append(("groundtruth.more_from", "a follow-up job is not also a chained job"))
    if gt.chain is not None:
        if not gt.chain_attribute:
            p.append(("groundtruth.chain_attribute", "a chained job needs the earlier job's label attribute"))
        elif gt.chain_attribute == spec.label_attribute:
            p.append(
                (
                    "label_attribute",
                    f"must differ from the earlier job's {gt.chain_attribute!r}: a chained job writes its "
                    "labels under a new attribute",
                )
            )
        if gt.chain == "verify":
            p.append(
                (
                    "groundtruth.chain",
                    "verification jobs need a verification task page (crowd-image-classifier with an "
                    "overlay), which labeljob's templates do not have yet; use an adjustment job",
                )
            )
    return p

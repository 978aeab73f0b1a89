"""What a training job reads: a labeled manifest (a job's output or a file), its train and validation
channels, and the preflight findings on them (docs/training.md).

A finding is `(name, status, detail, hint)` with status `ok` or `fail`; `doctor` turns them into its
checks, so `labeljob train` and `labeljob doctor` judge a dataset the same way.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.errors import InputError, LabeljobError, NotFound
from orchestrator.manifest import MIN_IMAGES_PER_LABEL, MIN_LABEL_BALANCE, assign_split, read_manifest
from orchestrator.outputs import detect_attr
from orchestrator.storage import is_s3_uri, open_object

if TYPE_CHECKING:
    from orchestrator.jobs import JobRecord, JobStore

Finding = tuple[str, str, str, str | None]

# Lines without a `split` key are held out for validation by a hash of their source-ref.
DEFAULT_SPLIT = (("train", 0.9), ("validation", 0.1))


@dataclass(frozen=True)
class TrainingSource:
    """Where the labeled lines come from: a finished job's output manifest, or a manifest file."""

    name: str
    manifest: str
    label_attribute: str | None = None
    classes: list[str] | None = None
    default_output: str | None = None
    record: JobRecord | None = None


@dataclass
class TrainingData:
    """The lines of each channel, the label attribute, and the classes (index = class_id)."""

    source: TrainingSource
    attribute: str
    classes: list[str]
    channels: dict[str, list[dict]]
    unreadable: list[str] = field(default_factory=list)

    @property
    def max_boxes(self) -> int:
        return max(
            (len(_annotations(line, self.attribute)) for lines in self.channels.values() for line in lines),
            default=0,
        )

    def images_per_class(self, channel: str = "train") -> Counter[str]:
        counts: Counter[str] = Counter({name: 0 for name in self.classes})
        for line in self.channels[channel]:
            ids = {box.get("class_id") for box in _annotations(line, self.attribute)}
            counts.update(self._class_name(i) for i in ids)
        return counts

    def _class_name(self, class_id: object) -> str:
        if isinstance(class_id, int) and 0 <= class_id < len(self.classes):
            return self.classes[class_id]
        return f"class_id {class_id}"

    def findings(self) -> list[Finding]:
        """The dataset's preflight: readable, attribute on every line, S3 images, counts and balance."""
        return [
            self._readable(),
            self._attribute_everywhere(),
            self._images_on_s3(),
            self._per_class(),
            self._balance(),
        ]

    def _readable(self) -> Finding:
        if self.unreadable:
            more = f" (+{len(self.unreadable) - 1} more)" if len(self.unreadable) > 1 else ""
            return ("manifests", "fail", self.unreadable[0] + more, "fix or rebuild the manifest")
        sizes = ", ".join(f"{len(lines)} {name}" for name, lines in self.channels.items())
        empty = [name for name, lines in self.channels.items() if not lines]
        if empty:
            return (
                "manifests",
                "fail",
                f"{sizes}: the {' and '.join(empty)} channel is empty",
                'pass --validation MANIFEST, or mark lines with "split": "validation"',
            )
        return ("manifests", "ok", f"{sizes} lines read from {self.source.manifest}", None)

    def _attribute_everywhere(self) -> Finding:
        name = f"label attribute {self.attribute}"
        missing = [
            f"{channel} line {number}"
            for channel, lines in self.channels.items()
            for number, line in enumerate(lines, 1)
            if not _labeled(line, self.attribute)
        ]
        if missing:
            detail = f"missing (or without -metadata.class-map) on {len(missing)} line(s), first {missing[0]}"
            return (name, "fail", detail, "train on the job's output manifest, or pass --label-attribute")
        return (name, "ok", "on every line", None)

    def _images_on_s3(self) -> Finding:
        local = [
            line["source-ref"]
            for lines in self.channels.values()
            for line in lines
            if not is_s3_uri(str(line.get("source-ref", "")))
        ]
        if local:
            return (
                "images",
                "fail",
                f"{len(local)} source-ref(s) not on S3, first {local[0]}",
                "SageMaker reads images only from S3: upload them and rebuild the manifest",
            )
        return ("images", "ok", "every source-ref is on S3", None)

    def _per_class(self) -> Finding:
        counts = self.images_per_class()
        name = f"images per class (at least {MIN_IMAGES_PER_LABEL})"
        few = [f"{label} {n}" for label, n in counts.items() if n < MIN_IMAGES_PER_LABEL]
        if few:
            return (
                name,
                "fail",
                f"under {MIN_IMAGES_PER_LABEL} train images: {', '.join(few)}",
                _MORE_IMAGES,
            )
        return (name, "ok", ", ".join(f"{label} {n}" for label, n in counts.items()), None)

    def _balance(self) -> Finding:
        counts = self.images_per_class()
        name = "class balance (within 1:2)"
        if not counts or not max(counts.values()):
            return (name, "fail", "no class has a box", _MORE_IMAGES)
        (common, most), (rare, least) = counts.most_common()[0], counts.most_common()[-1]
        ratio = least / most
        detail = f"{rare} {least} : {common} {most} train images ({ratio:.2f})"
        if ratio < MIN_LABEL_BALANCE:
            return (name, "fail", detail, _MORE_IMAGES)
        return (name, "ok", detail, None)


_MORE_IMAGES = "label more images of the rare classes (a chained job on a new manifest), or drop a class"


def _annotations(line: dict, attribute: str) -> list[dict]:
    value = line.get(attribute)
    boxes = value.get("annotations") if isinstance(value, dict) else None
    return [box for box in boxes if isinstance(box, dict)] if isinstance(boxes, list) else []


def _labeled(line: dict, attribute: str) -> bool:
    metadata = line.get(f"{attribute}-metadata")
    value = line.get(attribute)
    return (
        isinstance(value, dict)
        and isinstance(value.get("annotations"), list)
        and isinstance(metadata, dict)
        and isinstance(metadata.get("class-map"), dict)
    )


def resolve_source(source: str, jobs: JobStore) -> TrainingSource:
    """A job of the workspace by name (its output manifest, label attribute and labels), else a manifest."""
    record = jobs.get(source) if re.fullmatch(r"[A-Za-z0-9-]+", source) else None
    if record is None:
        stem = posixpath.basename(source.rstrip("/")).rsplit(".", 1)[0]
        folder = source.rsplit("/", 1)[0] + "/training/" if is_s3_uri(source) else None
        return TrainingSource(
            re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-") or "manifest", source, None, None, folder
        )
    manifest = record.outputs.get("manifest")
    if not manifest:
        raise InputError(
            f"job {source} has no output manifest yet ({record.status})",
            hint=f"`labeljob wait {source}` writes it when the job ends",
        )
    spec = record.job_spec
    output = spec.output.rstrip("/") + f"/{spec.name}/training/" if is_s3_uri(spec.output) else None
    return TrainingSource(spec.name, manifest, spec.label_attribute, list(spec.labels), output, record)


def read_lines(uri: str, boto3_session, unreadable: list[str]) -> list[dict]:
    """The manifest's well-formed lines; what could not be read is appended to `unreadable`."""
    errors: list[InputError] = []
    try:
        lines = [row for _, row in read_manifest(*open_object(uri, boto3_session), errors=errors)]
    except LabeljobError as exc:  # storage errors name the object already
        unreadable.append(exc.message)
        return []
    unreadable += [error.message for error in errors]
    return lines


def read_source(uri: str, boto3_session, unreadable: list[str]) -> list[dict]:
    """`read_lines` of the manifest everything is derived from: InputError when it has no line at all."""
    lines = read_lines(uri, boto3_session, unreadable)
    if not lines:
        raise InputError(
            unreadable[0] if unreadable else f"{uri}: the manifest has no lines",
            hint="`labeljob manifest check` lists every problem",
        )
    return lines


def load_training_data(
    source: TrainingSource,
    *,
    validation: str | None = None,
    label_attribute: str | None = None,
    boto3_session=None,
    seed: int = 0,
) -> TrainingData:
    """Read the manifests and split them into channels; problems become findings, never exceptions.

    Without `validation`, a line's `split` key places it (`test` lines are left out), else a hash of
    its source-ref (DEFAULT_SPLIT), so the same manifest always splits the same way.
    """
    unreadable: list[str] = []
    lines = read_source(source.manifest, boto3_session, unreadable)
    if validation is not None:
        channels = {"train": lines, "validation": read_lines(validation, boto3_session, unreadable)}
    else:
        channels = {"train": [], "validation": []}
        for line in lines:
            split = line.get("split") or assign_split(str(line.get("source-ref", "")), DEFAULT_SPLIT, seed)
            # A held-out test split stays out of both channels.
            if split in channels:
                channels[split].append(line)
    attribute = label_attribute or source.label_attribute or detect_attribute(lines)
    classes = source.classes or class_names(lines, attribute)
    return TrainingData(source, attribute, classes, channels, unreadable)


def detect_attribute(lines: list[dict]) -> str:
    """The bounding-box label attribute of the first line that has one."""
    found = next((attr for line in lines if (attr := detect_attr(line))), None)
    if found is None:
        raise NotFound(
            "no line has a bounding-box label attribute (a key whose -metadata type is "
            "groundtruth/object-detection)",
            hint="pass --label-attribute NAME",
        )
    return found


def class_names(lines: list[dict], attribute: str) -> list[str]:
    """Class names by class_id from every line's class-map; an id no line names is `class_<id>`."""
    names: dict[int, str] = {}
    for line in lines:
        class_map = (line.get(f"{attribute}-metadata") or {}).get("class-map")
        if isinstance(class_map, dict):
            names.update({int(k): str(v) for k, v in class_map.items() if str(k).isdigit()})
    return [names.get(i, f"class_{i}") for i in range(max(names, default=-1) + 1)]

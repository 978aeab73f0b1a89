"""The augmented manifest in Ground Truth's bounding-box format, and the per-worker report.

One output line is the input line, untouched, plus two keys:

    "<attr>":          {"image_size": [{"width", "height", "depth"}],
                        "annotations": [{"class_id", "left", "top", "width", "height"}]}
    "<attr>-metadata": {"objects": [{"confidence"}], "class-map": {"0": "car"},
                        "type": "groundtruth/object-detection", "human-annotated": "yes",
                        "creation-date": "2026-11-23T12:00:00.000000", "job-name": "labeling-job/<name>"}

Pixels are integers, top-left origin; `class_id` is the index in the job's label list;
`class-map` holds the used classes only; `objects[i]` belongs to `annotations[i]`. The models
below check this on write and on read. Reading also accepts real Ground Truth output: a
`job-name` without `labeling-job/` and extra metadata keys (`adjustment-status`, ...).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import InputError
from orchestrator.storage import ObjectStore

if TYPE_CHECKING:
    from orchestrator.consolidation import GoldScore, ObjectResult, WorkerQuality

OBJECT_DETECTION = "groundtruth/object-detection"
JOB_NAME_PREFIX = "labeling-job/"
# Ground Truth writes depth 3 for every image; we never open the image, so we do the same.
IMAGE_DEPTH = 3
# Ground Truth reports confidences with two decimals ("0.00 with one worker").
CONFIDENCE_DIGITS = 2


class ImageSize(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int = Field(ge=0)
    height: int = Field(ge=0)
    depth: int = Field(IMAGE_DEPTH, ge=1)


class Annotation(BaseModel):
    """One box: integer pixels, top-left origin."""

    model_config = ConfigDict(extra="forbid")

    class_id: int = Field(ge=0)
    left: int
    top: int
    width: int = Field(ge=0)
    height: int = Field(ge=0)


class BoundingBoxLabel(BaseModel):
    """The value under `<attr>`. `image_size` is empty when no worker reported the image's size."""

    model_config = ConfigDict(extra="forbid")

    image_size: list[ImageSize] = Field(max_length=1)
    annotations: list[Annotation]


class ObjectConfidence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    confidence: float = Field(ge=0, le=1)


class BoundingBoxMetadata(BaseModel):
    """The value under `<attr>-metadata`; open, because Ground Truth adds keys to it."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    objects: list[ObjectConfidence]
    class_map: dict[str, str] = Field(alias="class-map")
    type: Literal["groundtruth/object-detection"]
    human_annotated: Literal["yes", "no"] = Field(alias="human-annotated")
    creation_date: str = Field(alias="creation-date")
    job_name: str = Field(alias="job-name")

    @property
    def job(self) -> str:
        """The job name without Ground Truth's `labeling-job/` prefix."""
        return self.job_name.removeprefix(JOB_NAME_PREFIX)


class AugmentedLine(BaseModel):
    """One output manifest line: the pass-through input keys, the label and its metadata."""

    model_config = ConfigDict(extra="forbid")

    attr: str
    source_ref: str
    label: BoundingBoxLabel
    metadata: BoundingBoxMetadata
    other: dict = Field(default_factory=dict, description="input keys other than source-ref, in order")

    @model_validator(mode="after")
    def _consistent(self) -> AugmentedLine:
        if len(self.metadata.objects) != len(self.label.annotations):
            raise ValueError(
                f"{len(self.label.annotations)} annotations but {len(self.metadata.objects)} "
                "objects in the metadata"
            )
        missing = sorted({a.class_id for a in self.label.annotations} - set(self._class_ids()))
        if missing:
            raise ValueError(f"class_id {missing[0]} is not in the class-map")
        return self

    def _class_ids(self) -> list[int]:
        try:
            return [int(key) for key in self.metadata.class_map]
        except ValueError:
            raise ValueError('class-map keys must be class ids like "0"') from None

    @classmethod
    def from_json(cls, line: Mapping, attr: str) -> AugmentedLine:
        """Validate a parsed JSON line; ValidationError or ValueError says what is wrong."""
        if "source-ref" not in line:
            raise ValueError("no source-ref")
        if attr not in line or f"{attr}-metadata" not in line:
            raise ValueError(f"no {attr!r} and {attr + '-metadata'!r} keys")
        other = {k: v for k, v in line.items() if k not in ("source-ref", attr, f"{attr}-metadata")}
        return cls(
            attr=attr,
            source_ref=line["source-ref"],
            label=line[attr],
            metadata=line[f"{attr}-metadata"],
            other=other,
        )

    def to_json(self) -> dict:
        """The line as Ground Truth writes it: source-ref first, input keys, then the label."""
        return {
            "source-ref": self.source_ref,
            **self.other,
            self.attr: self.label.model_dump(mode="json"),
            f"{self.attr}-metadata": self.metadata.model_dump(mode="json", by_alias=True),
        }

    def class_name(self, class_id: int) -> str:
        return self.metadata.class_map[str(class_id)]

    def boxes(self) -> list[dict]:
        """Each box with its label's name and its confidence: label, left, top, width, height, confidence."""
        return [
            {
                "label": self.class_name(a.class_id),
                "left": a.left,
                "top": a.top,
                "width": a.width,
                "height": a.height,
                "confidence": o.confidence,
            }
            for a, o in zip(self.label.annotations, self.metadata.objects, strict=True)
        ]


def creation_date(when: datetime) -> str:
    """Ground Truth's timestamp: UTC, microseconds, no timezone suffix."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _boxes(
    result: ObjectResult, labels: list[str]
) -> tuple[list[tuple[int, ...]], list[float], list[tuple[int, str]]]:
    """Each box of a result as (class id, left, top, width, height) in whole pixels, its confidence, and
    the class-map as (class id, label) by id.

    Edges are rounded (not width and height), so two boxes that touch still touch.
    """
    boxes, confidences, class_map = [], [], {}
    for box in result.boxes:
        label, x, y = box.label, box.left, box.top
        try:
            class_id = labels.index(label)
        except ValueError:
            raise ValueError(f"label {label!r} is not in the label list {labels}") from None
        left, top = round(x), round(y)
        boxes.append((class_id, left, top, round(x + box.width) - left, round(y + box.height) - top))
        confidences.append(round(box.confidence, CONFIDENCE_DIGITS))
        class_map[class_id] = label
    return boxes, confidences, sorted(class_map.items())


def label_value(result: ObjectResult, labels: list[str]) -> tuple[dict, list[float], dict]:
    """The `<attr>` value of one consolidated object as JSON (`BoundingBoxLabel`'s form), its
    confidences and its class-map.

    Written as plain dicts, not models: each value holds by construction (class ids from `labels`,
    rounding keeps right >= left); tests read every line back through the models.
    """
    boxes, confidences, class_map = _boxes(result, labels)
    keys = ("class_id", "left", "top", "width", "height")
    sizes = []
    if result.image_width is not None and result.image_height is not None:
        sizes.append({"width": result.image_width, "height": result.image_height, "depth": IMAGE_DEPTH})
    annotations = [dict(zip(keys, box, strict=True)) for box in boxes]
    return {"image_size": sizes, "annotations": annotations}, confidences, {str(k): v for k, v in class_map}


def _job_name(job_name: str) -> str:
    return job_name if job_name.startswith(JOB_NAME_PREFIX) else JOB_NAME_PREFIX + job_name


def _other_keys(source_line: Mapping, attr: str) -> dict:
    return {k: v for k, v in source_line.items() if k not in ("source-ref", attr, f"{attr}-metadata")}


def augmented_line(
    source_line: Mapping,
    result: ObjectResult,
    labels: list[str],
    attr: str,
    job_name: str,
    created: datetime | str,
) -> dict:
    """The output manifest line for one object: its input line plus `<attr>` and `<attr>-metadata`.

    An existing `<attr>`/`<attr>-metadata` in the input (a re-consolidated job's own output) is
    replaced; every other input key passes through untouched, in order. `created` may be given as
    its `creation_date` already (it is the same for every line of a job).
    """
    label, confidences, class_map = label_value(result, labels)
    metadata = {
        "objects": [{"confidence": c} for c in confidences],
        "class-map": class_map,
        "type": OBJECT_DETECTION,
        "human-annotated": "yes",
        "creation-date": created if isinstance(created, str) else creation_date(created),
        "job-name": _job_name(job_name),
    }
    return {
        "source-ref": source_line.get("source-ref", result.source_ref),
        **_other_keys(source_line, attr),
        attr: label,
        f"{attr}-metadata": metadata,
    }


def augmented_line_text(
    source_line: Mapping, result: ObjectResult, labels: list[str], attr: str, job_name: str, created: str
) -> str:
    """`augmented_line` as one line of JSON Lines (`dump_lines`' text for it, newline included), written
    directly: half the time of building the dicts and encoding them, for the manifest of every job.
    `tests/test_output.py` holds the two to the same bytes."""
    if attr == "source-ref":  # the label replaces the source-ref in the dict: only the encoder writes that
        return _ENCODE(augmented_line(source_line, result, labels, attr, job_name, created)) + "\n"
    boxes, confidences, class_map = _boxes(result, labels)
    head = [f'{{"source-ref":{_ENCODE(source_line.get("source-ref", result.source_ref))}']
    head += [f"{_STRING(key)}:{_ENCODE(value)}" for key, value in _other_keys(source_line, attr).items()]
    size = ""
    if result.image_width is not None and result.image_height is not None:
        size = _SIZE % (result.image_width, result.image_height, IMAGE_DEPTH)
    annotations = ",".join(_ANNOTATION % box for box in boxes)
    objects = ",".join(_CONFIDENCE % _float(c) for c in confidences)
    classes = ",".join(f'"{k}":{_STRING(v)}' for k, v in class_map)
    return (
        ",".join(head)
        + f',{_STRING(attr)}:{{"image_size":[{size}],"annotations":[{annotations}]}}'
        + f',{_STRING(attr + "-metadata")}:{{"objects":[{objects}],"class-map":{{{classes}}}'
        + f',"type":"{OBJECT_DETECTION}","human-annotated":"yes","creation-date":{_STRING(created)}'
        + f',"job-name":{_STRING(_job_name(job_name))}}}}}\n'
    )


def _float(value: float) -> str:
    """The encoder's text for a number: a finite float's repr (numpy's floats made Python's first)."""
    number = float(value)
    return repr(number) if math.isfinite(number) else _ENCODE(number)


# The pieces `dump_lines`' encoder writes, for `augmented_line_text`.
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
_STRING = json.encoder.encode_basestring  # the encoder's own string writer with ensure_ascii=False
_SIZE = '{"width":%d,"height":%d,"depth":%d}'
_ANNOTATION = '{"class_id":%d,"left":%d,"top":%d,"width":%d,"height":%d}'
_CONFIDENCE = '{"confidence":%s}'


def dump_lines(lines: Iterable[Mapping | str]) -> bytes:
    """JSON Lines, one compact object a line, UTF-8, as Ground Truth writes manifests; a line given as
    text (`augmented_line_text`) is written as it is."""
    # Each line encoded on its own: a job's whole text is never held as a string beside its bytes. A
    # line is a tree, so `_ENCODE` does not search it for cycles.
    return b"".join((line if isinstance(line, str) else _ENCODE(line) + "\n").encode() for line in lines)


def write_augmented_manifest(store: ObjectStore, key: str, lines: Iterable[Mapping | str]) -> str:
    """Write the output manifest (lines as dicts, or as `augmented_line_text`); returns its URI."""
    store.put(key, dump_lines(lines), "application/jsonlines")
    return store.uri(key)


def detection_attrs(line: Mapping) -> list[str]:
    """The line's label attributes whose `-metadata` says `groundtruth/object-detection`, in key order
    (a chained job's latest attribute last)."""
    return [
        key.removesuffix("-metadata")
        for key, value in line.items()
        if key.endswith("-metadata") and isinstance(value, Mapping) and value.get("type") == OBJECT_DETECTION
    ]


def detect_attr(line: Mapping) -> str | None:
    """The first label attribute of a line whose `-metadata` says `groundtruth/object-detection`."""
    return next(iter(detection_attrs(line)), None)


def read_augmented_manifest(
    store: ObjectStore, key: str, attr: str | None = None, errors: list[InputError] | None = None
) -> Iterator[tuple[int, AugmentedLine]]:
    """The valid lines of an augmented manifest with their 1-based line numbers.

    `attr` is detected from the first line that has an object-detection `-metadata` key when not
    given. A bad line raises InputError naming the file and line, or, when `errors` is a list, is
    appended to it and skipped. Blank lines are ignored.
    """
    uri = store.uri(key)
    text = store.get(key).decode("utf-8-sig", errors="replace")
    for line_no, raw in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 is data
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            attr = attr or detect_attr(data)
            if attr is None:
                raise ValueError("no <attr>-metadata key of type groundtruth/object-detection")
            line = AugmentedLine.from_json(data, attr)
        except (ValueError, RecursionError, ValidationError) as exc:
            problem = InputError(f"{uri}:{line_no}: {_describe(exc)}")
            if errors is None:
                raise problem from None
            errors.append(problem)
            continue
        yield line_no, line


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} (column {exc.colno})"
    return str(exc)


# ----------------------------------------------------------------------------- worker report

WORKER_REPORT_COLUMNS = [
    "worker_id",
    "answers",
    "boxes",
    "matched",
    "recall",
    "precision",
    "mean_iou",
    "weight",
    "low_quality",
]


# With gold tasks, each worker's gold score follows (docs/portal.md, "Gold tasks").
GOLD_REPORT_COLUMNS = [
    "gold_tasks",
    "gold_f1",
    "gold_missed",
    "gold_false",
    "gold_mislocated",
    "gold_wrong_label",
]


def workers_report_rows(
    workers: Mapping[str, WorkerQuality], gold: Mapping[str, GoldScore] | None = None
) -> list[dict]:
    """One row per worker, sorted by worker id, floats rounded to 4 digits; gold columns with `gold`
    (empty for a worker who answered no gold task)."""
    rows = []
    for worker_id in sorted(workers):
        row = asdict(workers[worker_id])
        if gold:
            score = gold.get(worker_id)
            values = (
                [score.tasks, score.f1, score.missed, score.false, score.mislocated, score.wrong_label]
                if score
                else [""] * len(GOLD_REPORT_COLUMNS)
            )
            row.update(zip(GOLD_REPORT_COLUMNS, values, strict=True))
        rows.append({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    return rows


def workers_report_csv(rows: Iterable[Mapping]) -> bytes:
    rows = list(rows)
    gold = bool(rows) and "gold_tasks" in rows[0]
    buffer = io.StringIO()
    columns = WORKER_REPORT_COLUMNS + (GOLD_REPORT_COLUMNS if gold else [])
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def write_workers_report(
    store: ObjectStore,
    key: str,
    workers: Mapping[str, WorkerQuality],
    gold: Mapping[str, GoldScore] | None = None,
) -> str:
    """Write the per-worker agreement CSV (with gold scores when given); returns its URI."""
    store.put(key, workers_report_csv(workers_report_rows(workers, gold)), "text/csv")
    return store.uri(key)

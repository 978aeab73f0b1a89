"""Worker answers from every backend, parsed and validated into one model.

Every backend's raw answers become `ObjectAnswers` (Ground Truth's post-annotation payload shape):
one object, the workers who answered it, and each worker's boxes in pixels, top-left origin.

All sources carry the same answer JSON, the value of the `<crowd-bounding-box>` element:

    {"boundingBoxes": [{"label": "car", "left": 10, "top": 20, "width": 30, "height": 40}],
     "inputImageProperties": {"width": 640, "height": 480}}

usually wrapped as `{"<element name>": <that>}`. Bad worker data never raises: each problem is
repaired or dropped and counted in an `AnswerReport` under a stable snake_case code:

| code | what happened |
|---|---|
| `bad_json` | an answer's `content` (or MTurk `FreeText`) is not JSON: answer dropped |
| `not_an_object` | an item, answer or box is not a JSON object (or an empty MTurk array): dropped |
| `missing_worker_id` | an answer without a usable worker id: dropped |
| `missing_content` | an annotation without `annotationData.content`: dropped |
| `missing_object_id` | a payload item without `datasetObjectId`: dropped |
| `missing_source_ref` | a payload item without an image reference: kept with `source_ref=""` |
| `duplicate_object` | a payload lists one `datasetObjectId` twice: annotations merged |
| `missing_boxes_key` | no `boundingBoxes` (missing or null): kept as an empty answer, as Ground Truth does |
| `boxes_not_a_list` | `boundingBoxes` is not a list: answer dropped |
| `too_many_boxes` | more than `MAX_BOXES_PER_ANSWER` boxes: the rest dropped |
| `missing_field` | a box lacks `label`, `left`, `top`, `width` or `height`: box dropped |
| `wrong_type` | a coordinate not a number (booleans, numeric strings) or a label not a string: box dropped |
| `nan_or_infinite` | a coordinate (or its right/bottom edge) is NaN or infinite: box dropped |
| `coordinate_out_of_range` | an edge beyond ±`MAX_COORDINATE` pixels (no image is that large): dropped |
| `zero_area` | width or height is zero: box dropped |
| `negative_size_fixed` | one of width/height negative (drawn leftwards or upwards): flipped |
| `swapped_corners_fixed` | width and height both negative (corners given bottom-right first): flipped |
| `clipped_to_image` | a box reaching past the image edge: clipped to the image |
| `outside_image_dropped` | a box with no area inside the image: dropped |
| `unknown_label` | a label not in the job's labels (exact match): box dropped |
| `near_duplicate_collapsed` | a worker's own two boxes with the same label and IoU >= 0.9: one kept |
| `all_boxes_dropped` | every box of a non-empty answer was dropped: answer dropped, not an empty vote |
| `bad_image_size` | `inputImageProperties` holds no whole size in (0, `MAX_COORDINATE`]: size ignored |
| `duplicate_worker_answer` | a worker answered one object twice: the **last** answer in input order is kept |
| `empty_answer` | a worker drew no box: kept, a real vote for "nothing here" |
| `bad_xml` | MTurk answer XML unreadable or declares a DTD/entities: answer dropped |
| `answer_too_large` | MTurk answer XML over `MAX_XML_CHARS`: answer dropped |
| `missing_task_answers` | MTurk answer XML without a `taskAnswers` field: answer dropped |
| `content_by_reference` | `annotationData` holds an `s3Uri` and no `fetch` was given: answer dropped |

Only a payload that is not JSON at all raises `InputError` (naming the line for JSON Lines).
"""

from __future__ import annotations

import codecs
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain, compress, groupby
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.consolidation.columns import BOX_KEYS as _BOX_KEYS
from orchestrator.consolidation.columns import MAX_COORDINATE, read_typical_answer, validate_boxes
from orchestrator.consolidation.iou import box_iou, iou
from orchestrator.errors import InputError
from orchestrator.fastjson import array_items, loads, loads_utf8

# A coordinate must be a finite number; sizes must be positive. Enforced by pydantic-core (no Python
# validator call per box), so building many boxes stays cheap.
_Coordinate = Annotated[float, Field(allow_inf_nan=False)]
_Size = Annotated[float, Field(gt=0, allow_inf_nan=False)]

NEAR_DUPLICATE_IOU = 0.9
MAX_BOXES_PER_ANSWER = 1000
# Answers whose boxes are validated together: numpy's per-call cost is spread over many boxes, and a
# chunk's raw JSON is let go before the next is read.
CHUNK_ANSWERS = 10_000
MAX_XML_CHARS = 2_000_000
MAX_EXAMPLES = 50
_MTURK_NS = (
    "{http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd}"
)


class Box(BaseModel):
    """One box a worker drew: pixels, top-left origin, label as text; finite, positive size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    left: _Coordinate
    top: _Coordinate
    width: _Size
    height: _Size


class WorkerAnswer(BaseModel):
    """One worker's answer for one object; an empty `boxes` list is a vote for "nothing to box"."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str
    boxes: list[Box]
    image_width: int | None = Field(default=None, gt=0)
    image_height: int | None = Field(default=None, gt=0)
    submitted_at: str | None = None
    time_spent_seconds: float | None = None
    accepted_at: str | None = None
    worker_metadata: dict[str, Any] | None = None


class ObjectAnswers(BaseModel):
    """All answers for one dataset object (one manifest line)."""

    model_config = ConfigDict(extra="forbid")

    dataset_object_id: str
    source_ref: str
    answers: list[WorkerAnswer]


@dataclass
class AnswerReport:
    """What the parser repaired or dropped: a count per reason code and a few examples naming where."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = MAX_EXAMPLES

    def add(self, code: str, where: str, detail: str = "") -> None:
        self.counts[code] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{code}: {where}" + (f": {detail}" if detail else ""))

    @property
    def problems(self) -> int:
        """Repairs and drops, not counting `empty_answer` (a valid vote)."""
        return sum(n for code, n in self.counts.items() if code != "empty_answer")

    def as_dict(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())), "examples": list(self.examples)}


def parse_answer_content(
    content: str | dict[str, Any], report: AnswerReport | None = None, where: str = ""
) -> tuple[list[Any] | None, dict[str, Any]]:
    """Split one answer into its raw `boundingBoxes` list and `inputImageProperties` dict.

    `content` is `{"<element name>": {"boundingBoxes": [...], "inputImageProperties": {...}}}` (any key
    whose value holds `boundingBoxes`; the first such key in sorted order if several) or the element
    value itself, as a dict or a JSON string. Missing or null `boundingBoxes` gives `[]` (no boxes).
    Returns `(None, {})` when the answer is unreadable; the reason is counted in `report`.
    """
    report = report if report is not None else AnswerReport()
    if isinstance(content, str | bytes):
        try:
            content = loads(content)
        except (ValueError, RecursionError) as exc:
            report.add("bad_json", where, str(exc)[:80])
            return None, {}
    if not isinstance(content, dict):
        report.add("not_an_object", where, f"answer is {type(content).__name__}")
        return None, {}
    element = _find_element(content)
    props = element.get("inputImageProperties")
    props = props if isinstance(props, dict) else {}
    boxes = element.get("boundingBoxes")
    if boxes is None:
        report.add("missing_boxes_key", where)
        return [], props
    if not isinstance(boxes, list):
        report.add("boxes_not_a_list", where, f"boundingBoxes is {type(boxes).__name__}")
        return None, {}
    return boxes, props


def _find_element(content: dict[str, Any]) -> dict[str, Any]:
    if "boundingBoxes" in content or "inputImageProperties" in content:
        return content
    for key in sorted(content, key=str):
        value = content[key]
        if isinstance(value, dict) and "boundingBoxes" in value:
            return value
    # No element holds boxes: take the one with image properties, if any, for its size.
    for key in sorted(content, key=str):
        value = content[key]
        if isinstance(value, dict) and "inputImageProperties" in value:
            return value
    return {}


def parse_element_answer(
    obj: str | dict[str, Any],
    worker_id: str,
    labels: list[str] | None,
    report: AnswerReport,
    *,
    where: str = "",
    image_width: int | None = None,
    image_height: int | None = None,
    submitted_at: str | None = None,
    time_spent_seconds: float | None = None,
) -> WorkerAnswer | None:
    """One worker's answer JSON (the element value, wrapped or not) as a validated `WorkerAnswer`.

    The image size for clipping comes from `inputImageProperties`, else from `image_width` /
    `image_height`. Returns None when the answer is unreadable (the reason is counted).
    """
    pending = _read_element(
        obj, worker_id, report, where or f"worker {worker_id}", image_width, image_height, submitted_at,
        time_spent_seconds,
    )  # fmt: skip
    if pending is None:
        return None
    boxes = _parse_boxes(pending.boxes, labels, pending.width, pending.height, report, pending.where)
    return None if boxes is None else _worker_answer(pending, boxes, report)


@dataclass
class _Pending:
    """An answer read up to its raw boxes, which are validated later together with other answers'."""

    worker_id: str
    where: str
    boxes: list[Any]
    width: int | None
    height: int | None
    fields: dict[str, Any]  # the other `WorkerAnswer` fields


def _read_element(
    obj: str | dict[str, Any],
    worker_id: str,
    report: AnswerReport,
    where: str,
    image_width: int | None = None,
    image_height: int | None = None,
    submitted_at: str | None = None,
    time_spent_seconds: float | None = None,
) -> _Pending | None:
    boxes_json, props = parse_answer_content(obj, report, where)
    if boxes_json is None:
        return None
    width, height = _image_size(props, report, where)
    width, height = (width, height) if width and height else (image_width, image_height)
    fields = {"submitted_at": submitted_at, "time_spent_seconds": time_spent_seconds}
    return _Pending(worker_id, where, boxes_json, width, height, fields)


def _worker_answer(pending: _Pending, boxes: list[Box], report: AnswerReport) -> WorkerAnswer:
    if not boxes:
        report.add("empty_answer", pending.where)
    return WorkerAnswer(
        worker_id=pending.worker_id,
        boxes=boxes,
        image_width=pending.width,
        image_height=pending.height,
        **pending.fields,
    )


@dataclass
class AnswerColumns:
    """Parsed answers of many objects as columns: what `IoUVote` reads, without a pydantic model per box.

    Objects keep their input order; answers are grouped by object (ascending `answer_object`), boxes
    by answer (ascending `box_answer`) in drawing order. `objects()` gives the same answers as models.
    """

    object_ids: list[str]
    source_refs: list[str]
    answer_object: np.ndarray  # (A,) object of each answer
    worker_ids: list[str]  # (A,)
    image_sizes: list[tuple[int | None, int | None]]  # (A,)
    answer_fields: list[dict[str, Any]]  # (A,) the other `WorkerAnswer` fields
    box_answer: np.ndarray  # (N,) answer of each box
    ltwh: np.ndarray  # (N, 4) left, top, width, height
    labels: list[str]  # (N,)

    def __len__(self) -> int:
        return len(self.object_ids)

    @classmethod
    def from_objects(cls, objects: Sequence[ObjectAnswers]) -> AnswerColumns:
        """The answer models as columns, objects and answers in the same order."""
        answers = [a for obj in objects for a in obj.answers]
        boxes = [b for a in answers for b in a.boxes]
        ltwh = np.fromiter(
            chain.from_iterable(map(attrgetter("left", "top", "width", "height"), boxes)),
            dtype=np.float64,
            count=4 * len(boxes),
        ).reshape(-1, 4)
        return cls(
            object_ids=[obj.dataset_object_id for obj in objects],
            source_refs=[obj.source_ref for obj in objects],
            answer_object=np.repeat(np.arange(len(objects)), [len(obj.answers) for obj in objects]),
            worker_ids=[a.worker_id for a in answers],
            image_sizes=[(a.image_width, a.image_height) for a in answers],
            answer_fields=[a.model_dump(include=_ANSWER_FIELDS) for a in answers],
            box_answer=np.repeat(np.arange(len(answers)), [len(a.boxes) for a in answers]),
            ltwh=ltwh,
            labels=[b.label for b in boxes],
        )

    def objects(self) -> list[ObjectAnswers]:
        """The answers as `ObjectAnswers`, for the boundaries that hand single objects on."""
        boxes = [
            Box(label=name, left=left, top=top, width=width, height=height)
            for name, (left, top, width, height) in zip(self.labels, self.ltwh.tolist(), strict=True)
        ]
        box_bounds = np.searchsorted(self.box_answer, np.arange(len(self.worker_ids) + 1)).tolist()
        answers = [
            WorkerAnswer(
                worker_id=worker_id, boxes=boxes[start:stop], image_width=width, image_height=height, **fields
            )
            for worker_id, (width, height), fields, start, stop in zip(
                self.worker_ids,
                self.image_sizes,
                self.answer_fields,
                box_bounds[:-1],
                box_bounds[1:],
                strict=True,
            )
        ]
        bounds = np.searchsorted(self.answer_object, np.arange(len(self) + 1)).tolist()
        return [
            ObjectAnswers(dataset_object_id=object_id, source_ref=ref, answers=answers[start:stop])
            for object_id, ref, start, stop in zip(
                self.object_ids, self.source_refs, bounds[:-1], bounds[1:], strict=True
            )
        ]

    def answered(self) -> AnswerColumns:
        """Only the objects with at least one answer."""
        has = np.bincount(self.answer_object, minlength=len(self)) > 0
        return replace(
            self,
            object_ids=list(compress(self.object_ids, has)),
            source_refs=list(compress(self.source_refs, has)),
            answer_object=(np.cumsum(has) - 1)[self.answer_object],
        )


_ANSWER_FIELDS = {"submitted_at", "time_spent_seconds", "accepted_at", "worker_metadata"}


def _no_times() -> dict[str, Any]:
    """The other fields of a payload's answer, which carries no times."""
    return {"submitted_at": None, "time_spent_seconds": None}


def _answer_columns(
    pending: list[_Pending],
    owner: list[int],
    object_ids: list[str],
    source_refs: list[str],
    labels: list[str] | None,
    report: AnswerReport,
) -> AnswerColumns:
    """The pending answers (`owner`: the object of each) as `_ColumnBuilder` makes them."""
    builder = _ColumnBuilder(labels, report)
    for answer, obj in zip(pending, owner, strict=True):
        builder.add(answer, obj)
    return builder.finish(object_ids, source_refs)


class _ColumnBuilder:
    """Answers validated as `parse_element_answer` would, a chunk of `CHUNK_ANSWERS` at a time (`add`;
    the boxes of a chunk at once, by `columns.validate_boxes`), then one answer per worker and object
    over them all (`finish`): the same answers, boxes and counted reasons, as columns. A chunk's raw
    boxes are let go once validated, so a large payload's parsed JSON never lives whole.
    """

    def __init__(self, labels: list[str] | None, report: AnswerReport) -> None:
        self.allowed = set(labels) if labels is not None else None
        self.report = report
        self.chunk: list[_Pending] = []
        self.answers: list[_Pending] = []  # validated answers, in input order, their boxes let go
        self.owner: list[int] = []  # the object of every answer added
        self.file: list[int] = []  # and the file it came in: a later file's answer replaces an earlier one
        self.files = 0
        self.readable: list[np.ndarray] = []
        self.box_answer: list[np.ndarray] = []
        self.ltwh: list[np.ndarray] = []
        self.labels: list[str] = []
        self.label_names: dict[str, str] = {}
        self.box_kept: list[np.ndarray] = []

    def next_file(self) -> None:
        """The answers added from now on come in a later file than those before."""
        self.files += 1

    def add(self, answer: _Pending, owner: int) -> None:
        self.chunk.append(answer)
        self.owner.append(owner)
        self.file.append(self.files)
        if len(self.chunk) >= CHUNK_ANSWERS:
            self._validate()

    def _validate(self) -> None:
        pending, report, first = self.chunk, self.report, len(self.answers)
        for p in pending:
            if len(p.boxes) > MAX_BOXES_PER_ANSWER:
                report.add("too_many_boxes", p.where, f"{len(p.boxes)} boxes, kept {MAX_BOXES_PER_ANSWER}")
                p.boxes = p.boxes[:MAX_BOXES_PER_ANSWER]
        counts = np.array([len(p.boxes) for p in pending], dtype=np.int64)
        starts = (np.cumsum(counts) - counts).tolist()
        answer = np.repeat(np.arange(len(pending)), counts)
        raw = list(chain.from_iterable(p.boxes for p in pending))
        sizes = np.array(
            [(p.width, p.height) if p.width and p.height else (np.nan, np.nan) for p in pending],
            dtype=np.float64,
        ).reshape(-1, 2)
        columns = validate_boxes(raw, sizes[answer], self.allowed)
        for i, code, detail in columns.events(raw):
            a = int(answer[i])
            report.add(code, f"{pending[a].where}, box {i - starts[a]}", detail)
        del raw
        kept = np.flatnonzero(columns.keep)
        x1, y1, x2, y2 = columns.xyxy[kept].T
        # A `Box` holds left, top, width and height: its right edge is left + width, which can differ
        # from x2 in the last bit; every later step reads the edges that way.
        ltwh = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)
        xyxy = np.concatenate([ltwh[:, :2], ltwh[:, :2] + ltwh[:, 2:]], axis=1)
        every = len(kept) == len(columns.label)
        box_labels = columns.label if every else [columns.label[i] for i in kept.tolist()]
        box_answer = answer[kept]
        bounds = np.searchsorted(box_answer, np.arange(len(pending) + 1)).tolist()
        suspect = _may_have_near_duplicates(box_answer, xyxy, box_labels, len(pending))
        box_kept = np.ones(len(kept), dtype=bool)
        readable = np.zeros(len(pending), dtype=bool)
        for a, p in enumerate(pending):
            start, stop = bounds[a], bounds[a + 1]
            p.boxes = []
            if counts[a] and start == stop:
                report.add("all_boxes_dropped", p.where, f"{counts[a]} boxes")
                continue
            readable[a] = True
            if suspect[a]:
                own = _near_duplicates(xyxy[start:stop], box_labels[start:stop], report, p.where)
                box_kept[start:stop] = np.isin(np.arange(stop - start), own)
            if start == stop:
                report.add("empty_answer", p.where)
        self.readable.append(readable)
        self.box_answer.append(box_answer + first)
        self.ltwh.append(ltwh)
        # One string per label name, not one per box: a million boxes' labels would hold 50 MB.
        self.labels.extend(map(self.label_names.setdefault, box_labels, box_labels))
        self.box_kept.append(box_kept)
        self.answers.extend(pending)
        self.chunk = []

    def finish(self, object_ids: list[str], source_refs: list[str]) -> AnswerColumns:
        """The columns of every answer added, `object_ids` and `source_refs` naming the owners."""
        self._validate()
        answers, report = self.answers, self.report
        readable = np.concatenate(self.readable)
        box_answer = np.concatenate(self.box_answer)
        ltwh = np.concatenate(self.ltwh)
        box_kept = np.concatenate(self.box_kept)
        # Readable answers grouped by object, in input order within an object.
        kept = np.flatnonzero(readable)
        owner = np.asarray(self.owner, dtype=np.int64)[kept]
        by_object = np.argsort(owner, kind="stable")
        grouped = kept[by_object]
        worker_code: dict[str, int] = {}
        worker = np.fromiter(
            (worker_code.setdefault(answers[a].worker_id, len(worker_code)) for a in grouped.tolist()),
            np.int64,
            len(grouped),
        )
        pair = owner[by_object] * max(len(worker_code), 1) + worker
        if len(np.unique(pair)) == len(pair):
            final = grouped.tolist()  # no worker answered an object twice: every answer stays, in order
        else:
            final = []
            bounds = np.searchsorted(owner[by_object], np.arange(len(object_ids) + 1)).tolist()
            for object_id, start, stop in zip(object_ids, bounds[:-1], bounds[1:], strict=True):
                # worker id -> its answer; a later file's answer takes an earlier one's place
                chosen: dict[str, int] = {}
                for _, run in groupby(grouped[start:stop].tolist(), key=self.file.__getitem__):
                    run = list(run)
                    ids = [answers[a].worker_id for a in run]
                    for i in _last_per_worker(ids, report, f"object {object_id}"):
                        chosen[answers[run[i]].worker_id] = run[i]
                final.extend(chosen.values())
        position = np.full(len(answers), -1)
        position[final] = np.arange(len(final))
        box_position = position[box_answer]
        chosen = np.flatnonzero(box_kept & (box_position >= 0))
        chosen = chosen[np.argsort(box_position[chosen], kind="stable")]
        kept_answers = list(map(answers.__getitem__, final))
        return AnswerColumns(
            object_ids=object_ids,
            source_refs=source_refs,
            answer_object=np.asarray(self.owner, dtype=np.int64)[final],
            worker_ids=list(map(attrgetter("worker_id"), kept_answers)),
            image_sizes=list(map(attrgetter("width", "height"), kept_answers)),
            answer_fields=list(map(attrgetter("fields"), kept_answers)),
            box_answer=box_position[chosen],
            ltwh=ltwh[chosen],
            labels=(
                self.labels
                if len(chosen) == len(self.labels)  # every box, and `chosen` is sorted: in their order
                and np.array_equal(chosen, np.arange(len(chosen)))
                else list(map(self.labels.__getitem__, chosen.tolist()))
            ),
        )


def _may_have_near_duplicates(
    answer: np.ndarray, xyxy: np.ndarray, labels: list[str], n_answers: int
) -> np.ndarray:
    """Answers holding two boxes of one label at IoU near or above NEAR_DUPLICATE_IOU; only those go
    through `_near_duplicates`, which decides exactly."""
    index = {name: i for i, name in enumerate(dict.fromkeys(labels))}
    label = np.fromiter(map(index.__getitem__, labels), np.int64, len(labels))
    group = answer * max(len(index), 1) + label
    order = np.argsort(group, kind="stable")
    group = group[order]
    # Every pair (p, q), p < q, of positions in one group's run of the sorted order.
    end = np.searchsorted(group, group, side="right")
    partners = end - np.arange(len(group)) - 1
    p = np.repeat(np.arange(len(group)), partners)
    q = p + 1 + np.arange(len(p)) - np.repeat(np.cumsum(partners) - partners, partners)
    boxes = xyxy[order]
    close = iou(boxes[p], boxes[q]) >= NEAR_DUPLICATE_IOU - 1e-9
    suspect = np.zeros(n_answers, dtype=bool)
    suspect[answer[order][p[close]]] = True
    return suspect


def _image_size(props: dict[str, Any], report: AnswerReport, where: str) -> tuple[int | None, int | None]:
    if not props:
        return None, None
    size = [_positive_int(props.get("width")), _positive_int(props.get("height"))]
    if None in size:
        report.add("bad_image_size", where, f"inputImageProperties {str(props)[:60]}")
        return None, None
    return size[0], size[1]


def _positive_int(value: Any) -> int | None:
    """A size in pixels: a whole number in (0, MAX_COORDINATE]; JSON integers may exceed float range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 < value <= MAX_COORDINATE or value != int(value):  # NaN fails the range test
        return None
    return int(value)


def _parse_boxes(
    raw: list[Any],
    labels: list[str] | None,
    image_width: int | None,
    image_height: int | None,
    report: AnswerReport,
    where: str,
) -> list[Box] | None:
    """Validated boxes, or None when a non-empty list lost every box."""
    if len(raw) > MAX_BOXES_PER_ANSWER:
        report.add("too_many_boxes", where, f"{len(raw)} boxes, kept {MAX_BOXES_PER_ANSWER}")
        raw = raw[:MAX_BOXES_PER_ANSWER]
    allowed = set(labels) if labels is not None else None
    boxes = [
        box
        for i, item in enumerate(raw)
        if (box := _parse_box(item, allowed, image_width, image_height, report, f"{where}, box {i}"))
    ]
    if raw and not boxes:
        report.add("all_boxes_dropped", where, f"{len(raw)} boxes")
        return None
    xyxy = np.array([(b.left, b.top, b.left + b.width, b.top + b.height) for b in boxes]).reshape(-1, 4)
    return [boxes[i] for i in _near_duplicates(xyxy, [b.label for b in boxes], report, where)]


def _parse_box(
    item: Any,
    allowed: set[str] | None,
    image_width: int | None,
    image_height: int | None,
    report: AnswerReport,
    where: str,
) -> Box | None:
    if not isinstance(item, dict):
        report.add("not_an_object", where, f"box is {type(item).__name__}")
        return None
    missing = [k for k in _BOX_KEYS if k not in item]
    if missing:
        report.add("missing_field", where, f"no {', '.join(missing)}")
        return None
    label = item["label"]
    values = [item[k] for k in ("left", "top", "width", "height")]
    if not isinstance(label, str) or any(
        isinstance(v, bool) or not isinstance(v, int | float) for v in values
    ):
        report.add(
            "wrong_type", where, str({k: item[k] for k in ("label", "left", "top", "width", "height")})[:80]
        )
        return None
    if allowed is not None and label not in allowed:
        report.add("unknown_label", where, repr(label)[:40])
        return None
    try:
        left, top, width, height = (float(v) for v in values)
    except OverflowError:  # an integer too large for a float
        report.add("nan_or_infinite", where)
        return None
    x1, y1, x2, y2 = left, top, left + width, top + height
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2, width, height)):
        report.add("nan_or_infinite", where)
        return None
    if max(abs(x1), abs(y1), abs(x2), abs(y2)) > MAX_COORDINATE:
        report.add("coordinate_out_of_range", where)
        return None
    if width == 0 or height == 0:
        report.add("zero_area", where)
        return None
    if width < 0 and height < 0:
        report.add("swapped_corners_fixed", where)
    elif width < 0 or height < 0:
        report.add("negative_size_fixed", where)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    if image_width and image_height:
        cx1, cy1 = max(x1, 0.0), max(y1, 0.0)
        cx2, cy2 = min(x2, float(image_width)), min(y2, float(image_height))
        if cx2 <= cx1 or cy2 <= cy1:
            report.add("outside_image_dropped", where)
            return None
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            report.add("clipped_to_image", where)
            x1, y1, x2, y2 = cx1, cy1, cx2, cy2
    if x2 - x1 <= 0 or y2 - y1 <= 0:  # a positive size lost to float rounding at a huge offset
        report.add("zero_area", where)
        return None
    return Box(label=label, left=x1, top=y1, width=x2 - x1, height=y2 - y1)


def _near_duplicates(xyxy: np.ndarray, labels: list[str], report: AnswerReport, where: str) -> list[int]:
    """Indexes of one answer's boxes (`xyxy`, `labels`) left after dropping each box that repeats (same
    label, IoU >= 0.9) one earlier in coordinate order; in drawing order."""
    if len(labels) < 2:
        return list(range(len(labels)))
    names = np.array(labels)
    duplicate = (box_iou(xyxy, xyxy) >= NEAR_DUPLICATE_IOU) & (names[:, None] == names[None, :])
    order = sorted(range(len(labels)), key=lambda i: (labels[i], *xyxy[i]))
    kept: list[int] = []
    for i in order:
        if duplicate[i, kept].any():
            report.add("near_duplicate_collapsed", where, f"box {i}")
        else:
            kept.append(i)
    return sorted(kept)


def _last_per_worker(worker_ids: list[str], report: AnswerReport, where: str) -> list[int]:
    """Indexes of one answer per worker: a later answer replaces an earlier one (a resubmission is the
    final word); in the order of the answers kept."""
    by_worker: dict[str, int] = {}
    for i, worker_id in enumerate(worker_ids):
        if worker_id in by_worker:
            report.add("duplicate_worker_answer", f"{where}, worker {worker_id}", "kept the last")
            del by_worker[worker_id]
        by_worker[worker_id] = i
    return list(by_worker.values())


def _worker_id(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _optional_seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _load_items(data: bytes | str) -> list[Any]:
    """A JSON array, one JSON object, or JSON Lines; raises InputError only if that is not JSON at all.

    An array given as bytes comes as its elements' text (`fastjson.array_items`), for `_item` to read
    one at a time: a payload's parsed JSON is never held whole, only its bytes."""
    if isinstance(data, bytes) and not data.startswith(codecs.BOM_UTF8):
        elements = array_items(data)
        if elements is not None:
            return elements
        # Not an array: read whole from its bytes, without a decoded copy.
        try:
            return _items(loads_utf8(data))
        except ValueError:
            pass
    if isinstance(data, bytes):
        data = _utf8_text(data)
    data = data.lstrip("\ufeff")
    try:
        whole = loads(data)
    except (ValueError, RecursionError):
        pass
    else:
        return _items(whole)
    items = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(loads(line))
        except (ValueError, RecursionError) as exc:
            raise InputError(f"consolidation payload line {number} is not JSON: {exc}") from None
    return items


def _utf8_text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"consolidation payload is not UTF-8 text: {exc}") from None


def _item(element: Any, index: int, data: bytes | str) -> Any:
    """A payload's item: an element of `_load_items`' array read now, anything else as it is."""
    if not isinstance(element, msgspec.Raw):
        return element
    try:
        return loads(element)
    except (ValueError, RecursionError) as exc:
        # The split checked the syntax, so this is a string that is not UTF-8.
        _utf8_text(data)  # raises what the whole payload's reading raises
        raise InputError(f"consolidation payload item {index} is not JSON: {exc}") from None


def _items(whole: Any) -> list[Any]:
    if isinstance(whole, list):
        return whole
    if isinstance(whole, dict):
        return [whole]
    raise InputError(f"consolidation payload is a JSON {type(whole).__name__}, not an array or JSON Lines")


def parse_consolidation_payload(
    data: bytes | str,
    labels: list[str] | None,
    report: AnswerReport,
    *,
    fetch: Callable[[str], bytes | str] | None = None,
) -> list[ObjectAnswers]:
    """Ground Truth's post-annotation payload (JSON array or JSON Lines) as `ObjectAnswers`, input order.

    Items look like `{"datasetObjectId": "0", "dataObject": {"s3Uri" | "source-ref" | "content": ...},
    "annotations": [{"workerId": "w1", "annotationData": {"content": "<answer JSON string>"}}]}`.
    `fetch`, if given, reads an `annotationData.s3Uri` that Ground Truth used instead of inline content.
    """
    return parse_consolidation_columns(data, labels, report, fetch=fetch).objects()


def parse_consolidation_columns(
    data: bytes | str,
    labels: list[str] | None,
    report: AnswerReport,
    *,
    fetch: Callable[[str], bytes | str] | None = None,
) -> AnswerColumns:
    """`parse_consolidation_payload`'s answers as columns, for `IoUVote`: no model per box or answer."""
    objects: dict[str, int] = {}  # object id -> its index
    source_refs: list[str] = []
    builder = _ColumnBuilder(labels, report)
    items = _load_items(data)
    for index in range(len(items)):
        # Each item is let go once read: its answers' text is then held only until its chunk is validated.
        item, items[index] = _item(items[index], index, data), None
        where = f"item {index}"
        if not isinstance(item, dict):
            report.add("not_an_object", where, f"item is {type(item).__name__}")
            continue
        object_id = _worker_id(item.get("datasetObjectId"))
        if object_id is None:
            report.add("missing_object_id", where)
            continue
        where = f"object {object_id}"
        answers = [
            answer
            for n, annotation in enumerate(_as_list(item.get("annotations"), report, where))
            if (answer := _read_annotation(annotation, report, where, n, fetch))
        ]
        if object_id in objects:
            report.add("duplicate_object", where, "annotations merged")
        else:
            objects[object_id] = len(source_refs)
            source_refs.append(_source_ref(item.get("dataObject"), report, where))
        for answer in answers:
            builder.add(answer, objects[object_id])
    return builder.finish(list(objects), source_refs)


def labels_in_answers(objects: Iterable[ObjectAnswers] | AnswerColumns) -> list[str]:
    """Every label the answers use, in the order they first appear (object, worker, box)."""
    if isinstance(objects, AnswerColumns):
        return list(dict.fromkeys(objects.labels))
    return list(dict.fromkeys(box.label for obj in objects for answer in obj.answers for box in answer.boxes))


def _as_list(value: Any, report: AnswerReport, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        report.add("not_an_object", where, f"annotations is {type(value).__name__}")
        return []
    return value


def _source_ref(data_object: Any, report: AnswerReport, where: str) -> str:
    if isinstance(data_object, dict):
        for key in ("s3Uri", "source-ref", "content"):
            if isinstance(data_object.get(key), str):
                return data_object[key]
    report.add("missing_source_ref", where)
    return ""


def _read_annotation(
    annotation: Any,
    report: AnswerReport,
    object_where: str,
    n: int,
    fetch: Callable[[str], bytes | str] | None,
) -> _Pending | None:
    """Annotation `n` of an object up to its raw boxes, or None (the reason counted)."""
    if type(annotation) is dict:
        # Nearly every annotation: a worker id, inline content and a typical answer. It is read here
        # without the checks below, which it would all pass; this runs once per answer of a job.
        worker_id, data = annotation.get("workerId"), annotation.get("annotationData")
        if type(worker_id) is str and worker_id.strip() and type(data) is dict:
            content = data.get("content")
            if type(content) is str and (typical := read_typical_answer(content)) is not None:
                where = f"{object_where}, annotation {n}, worker {worker_id}"
                return _Pending(worker_id, where, *typical, _no_times())
    where = f"{object_where}, annotation {n}"
    if not isinstance(annotation, dict):
        report.add("not_an_object", where, f"annotation is {type(annotation).__name__}")
        return None
    worker_id = _worker_id(annotation.get("workerId"))
    if worker_id is None:
        report.add("missing_worker_id", where)
        return None
    where = f"{where}, worker {worker_id}"
    data = annotation.get("annotationData")
    content = data.get("content") if isinstance(data, dict) else None
    if content is None and isinstance(data, dict) and isinstance(data.get("s3Uri"), str):
        if fetch is None:
            report.add("content_by_reference", where, data["s3Uri"])
            return None
        content = fetch(data["s3Uri"])
    if not isinstance(content, str | bytes | dict):
        report.add("missing_content", where)
        return None
    typical = read_typical_answer(content) if isinstance(content, bytes) else None
    if typical is not None:
        return _Pending(worker_id, where, *typical, _no_times())
    return _read_element(content, worker_id, report, where)


def parse_worker_response(
    data: bytes | str | dict[str, Any],
    dataset_object_id: str,
    source_ref: str,
    labels: list[str] | None,
    report: AnswerReport,
) -> ObjectAnswers:
    """A Ground Truth `annotations/worker-response/iteration-N/<id>/<ts>.json` file as `ObjectAnswers`.

    The file is `{"answers": [{"acceptanceTime", "answerContent": {...}, "submissionTime",
    "timeSpentInSeconds", "workerId", "workerMetadata"}]}`; every field but `workerId` and
    `answerContent` may be missing (files labeljob wrote before it wrote them all) or null.
    Raises InputError only when `data` is not JSON at all.
    """
    pending = _read_worker_response(data, dataset_object_id, report)
    [obj] = _answer_columns(
        pending, [0] * len(pending), [dataset_object_id], [source_ref], labels, report
    ).objects()
    return obj


def parse_worker_responses(
    responses: Iterable[tuple[str, str, Iterable[tuple[str, bytes | str]]]],
    labels: list[str] | None,
    report: AnswerReport,
) -> AnswerColumns:
    """Many objects' worker-response files as columns, for `IoUVote`: `responses` gives each object's
    id, source-ref and files as (URI, content), in the order they were written.

    Each file reads as in `parse_worker_response`; a worker's answer in a later file of the object
    replaces its earlier one (in the earlier one's place). A file that is not JSON at all is counted as
    `bad_json` under its URI and skipped: one torn file must not lose the whole job.
    """
    builder = _ColumnBuilder(labels, report)
    object_ids: list[str] = []
    source_refs: list[str] = []
    for object_id, source_ref, files in responses:
        object_ids.append(object_id)
        source_refs.append(source_ref)
        for uri, data in files:
            try:
                pending = _read_worker_response(data, object_id, report)
            except InputError:
                report.add("bad_json", uri)
                continue
            builder.next_file()
            for answer in pending:
                builder.add(answer, len(object_ids) - 1)
    return builder.finish(object_ids, source_refs)


def _read_worker_response(
    data: bytes | str | dict[str, Any], object_id: str, report: AnswerReport
) -> list[_Pending]:
    where = f"object {object_id}"
    if isinstance(data, bytes | str):
        try:
            data = loads(data)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"worker response for {where} is not JSON: {exc}") from None
    entries: list[Any] = []
    if not isinstance(data, dict):
        report.add("not_an_object", where, f"worker response is {type(data).__name__}")
    else:
        entries = _as_list(data.get("answers"), report, where)
    pending: list[_Pending] = []
    for n, entry in enumerate(entries):
        entry_where = f"{where}, answer {n}"
        if not isinstance(entry, dict):
            report.add("not_an_object", entry_where, f"answer is {type(entry).__name__}")
            continue
        worker_id = _worker_id(entry.get("workerId"))
        if worker_id is None:
            report.add("missing_worker_id", entry_where)
            continue
        answer = _read_element(
            entry.get("answerContent"),
            worker_id,
            report,
            f"{entry_where}, worker {worker_id}",
            submitted_at=_optional_str(entry.get("submissionTime")),
            time_spent_seconds=_optional_seconds(entry.get("timeSpentInSeconds")),
        )
        if answer is not None:
            metadata = entry.get("workerMetadata")
            answer.fields["accepted_at"] = _optional_str(entry.get("acceptanceTime"))
            answer.fields["worker_metadata"] = metadata if isinstance(metadata, dict) else None
            pending.append(answer)
    return pending


def parse_mturk_answer(
    xml: str,
    worker_id: str,
    labels: list[str] | None,
    report: AnswerReport,
    *,
    where: str = "",
    image_width: int | None = None,
    image_height: int | None = None,
    submitted_at: str | None = None,
) -> WorkerAnswer | None:
    """An MTurk `Assignment.Answer` (QuestionFormAnswers XML) as a `WorkerAnswer`, or None if unreadable.

    `<crowd-form>` puts every field in one `taskAnswers` FreeText: a JSON array whose first element
    maps the element name to the answer JSON. Input with a DTD is refused (no entity expansion).
    """
    where = where or f"worker {worker_id}"
    if not isinstance(xml, str) or not xml.strip():
        report.add("bad_xml", where, "empty answer")
        return None
    if len(xml) > MAX_XML_CHARS:
        report.add("answer_too_large", where, f"{len(xml)} characters")
        return None
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        report.add("bad_xml", where, "declares a DTD")
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        report.add("bad_xml", where, str(exc)[:80])
        return None
    free_text = None
    for answer in root.iter(f"{_MTURK_NS}Answer"):
        if (answer.findtext(f"{_MTURK_NS}QuestionIdentifier") or "").strip() == "taskAnswers":
            free_text = answer.findtext(f"{_MTURK_NS}FreeText")
    if free_text is None:
        report.add("missing_task_answers", where)
        return None
    try:
        fields = loads(free_text)
    except (ValueError, RecursionError) as exc:
        report.add("bad_json", where, str(exc)[:80])
        return None
    if isinstance(fields, list):
        if not fields:
            report.add("not_an_object", where, "taskAnswers is an empty array")
            return None
        fields = fields[0]
    return parse_element_answer(
        fields,
        worker_id,
        labels,
        report,
        where=where,
        image_width=image_width,
        image_height=image_height,
        submitted_at=submitted_at,
    )

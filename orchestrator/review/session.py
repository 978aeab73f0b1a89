"""A review of one augmented manifest: its items, the reviewer's decisions, and the files they produce.

Every decision is appended to the decisions log before anything else is written, and REVIEWED and
`rejected.manifest` are rebuilt from the log after each one, so a crash loses nothing and a restart
over the same REVIEWED resumes where the reviewer stopped (docs/review.md).
"""

from __future__ import annotations

import json
import posixpath
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.consolidation import (
    MAX_BOXES_PER_ANSWER,
    MAX_COORDINATE,
    Box,
    ObjectAnswers,
    box_iou,
    score_gold,
)
from orchestrator.errors import InputError, NotFound, UsageError
from orchestrator.manifest import read_lines
from orchestrator.outputs import (
    AugmentedLine,
    creation_date,
    detection_attrs,
    dump_lines,
    read_augmented_manifest,
)
from orchestrator.storage import ObjectStore

Target = tuple[ObjectStore, str]
# Where a portal job's review writes REVIEWED, beside the job record (docs/review.md).
JOB_REVIEWED_KEY = "review/reviewed.manifest"
REJECTED_NAME = "rejected.manifest"
DECISIONS_NAME = "decisions.jsonl"
ADJUSTMENT_STATUS = "adjustment-status"
# A worker box matches a consensus box at this IoU with the same label (docs/review.md, "Order").
MATCH_IOU = 0.5
# Below this confidence a box is flagged; above this disagreement an image is flagged.
LOW_CONFIDENCE = 0.5
HIGH_DISAGREEMENT = 0.3
ORDERS = ("uncertain", "index")
BOX_KEYS = ("label", "left", "top", "width", "height")
# The before/after of a line nobody has decided on yet, in the decisions log.
UNDECIDED = {"decision": None, "boxes": None}

Coordinate = Annotated[float, Field(ge=-MAX_COORDINATE, le=MAX_COORDINATE, allow_inf_nan=False)]
Size = Annotated[float, Field(gt=0, le=MAX_COORDINATE, allow_inf_nan=False)]


class BoxIn(BaseModel):
    """A box a reviewer (or a script) sends with `fix`; `confidence` and `votes`, as `GET` returns them,
    are ignored."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=256)
    left: Coordinate
    top: Coordinate
    width: Size
    height: Size
    confidence: float | None = None
    votes: int | None = None


class DecisionIn(BaseModel):
    """The body of `POST /api/items/{index}`: boxes with `fix` only (an empty list: nothing to box)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["accept", "fix", "reject", "undo"]
    boxes: list[BoxIn] | None = Field(default=None, max_length=MAX_BOXES_PER_ANSWER)

    @model_validator(mode="after")
    def _boxes_with_fix_only(self) -> DecisionIn:
        if (self.action == "fix") != (self.boxes is not None):
            raise ValueError("boxes are required with fix and not allowed with accept, reject or undo")
        return self


@dataclass
class Filters:
    """Which items `GET /api/items` lists; a filter left out (None) keeps every item."""

    label: str | None = None
    flag: str | None = None
    worker: str | None = None
    decision: str | None = None

    def keep(self, row: dict) -> bool:
        return (
            (self.label is None or any(box["label"] == self.label for box in row["boxes"]))
            and (self.flag is None or self.flag in row["flags"])
            and (self.worker is None or any(w["worker_id"] == self.worker for w in row["workers"]))
            and (self.decision is None or (row["decision"] or "undecided") == self.decision)
        )


@dataclass
class Item:
    """One manifest line under review."""

    index: int
    line: AugmentedLine
    workers: dict[str, list[dict]] = field(default_factory=dict)
    # The item's decisions, oldest first; undo pops the last one.
    history: list[dict] = field(default_factory=list)

    @property
    def decision(self) -> dict | None:
        return self.history[-1] if self.history else None


class Review:
    """The review of `manifest` into `out`.

    `attr` picks the label attribute; by default the only one, or the last one of a chained job's
    lines (the latest job). InputError when a line is not a valid augmented manifest line, or when
    the decisions log beside `out` belongs to another manifest.
    """

    def __init__(
        self,
        manifest: Target,
        out: Target,
        *,
        attr: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        store, key = manifest
        self.manifest_uri = store.uri(key)
        self.out_store, self.out_key = out
        if self.out_store.uri(self.out_key) == self.manifest_uri:
            raise UsageError("--out must not be the manifest under review", hint="write REVIEWED elsewhere")
        folder, name = posixpath.split(self.out_key)
        if name in (REJECTED_NAME, DECISIONS_NAME):
            raise UsageError(f"--out must not be named {name}: the review writes that file beside it")
        self.rejected_key = posixpath.join(folder, REJECTED_NAME)
        self.log_key = posixpath.join(folder, DECISIONS_NAME)
        self.clock = clock
        # Called with a rejected line's source-ref once the reject is logged (the portal sends the
        # image back to the crowd); without it a reject only writes rejected.manifest.
        self.on_reject = on_reject
        self.attr = attr or _latest_attr(store, key)
        self.items = [
            Item(line_no - 1, line) for line_no, line in read_augmented_manifest(store, key, self.attr)
        ]
        self._by_index = {item.index: item for item in self.items}
        self.labels = _label_ids(self.items)
        self.label_names = {class_id: name for name, class_id in self.labels.items()}
        self.worker_ids: list[str] = []
        self._log: list[dict] = []
        self._lock = threading.Lock()
        self._replay()
        self._write_outputs()

    # ---------------------------------------------------------------------------------- reading

    def add_answers(self, answers: list[ObjectAnswers]) -> None:
        """Show each worker's boxes beside the consensus of the line with the same source-ref."""
        by_ref = {item.line.source_ref: item for item in self.items}
        workers = set(self.worker_ids)
        for obj in answers:
            item = by_ref.get(obj.source_ref)
            if item is None:
                continue  # an answer for an image the manifest does not hold
            for answer in obj.answers:
                item.workers[answer.worker_id] = [
                    {"label": b.label, "left": b.left, "top": b.top, "width": b.width, "height": b.height}
                    for b in answer.boxes
                ]
                workers.add(answer.worker_id)
        self.worker_ids = sorted(workers)

    def _replay(self) -> None:
        try:
            text = self.out_store.get(self.log_key).decode()
        except NotFound:
            return
        uri = self.out_store.uri(self.log_key)
        for number, raw in enumerate(text.splitlines(), start=1):
            try:
                entry = json.loads(raw)
                item = self._by_index.get(entry["index"])
                matches = item is not None and item.line.source_ref == entry["source-ref"]
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{uri}:{number}: not a decision") from None
            if not matches:
                raise InputError(
                    f"{uri}:{number}: decision for line {entry['index']} ({entry['source-ref']}), which "
                    f"{self.manifest_uri} does not hold there",
                    hint="this decisions log belongs to another manifest: choose another --out folder",
                )
            self._apply(item, entry)
            self._log.append(entry)

    @staticmethod
    def _apply(item: Item, entry: dict) -> None:
        if entry["action"] == "undo":
            item.history.pop()
        else:
            item.history.append(entry)

    # ---------------------------------------------------------------------------------- the API

    def describe(self, item: Item) -> dict:
        """The item as `GET /api/items` lists it."""
        consensus = item.line.boxes()
        for box in consensus if item.workers else []:
            box["votes"] = _votes(box, item.workers)
        disagreement = _disagreement(consensus, item.workers)
        size = item.line.label.image_size[0] if item.line.label.image_size else None
        decision = item.decision
        flags = []
        if not consensus:
            flags.append("no_boxes")
        if any(box["confidence"] < LOW_CONFIDENCE for box in consensus):
            flags.append("low_confidence")
        if disagreement > HIGH_DISAGREEMENT:
            flags.append("workers_disagree")
        return {
            "index": item.index,
            "source-ref": item.line.source_ref,
            "image_size": {"width": size.width, "height": size.height} if size else None,
            "boxes": consensus,
            "workers": [{"worker_id": w, "boxes": boxes} for w, boxes in sorted(item.workers.items())],
            "disagreement": round(disagreement, 4),
            "flags": flags,
            "decision": decision["action"] if decision else None,
            "decided_by": decision["by"] if decision else None,
            "decided_at": decision["at"] if decision else None,
            "fixed_boxes": decision["after"]["boxes"] if decision and decision["action"] == "fix" else None,
        }

    def list_items(self, order: str = "index", filters: Filters | None = None) -> list[dict]:
        """The items that pass `filters`; `order=uncertain` puts the least certain first (docs/review.md)."""
        if order not in ORDERS:
            raise UsageError(f"order must be one of {', '.join(ORDERS)}")
        with self._lock:
            rows = [self.describe(item) for item in self.items]
        rows = [row for row in rows if (filters or Filters()).keep(row)]
        if order == "uncertain":
            rows.sort(key=_uncertainty_key)
        return rows

    def item(self, index: int) -> Item:
        try:
            return self._by_index[index]
        except KeyError:
            raise NotFound(f"the manifest has no line {index}") from None

    def decide(self, index: int, decision: DecisionIn, who: str) -> dict:
        """Record one decision (logged first), rebuild REVIEWED and rejected.manifest, return the item."""
        with self._lock:
            item = self.item(index)
            before = item.decision["after"] if item.decision else UNDECIDED
            if decision.action == "undo":
                if item.decision is None:
                    raise UsageError(f"line {index} has no decision to undo")
                after = item.history[-2]["after"] if len(item.history) > 1 else UNDECIDED
            else:
                after = {"decision": decision.action, "boxes": self._after_boxes(item, decision)}
            entry = {
                "at": creation_date(self.clock()),
                "by": who,
                "index": index,
                "source-ref": item.line.source_ref,
                "action": decision.action,
                "before": before,
                "after": after,
            }
            # The log is the record: a decision exists once it is stored, and counts only then.
            log = [*self._log, entry]
            self.out_store.put(self.log_key, dump_lines(log), "application/jsonlines")
            self._log = log
            self._apply(item, entry)
            self._write_outputs()
            if decision.action == "reject" and self.on_reject is not None:
                self.on_reject(item.line.source_ref)
            return self.describe(item)

    def _after_boxes(self, item: Item, decision: DecisionIn) -> list[dict] | None:
        if decision.action == "reject":
            return None
        if decision.action == "accept":
            return [{k: box[k] for k in BOX_KEYS} for box in item.line.boxes()]
        boxes = []
        for n, box in enumerate(decision.boxes or []):
            if box.label not in self.labels:
                raise UsageError(
                    f"box {n}: label {box.label!r} is not one of {', '.join(self.labels)}",
                    hint="a fix may use the labels the manifest's class-maps name",
                )
            # Edges are rounded, as for consolidated boxes, so two boxes that touch still touch.
            left, top = round(box.left), round(box.top)
            right, bottom = round(box.left + box.width), round(box.top + box.height)
            if right <= left or bottom <= top:
                raise UsageError(f"box {n}: less than one pixel wide or high")
            boxes.append(
                {"label": box.label, "left": left, "top": top, "width": right - left, "height": bottom - top}
            )
        return boxes

    def counts(self) -> dict[str, int]:
        with self._lock:
            decided = [item.decision["action"] if item.decision else "undecided" for item in self.items]
        return {name: decided.count(name) for name in ("undecided", "accept", "fix", "reject")}

    # --------------------------------------------------------------------------------- outputs

    def _write_outputs(self) -> None:
        reviewed, rejected = [], []
        for item in self.items:
            decision = item.decision
            if decision and decision["action"] == "reject":
                rejected.append({"source-ref": item.line.source_ref, **item.line.other})
            elif decision and decision["action"] == "fix":
                reviewed.append(self._fixed_line(item, decision))
            else:
                line = item.line.to_json()
                line[f"{self.attr}-metadata"][ADJUSTMENT_STATUS] = "unadjusted"
                reviewed.append(line)
        self.out_store.put(self.out_key, dump_lines(reviewed), "application/jsonlines")
        self.out_store.put(self.rejected_key, dump_lines(rejected), "application/jsonlines")

    def _fixed_line(self, item: Item, decision: dict) -> dict:
        boxes = decision["after"]["boxes"]
        used = sorted({self.labels[box["label"]] for box in boxes})
        line = item.line.to_json()
        line[self.attr]["annotations"] = [
            {"class_id": self.labels[b["label"]], **{k: b[k] for k in ("left", "top", "width", "height")}}
            for b in boxes
        ]
        metadata = line[f"{self.attr}-metadata"]
        metadata["objects"] = [{"confidence": 1.0} for _ in boxes]
        metadata["class-map"] = {str(class_id): self.label_names[class_id] for class_id in used}
        metadata["human-annotated"] = "yes"
        metadata["creation-date"] = decision["at"]
        metadata[ADJUSTMENT_STATUS] = "adjusted"
        AugmentedLine.from_json(line, self.attr)  # a fixed line is checked like any line read
        return line

    @property
    def uris(self) -> dict[str, str]:
        return {
            "reviewed": self.out_store.uri(self.out_key),
            "rejected": self.out_store.uri(self.rejected_key),
            "decisions": self.out_store.uri(self.log_key),
        }


def _latest_attr(store: ObjectStore, key: str) -> str:
    """The last object-detection attribute of the manifest's first line (a chain's latest job)."""
    for _, raw in read_lines(store, key):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            break  # read_augmented_manifest names the bad line
        attrs = detection_attrs(line) if isinstance(line, dict) else []
        if attrs:
            return attrs[-1]
        break
    raise InputError(
        f"{store.uri(key)}: the first line has no bounding-box label attribute",
        hint="is it an augmented (output) manifest? name the attribute with --attr",
    )


def _label_ids(items: list[Item]) -> dict[str, int]:
    """Every label of the class-maps and its class id; InputError when two lines disagree."""
    labels: dict[str, int] = {}
    for item in items:
        for class_id, name in item.line.metadata.class_map.items():
            if labels.setdefault(name, int(class_id)) != int(class_id):
                raise InputError(
                    f"line {item.index + 1}: class-map gives {name!r} class_id {class_id}, "
                    f"an earlier line {labels[name]}"
                )
    return dict(sorted(labels.items(), key=lambda entry: entry[1]))


def _disagreement(consensus: list[dict], workers: Mapping[str, list[dict]]) -> float:
    """1 - the workers' mean F1 against the consensus (same label, IoU >= MATCH_IOU); 0 without answers."""
    if not workers:
        return 0.0
    scores = [_f1(boxes, consensus) for boxes in workers.values()]
    return 1.0 - sum(scores) / len(scores)


def _votes(box: dict, workers: Mapping[str, list[dict]]) -> int:
    """How many workers drew a box of the consensus box's label at IoU >= MATCH_IOU with it."""
    drawn = [[b for b in boxes if b["label"] == box["label"]] for boxes in workers.values()]
    return sum(
        1 for boxes in drawn if boxes and float(box_iou(_xyxy([box]), _xyxy(boxes)).max()) >= MATCH_IOU
    )


def _xyxy(boxes: list[dict]) -> np.ndarray:
    return np.array(
        [[b["left"], b["top"], b["left"] + b["width"], b["top"] + b["height"]] for b in boxes], float
    )


def _f1(boxes: list[dict], reference: list[dict]) -> float:
    # Built without validation: a consensus box read from a manifest may be 0 pixels wide.
    drawn = [Box.model_construct(**{k: b[k] for k in BOX_KEYS}) for b in boxes]
    truth = [Box.model_construct(**{k: b[k] for k in BOX_KEYS}) for b in reference]
    return score_gold(drawn, truth, MATCH_IOU).f1


def _uncertainty_key(row: dict) -> tuple:
    lowest = min((box["confidence"] for box in row["boxes"]), default=1.0)
    return (min(lowest, 1.0 - row["disagreement"]), -len(row["flags"]), row["index"])

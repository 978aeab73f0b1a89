"""IoU-voting consolidation of crowd bounding boxes. Pure numpy/scipy: no I/O, no AWS."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ConsolidatedBox:
    """One consolidated object: its box, label and how much the crowd agreed on it."""

    label: str
    left: float
    top: float
    width: float
    height: float
    confidence: float
    support: float
    votes: int
    mean_iou: float
    workers: tuple[str, ...]


@dataclass
class ObjectResult:
    """The consolidated boxes of one dataset object, with diagnostics for review."""

    dataset_object_id: str
    source_ref: str
    image_width: int | None
    image_height: int | None
    boxes: list[ConsolidatedBox]
    n_workers: int
    flags: list[str] = field(default_factory=list)


@dataclass
class WorkerQuality:
    """A worker's agreement with the consensus over a whole job."""

    worker_id: str
    answers: int
    boxes: int
    matched: int
    recall: float
    precision: float
    mean_iou: float
    weight: float
    low_quality: bool

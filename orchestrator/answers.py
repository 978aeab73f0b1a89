"""Worker answers from every backend, parsed and validated into one model.

Every backend's raw answers become `ObjectAnswers` (Ground Truth's post-annotation payload shape):
one object, the workers who answered it, and each worker's boxes in pixels, top-left origin.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Box(BaseModel):
    """One box a worker drew: pixels, top-left origin, label as text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    left: float
    top: float
    width: float
    height: float


class WorkerAnswer(BaseModel):
    """One worker's answer for one object; an empty `boxes` list is a vote for "nothing to box"."""

    model_config = ConfigDict(extra="forbid")

    worker_id: str
    boxes: list[Box]
    image_width: int | None = None
    image_height: int | None = None
    submitted_at: str | None = None
    time_spent_seconds: float | None = None


class ObjectAnswers(BaseModel):
    """All answers for one dataset object (one manifest line)."""

    model_config = ConfigDict(extra="forbid")

    dataset_object_id: str
    source_ref: str
    answers: list[WorkerAnswer]

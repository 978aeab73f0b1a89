"""Reviewing submitted MTurk work: which assignments to approve, which to reject, and why.

`approve_all` approves every submission; an unreadable answer is paid and left out of the
consolidation. `agreement` consolidates what the object has so far and rejects only clear spam:
an unreadable answer, or, on an image where at least two workers agree on an object, boxes that
lie nowhere near (IoU below 0.1) any box any other worker drew. A worker who drew nothing, drew
sloppy boxes, or found an object most others missed is approved. A rejection always carries
feedback, which MTurk shows the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from orchestrator.consolidation import WorkerAnswer, box_iou, consolidate_image
from orchestrator.spec import ConsolidationSpec

ReviewPolicy = Literal["approve_all", "agreement"]

# A box overlapping a consensus box by less than this is "nowhere near" it.
SPAM_IOU = 0.1
# Workers who must agree on an object before anyone's answer can be judged against it.
MIN_BACKERS = 2
UNREADABLE_FEEDBACK = (
    "Your submission held no readable bounding-box answer, so it was rejected. Please draw a box "
    "around each object on the task page and press Submit."
)
SPAM_FEEDBACK = (
    "None of your boxes was near the objects that the other workers boxed in this image, so the "
    "submission was rejected. Please draw tight boxes around the objects the instructions name."
)


@dataclass(frozen=True)
class Submission:
    """One submitted assignment; `answer` is None when the parser could not read it."""

    assignment_id: str
    worker_id: str
    answer: WorkerAnswer | None


@dataclass(frozen=True)
class Verdict:
    approve: bool
    feedback: str | None = None


def review(
    policy: ReviewPolicy,
    submissions: list[Submission],
    answers: list[WorkerAnswer],
    labels: list[str],
    consolidation: ConsolidationSpec,
) -> dict[str, Verdict]:
    """A verdict for each submission, by assignment id.

    `answers` are all readable answers the object has that were not rejected, including those
    under review, which form the consensus.
    """
    if policy == "approve_all":
        return {s.assignment_id: Verdict(approve=True) for s in submissions}
    # Objects that at least two workers agree on: spammers, however many, cannot hide them.
    agreed = bool(
        len(answers) > MIN_BACKERS
        and any(answer.boxes for answer in answers)
        and consolidate_image(
            answers,
            labels=labels,
            iou_threshold=consolidation.iou_threshold,
            min_support=MIN_BACKERS / len(answers),
            coordinates=consolidation.coordinates,
        )
    )
    verdicts = {}
    for submission in submissions:
        if submission.answer is None:
            verdicts[submission.assignment_id] = Verdict(approve=False, feedback=UNREADABLE_FEEDBACK)
        elif agreed and _nowhere_near_others(submission.answer, answers):
            verdicts[submission.assignment_id] = Verdict(approve=False, feedback=SPAM_FEEDBACK)
        else:
            verdicts[submission.assignment_id] = Verdict(approve=True)
    return verdicts


def _xyxy(boxes) -> np.ndarray:
    return np.array([[b.left, b.top, b.left + b.width, b.top + b.height] for b in boxes]).reshape(-1, 4)


def _nowhere_near_others(answer: WorkerAnswer, answers: list[WorkerAnswer]) -> bool:
    """The worker drew boxes, and none comes near a box that another worker drew."""
    others = [box for other in answers if other.worker_id != answer.worker_id for box in other.boxes]
    if not answer.boxes or not others:
        return False
    return bool((box_iou(_xyxy(answer.boxes), _xyxy(others)) < SPAM_IOU).all())

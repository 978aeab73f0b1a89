"""Scoring a worker against gold tasks (images whose true boxes are known), and gold-based weights.

A worker's boxes on a gold image are matched one to one against the known boxes, best IoU first,
in three rounds: same label at IoU >= the threshold (matched), another label at IoU >= the threshold
(wrong label), same label with some overlap below the threshold (mislocated). Known boxes left over
are missed; drawn boxes left over are false. F1 counts matched boxes only (docs/consolidation.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from orchestrator.consolidation.answers import Box
from orchestrator.consolidation.iou import box_iou

# How many boxes of agreement evidence a gold weight is blended with: a worker with fewer gold
# boxes than this is weighted mostly by agreement, one with many mostly by gold.
GOLD_PRIOR_BOXES = 10.0


@dataclass
class GoldScore:
    """A worker's errors over the gold tasks it answered; add two with `+`."""

    tasks: int = 0
    truth: int = 0
    drawn: int = 0
    matched: int = 0
    missed: int = 0
    false: int = 0
    mislocated: int = 0
    wrong_label: int = 0

    @property
    def f1(self) -> float:
        """2 · matched / (drawn + truth); 1.0 when the gold images were empty and nothing was drawn."""
        total = self.drawn + self.truth
        return 2 * self.matched / total if total else 1.0

    @property
    def evidence(self) -> int:
        """Boxes drawn or expected: how much the score rests on."""
        return self.drawn + self.truth

    def __add__(self, other: GoldScore) -> GoldScore:
        return GoldScore(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @classmethod
    def from_dict(cls, data: Mapping) -> GoldScore:
        """The score `as_dict` wrote (its `f1` is recomputed)."""
        return cls(**{f.name: int(data[f.name]) for f in fields(cls)})

    def as_dict(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "f1": round(self.f1, 4)}


def too_low(score: GoldScore, min_f1: float | None, min_seen: int) -> str | None:
    """Why a worker is removed by `gold_min_f1` (docs/portal.md, "Gold tasks"), or None if it stays."""
    if min_f1 is None or score.tasks < min_seen or score.f1 >= min_f1:
        return None
    return (
        f"gold F1 {score.f1:.2f} below {min_f1} after {score.tasks} gold tasks "
        f"(missed {score.missed}, false {score.false}, mislocated {score.mislocated}, "
        f"wrong label {score.wrong_label})"
    )


def score_gold(drawn: Sequence[Box], truth: Sequence[Box], iou_threshold: float = 0.5) -> GoldScore:
    """One gold task: the worker's boxes `drawn` against the known boxes `truth`."""
    overlap = box_iou(_xyxy(drawn), _xyxy(truth))
    same = np.array([[a.label == b.label for b in truth] for a in drawn], dtype=bool).reshape(overlap.shape)
    free_drawn = np.ones(len(drawn), dtype=bool)
    free_truth = np.ones(len(truth), dtype=bool)

    def match(allowed: np.ndarray) -> int:
        candidates = np.where(allowed & free_drawn[:, None] & free_truth[None, :], overlap, -1.0)
        found = 0
        while candidates.size and candidates.max() >= 0:
            i, j = np.unravel_index(candidates.argmax(), candidates.shape)
            free_drawn[i], free_truth[j] = False, False
            candidates[i, :], candidates[:, j] = -1.0, -1.0
            found += 1
        return found

    at_threshold = overlap >= iou_threshold
    matched = match(same & at_threshold)
    wrong_label = match(~same & at_threshold)
    mislocated = match(same & (overlap > 0))
    return GoldScore(
        tasks=1,
        truth=len(truth),
        drawn=len(drawn),
        matched=matched,
        missed=int(free_truth.sum()),
        false=int(free_drawn.sum()),
        mislocated=mislocated,
        wrong_label=wrong_label,
    )


def gold_weight(score: GoldScore | None, agreement: float) -> float:
    """A worker's vote weight: its gold F1 where gold evidence is ample, its agreement F1 where it is
    thin, blended by the number of gold boxes against GOLD_PRIOR_BOXES."""
    if score is None:
        return agreement
    return (score.evidence * score.f1 + GOLD_PRIOR_BOXES * agreement) / (score.evidence + GOLD_PRIOR_BOXES)


def gold_weights(
    scores: Mapping[str, GoldScore], workers: Sequence[str], agreement: np.ndarray
) -> np.ndarray:
    """`gold_weight` for each of `workers`, whose agreement F1s are `agreement` (same order)."""
    return np.array([gold_weight(scores.get(w), float(a)) for w, a in zip(workers, agreement, strict=True)])


def _xyxy(boxes: Sequence[Box]) -> np.ndarray:
    return np.array([(b.left, b.top, b.left + b.width, b.top + b.height) for b in boxes], float).reshape(
        -1, 4
    )

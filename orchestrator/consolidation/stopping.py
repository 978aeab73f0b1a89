"""Adaptive overlap: decide per object whether its answers so far settle it or it needs one more.

Pure: no I/O, no AWS. The rule looks at one object's answers and the job's worker weights only, so
the same answers give the same decision in any order and on every workforce. Why it is shaped this
way, and the figures behind its defaults: docs/consolidation.md (Adaptive overlap).

An object with fewer than `min_workers` answers needs more; one with `max_workers` or more is
settled. In between, its answers are clustered as by `IoUVote` with the given weights, keeping every
cluster (support 0 and up), and the object needs one more answer when any cluster is:

- `undecided_box`: its weighted support lies within `support_margin` of `min_support`, so one more
  answer could keep or drop it;
- `one_worker_box`: kept on one worker's word (possible when the others weigh little);
- `label_disagreement`: kept, but the weighted share of its members giving the winning label is
  below `min_label_share`;
- `loose_edges`: kept, with (1 - agreement) / (members - 1) above `edge_tolerance`, agreement
  being the weighted mean IoU over pairs of its members (as in the box's confidence).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.consolidation.answers import ObjectAnswers
from orchestrator.consolidation.iou_vote import ConsolidatedBox, Coordinates, consolidate_objects

__all__ = ["EXPECTED_EXTRA_SHARE", "StopDecision", "StoppingRule", "expected_answers"]

_TOL = 1e-9
EXPECTED_EXTRA_SHARE = 0.34
"""Share of the answers between `min_workers` and `max_workers` the default rule asked for on
pedestrians-dev: 3.68 answers per image with 2 to 7 (docs/benchmarks.md, Adaptive overlap)."""


def expected_answers(min_workers: int, max_workers: int) -> float:
    """Answers per object to expect from the default rule, by the pedestrians-dev benchmark; a crowd
    that disagrees more spends more, up to `max_workers`."""
    return min_workers + EXPECTED_EXTRA_SHARE * (max_workers - min_workers)


@dataclass(frozen=True)
class StopDecision:
    """Whether one object needs another answer, and why (the first reason found, in the order of the
    module docstring; "settled" or "max_workers" when it does not)."""

    dataset_object_id: str
    answers: int
    needs_more: bool
    reason: str


class StoppingRule:
    """Ask for another worker only where the crowd disagrees (crowd-kit style: `fit`, `fit_predict`).

    Parameters (each trades answers against quality):
        min_workers: answers every object gets before the rule looks at it.
        max_workers: answers after which an object is settled whatever they say (the cost ceiling).
        edge_tolerance: how loose a kept box's members may be, as (1 - their mean pairwise IoU) per
            member beyond the first. Lower asks for more answers where boxes are loose: tighter
            boxes, more answers. The main parameter.
        support_margin: a cluster whose weighted support is within this of `min_support` is
            undecided. Higher asks more often where some workers drew a box and others did not.
        min_label_share: weighted share of a kept box's members that must give its winning label.
        iou_threshold, min_support, coordinates: those of the `IoUVote` that consolidates the job.

    `fit(objects, weights)` takes the job's worker weights (`IoUVote().fit(job).skills_`; None weighs
    everyone 1) and sets `decisions_`.

    Example:
        >>> from orchestrator.consolidation import Box, ObjectAnswers, StoppingRule, WorkerAnswer
        >>> def answer(worker, *lefts):
        ...     return WorkerAnswer(worker_id=worker, boxes=[Box(label="car", left=x, top=10, width=40,
        ...                         height=20) for x in lefts])
        >>> agreed = ObjectAnswers(dataset_object_id="a", source_ref="s3://b/a.jpg",
        ...                        answers=[answer("u", 10), answer("v", 11)])
        >>> one_saw_more = ObjectAnswers(dataset_object_id="b", source_ref="s3://b/b.jpg",
        ...                              answers=[answer("u", 10), answer("v", 11, 300)])
        >>> [(d.dataset_object_id, d.needs_more, d.reason) for d in StoppingRule().fit_predict(
        ...     [agreed, one_saw_more], labels=["car"])]
        [('a', False, 'settled'), ('b', True, 'undecided_box')]
    """

    decisions_: list[StopDecision]
    """One `StopDecision` per input object, in input order."""

    def __init__(
        self,
        min_workers: int = 2,
        max_workers: int = 7,
        edge_tolerance: float = 0.12,
        support_margin: float = 0.1,
        min_label_share: float = 0.6,
        iou_threshold: float = 0.5,
        min_support: float = 0.5,
        coordinates: Coordinates = "median",
    ) -> None:
        if min_workers < 1:
            raise ValueError(f"min_workers must be >= 1, got {min_workers}")
        if max_workers < min_workers:
            raise ValueError(f"max_workers must be >= min_workers ({min_workers}), got {max_workers}")
        if not 0.0 <= edge_tolerance <= 1.0:
            raise ValueError(f"edge_tolerance must be in [0, 1], got {edge_tolerance}")
        if not 0.0 <= support_margin <= 0.5:
            raise ValueError(f"support_margin must be in [0, 0.5], got {support_margin}")
        if not 0.0 <= min_label_share <= 1.0:
            raise ValueError(f"min_label_share must be in [0, 1], got {min_label_share}")
        consolidate_objects([], iou_threshold=iou_threshold, min_support=min_support, coordinates=coordinates)
        self.min_workers = min_workers
        self.max_workers = max_workers
        self.edge_tolerance = edge_tolerance
        self.support_margin = support_margin
        self.min_label_share = min_label_share
        self.iou_threshold = iou_threshold
        self.min_support = min_support
        self.coordinates = coordinates

    def fit(
        self,
        objects: Sequence[ObjectAnswers],
        weights: Mapping[str, float] | None = None,
        labels: list[str] | None = None,
    ) -> StoppingRule:
        """Decide for every object; see the class docstring."""
        between = [obj for obj in objects if self.min_workers <= len(obj.answers) < self.max_workers]
        # Every cluster is kept (support 0 and up) so that the ones the vote drops can be judged too.
        clusters = consolidate_objects(
            between,
            weights,
            labels=labels,
            iou_threshold=self.iou_threshold,
            min_support=0.0,
            coordinates=self.coordinates,
        )
        reasons = iter([self._reason(result.boxes) for result in clusters])
        self.decisions_ = []
        for obj in objects:
            n = len(obj.answers)
            if n < self.min_workers:
                reason = "min_workers"
            elif n >= self.max_workers:
                reason = "max_workers"
            else:
                reason = next(reasons)
            self.decisions_.append(
                StopDecision(obj.dataset_object_id, n, reason not in ("settled", "max_workers"), reason)
            )
        return self

    def fit_predict(
        self,
        objects: Sequence[ObjectAnswers],
        weights: Mapping[str, float] | None = None,
        labels: list[str] | None = None,
    ) -> list[StopDecision]:
        """`fit`, then return `decisions_`."""
        return self.fit(objects, weights, labels).decisions_

    def _reason(self, boxes: Sequence[ConsolidatedBox]) -> str:
        kept = [b for b in boxes if b.support >= self.min_support - _TOL]
        if any(abs(b.support - self.min_support) < self.support_margin for b in boxes):
            return "undecided_box"
        if any(b.votes < 2 for b in kept):
            return "one_worker_box"
        if any(b.label_share < self.min_label_share - _TOL for b in kept):
            return "label_disagreement"
        # The consensus edge is a median (or mean) of the members: its error shrinks as members are
        # added, so the pairwise disagreement allowed grows with them (docs/consolidation.md).
        if any((1.0 - b.confidence / b.support) / (b.votes - 1) > self.edge_tolerance + _TOL for b in kept):
            return "loose_edges"
        return "settled"

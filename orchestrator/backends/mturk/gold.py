"""Gold tasks on MTurk (docs/mturk.md, "Gold tasks").

Each gold image is one more HIT of the job's HIT type, so workers cannot tell it from the others;
its object id (`gold-<n>`) stays in the requester annotation, which workers never see. Gold HITs
are kept apart from the job's HITs in the record (`gold_hits`), so their answers never reach the
job layer. Every gold assignment is approved (it is real work) and scored once; with `gold_min_f1`
a worker below it after `gold_min_seen` gold tasks loses the private pool's qualification, and the
reason is kept in the record (`gold_revoked`) and in the workers report's gold columns.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from orchestrator.backends.mturk.hits import first_assignments
from orchestrator.consolidation import Box, GoldScore, WorkerAnswer, score_gold, too_low
from orchestrator.outputs import GOLD_ID_PREFIX, GoldItem

if TYPE_CHECKING:
    from orchestrator.spec import JobSpec

GOLD_HITS = "gold_hits"
GOLD_SCORED = "gold_scored"


def gold_object_id(n: int) -> str:
    return f"{GOLD_ID_PREFIX}{n}"


def gold_assignments(spec: JobSpec, n_objects: int, n_gold: int) -> int:
    """Assignments per gold HIT: the job's answers times `gold_rate`, spread over the gold images, and
    at least as many as a job HIT asks for, so every worker may meet gold."""
    rate = spec.quality.gold_rate if spec.quality else 0.0
    spread = math.ceil(rate * n_objects * first_assignments(spec) / max(n_gold, 1))
    return max(first_assignments(spec), spread)


def score(answer: WorkerAnswer, item: GoldItem) -> GoldScore:
    """The answer's errors against the gold image's known boxes (the portal's IoU threshold, 0.5)."""
    return score_gold(answer.boxes, [Box.model_construct(**box) for box in item.boxes])


def worker_scores(scored: dict[str, list]) -> dict[str, GoldScore]:
    """Worker id -> its summed gold score, from `gold_scored` (assignment id -> [worker, score])."""
    totals: dict[str, GoldScore] = {}
    for worker, data in scored.values():
        totals[worker] = totals.get(worker, GoldScore()) + GoldScore.from_dict(data)
    return totals


def below_the_bar(spec: JobSpec, scores: dict[str, GoldScore], revoked: dict[str, str]) -> dict[str, str]:
    """Workers `gold_min_f1` removes now (not already removed), with the reason for the ML lead."""
    rules = spec.quality
    if rules is None:
        return {}
    reasons = {w: too_low(s, rules.gold_min_f1, rules.gold_min_seen) for w, s in sorted(scores.items())}
    return {w: reason for w, reason in reasons.items() if reason is not None and w not in revoked}

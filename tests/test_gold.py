"""Gold scoring (orchestrator/consolidation/gold.py): each kind of error, and gold-first weights."""

from __future__ import annotations

import pytest

from orchestrator.consolidation import (
    Box,
    GoldScore,
    IoUVote,
    ObjectAnswers,
    WorkerAnswer,
    gold_weight,
    score_gold,
)
from orchestrator.consolidation.gold import GOLD_PRIOR_BOXES


def box(label: str, left: float, top: float = 10, width: float = 40, height: float = 40) -> Box:
    return Box(label=label, left=left, top=top, width=width, height=height)


TRUTH = [box("car", 0), box("car", 100), box("person", 200), box("person", 300)]


def test_each_error_is_counted_once_in_its_own_kind():
    drawn = [
        box("car", 2),  # matched
        box("person", 101),  # right place, wrong label
        box("person", 225),  # same label, IoU 15/65 < 0.5: mislocated
        box("car", 500),  # nothing there: false
    ]  # and the person at 300 is missed
    score = score_gold(drawn, TRUTH)
    assert score.as_dict() == {
        "tasks": 1,
        "truth": 4,
        "drawn": 4,
        "matched": 1,
        "missed": 1,
        "false": 1,
        "mislocated": 1,
        "wrong_label": 1,
        "f1": 0.25,
    }


def test_empty_answers_and_empty_images():
    assert score_gold([], TRUTH).as_dict()["missed"] == 4 and score_gold([], TRUTH).f1 == 0.0
    spam = score_gold([box("car", 600), box("car", 700)], [])
    assert (spam.false, spam.f1) == (2, 0.0)
    assert score_gold([], []).f1 == 1.0  # nothing to box, nothing drawn


def test_matching_is_one_to_one_and_best_first():
    # Two drawn boxes over one true box: the closer one matches, the other is false, not a second match.
    score = score_gold([box("car", 5), box("car", 1)], [box("car", 0)])
    assert (score.matched, score.false, score.mislocated, score.wrong_label) == (1, 1, 0, 0)


def test_scores_add_up_and_weights_put_gold_first():
    total = score_gold([box("car", 0)], [box("car", 0)]) + score_gold([], [box("car", 0)])
    assert (total.tasks, total.matched, total.missed, round(total.f1, 4)) == (2, 1, 1, 0.6667)
    assert gold_weight(None, 0.8) == 0.8
    thin = GoldScore(tasks=1, truth=1, drawn=1, matched=0, missed=1, false=1)
    ample = GoldScore(tasks=30, truth=100, drawn=100, matched=0, missed=100, false=100)
    assert gold_weight(thin, 0.9) == pytest.approx(0.9 * GOLD_PRIOR_BOXES / (2 + GOLD_PRIOR_BOXES))
    assert gold_weight(ample, 0.9) < 0.05


def test_iou_vote_takes_gold_weights_over_a_colluding_majority():
    """Three workers who agree on a wrong box outvote two careful ones by agreement, not with gold."""

    def answer(worker: str, left: float) -> WorkerAnswer:
        return WorkerAnswer(worker_id=worker, boxes=[box("car", left)])

    images = [
        ObjectAnswers(
            dataset_object_id=str(n),
            source_ref=f"s3://b/{n}.jpg",
            answers=[
                answer("good1", 0),
                answer("good2", 1),
                answer("bad1", 300),
                answer("bad2", 301),
                answer("bad3", 302),
            ],
        )
        for n in range(4)
    ]
    by_agreement = IoUVote().fit_predict(images, ["car"])
    assert [b.left for b in by_agreement[0].boxes] == [301.0]
    perfect = GoldScore(tasks=10, truth=40, drawn=40, matched=40)
    useless = GoldScore(tasks=10, truth=40, drawn=40, matched=0, missed=40, false=40)
    gold = {"good1": perfect, "good2": perfect, "bad1": useless, "bad2": useless, "bad3": useless}
    vote = IoUVote().fit(images, ["car"], gold=gold)
    assert [b.left for b in vote.results_[0].boxes] == [0.5]
    assert vote.skills_["good1"] > 0.7 > 0.3 > vote.skills_["bad1"]

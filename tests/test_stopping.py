"""The adaptive stopping rule: one more answer only where the crowd disagrees."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.consolidation import IoUVote, StoppingRule, stopping
from tests.test_consolidation import LABELS, answer, crowd, image


def decide(*objects, weights=None, **params):
    return [
        (d.needs_more, d.reason) for d in StoppingRule(**params).fit_predict(list(objects), weights, LABELS)
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"min_workers": 0},
        {"max_workers": 1},
        {"edge_tolerance": -0.1},
        {"support_margin": 0.6},
        {"min_label_share": 1.5},
        {"iou_threshold": 0.0},
        {"min_support": 2.0},
        {"coordinates": "mode"},
    ],
)
def test_bad_parameters_are_refused(params):
    with pytest.raises(ValueError, match=next(iter(params))):
        StoppingRule(**params)


def test_an_object_without_answers_or_below_the_minimum_needs_more():
    assert decide(image("0"), image("1", answer("a", (10, 10, 50, 50)))) == [
        (True, "min_workers"),
        (True, "min_workers"),
    ]


def test_an_object_at_the_maximum_is_settled_whatever_the_workers_say():
    scattered = image("0", answer("a", (0, 0, 50, 50)), answer("b", (500, 500, 50, 50)))
    assert decide(scattered, max_workers=2) == [(False, "max_workers")]
    assert decide(scattered, max_workers=3) == [(True, "undecided_box")]


def test_two_tight_agreeing_workers_settle_an_object_and_two_empty_answers_too():
    agreed = image("0", answer("a", (100, 100, 50, 80)), answer("b", (101, 100, 50, 80)))
    empty = image("1", answer("a"), answer("b"))
    assert decide(agreed, empty) == [(False, "settled"), (False, "settled")]


def test_a_box_one_of_two_workers_drew_is_undecided_and_a_third_worker_decides_it():
    two = image("0", answer("a", (100, 100, 50, 80)), answer("b", (100, 100, 50, 80), (600, 600, 50, 50)))
    three = image("0", *two.answers, answer("c", (100, 100, 50, 80)))
    assert decide(two) == [(True, "undecided_box")]
    assert decide(three) == [(False, "settled")]
    # A margin wider than 1/6 leaves a 2-to-1 vote undecided as well.
    assert decide(three, support_margin=0.2) == [(True, "undecided_box")]


def test_loose_edges_ask_for_more_and_the_allowance_grows_with_the_members():
    # Pairwise IoU 0.8: allowed with 3 members (0.2 / 2 = 0.10), not with 2 (0.2 / 1).
    loose = image("0", answer("a", (100, 100, 100, 100)), answer("b", (100, 100, 125, 100)))
    assert decide(loose) == [(True, "loose_edges")]
    assert decide(loose, edge_tolerance=0.25) == [(False, "settled")]
    three = image(
        "0",
        answer("a", (100, 100, 100, 100)),
        answer("b", (100, 100, 125, 100)),
        answer("c", (100, 100, 100, 100)),
    )
    # IoUs 0.8, 0.8, 1.0: agreement 0.867, (1 - 0.867) / 2 = 0.067.
    assert decide(three) == [(False, "settled")]
    assert decide(three, edge_tolerance=0.05) == [(True, "loose_edges")]


def test_workers_disagreeing_on_the_label_ask_for_more():
    split = image("0", answer("a", ("car", 100, 100, 50, 80)), answer("b", ("sign", 100, 100, 50, 80)))
    assert decide(split) == [(True, "label_disagreement")]
    assert decide(split, min_label_share=0.5) == [(False, "settled")]


def test_a_spammer_neither_settles_nor_outvotes_a_careful_worker():
    # The spammer's random box is voted out by weight, but the careful worker's box then stands on
    # one worker's word: another answer is needed.
    with_spammer = image("0", answer("good", (100, 100, 50, 80)), answer("spam", (700, 20, 90, 30)))
    weights = {"good": 0.9, "spam": 0.01}
    assert decide(with_spammer, weights=weights) == [(True, "one_worker_box")]
    assert decide(with_spammer) == [(True, "undecided_box")]


def test_weights_come_from_the_whole_job():
    # Worker "s" disagrees with everyone on four objects; on the fifth, "s" and "a" disagree and
    # the job's weights, not the object alone, tell whose box is the doubtful one.
    objects = [
        image(
            str(i),
            answer("a", (10 * i, 10, 50, 50)),
            answer("b", (10 * i, 10, 50, 50)),
            answer("s", (900, 900, 20, 20)),
        )
        for i in range(4)
    ]
    objects.append(image("4", answer("a", (100, 100, 50, 80)), answer("s")))
    weights = IoUVote().fit(objects, labels=LABELS).skills_
    assert weights["s"] < 0.1 < weights["a"]
    assert decide(objects[4], weights=weights) == [(True, "one_worker_box")]


def test_the_docstring_example_runs():
    outcome = doctest.testmod(stopping)
    assert outcome.attempted > 0 and outcome.failed == 0


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(crowd(), st.randoms(use_true_random=False), st.floats(0.0, 0.3), st.floats(0.0, 0.3))
def test_decisions_do_not_depend_on_the_order_of_objects_workers_or_boxes(objects, rnd, tolerance, margin):
    weights = IoUVote().fit(objects, labels=LABELS).skills_
    shuffled = []
    for obj in rnd.sample(objects, len(objects)):
        answers = [a.model_copy(update={"boxes": rnd.sample(a.boxes, len(a.boxes))}) for a in obj.answers]
        shuffled.append(obj.model_copy(update={"answers": rnd.sample(answers, len(answers))}))
    rule = {"edge_tolerance": tolerance, "support_margin": margin, "max_workers": 5}
    first = StoppingRule(**rule).fit_predict(objects, weights, LABELS)
    second = StoppingRule(**rule).fit_predict(shuffled, dict(reversed(weights.items())), LABELS)
    by_id = {d.dataset_object_id: d for d in second}
    assert first == [by_id[d.dataset_object_id] for d in first]

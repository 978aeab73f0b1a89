"""IoU voting on hand-built crowds whose right answer is known, and its order independence."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.consolidation import Box, IoUVote, ObjectAnswers, WorkerAnswer, consolidate_image, iou_vote

LABELS = ["car", "sign"]


def answer(worker: str, *boxes: tuple) -> WorkerAnswer:
    """A worker's answer; each box is (left, top, width, height) or (label, left, top, width, height)."""
    return WorkerAnswer(
        worker_id=worker,
        boxes=[
            Box(
                **dict(
                    zip(
                        ("label", "left", "top", "width", "height"),
                        b if len(b) == 5 else ("car", *b),
                        strict=True,
                    )
                )
            )
            for b in boxes
        ],
        image_width=1000,
        image_height=1000,
    )


def image(object_id: str, *answers: WorkerAnswer) -> ObjectAnswers:
    return ObjectAnswers(
        dataset_object_id=object_id, source_ref=f"s3://b/{object_id}.jpg", answers=list(answers)
    )


def vote(*objects: ObjectAnswers, labels: list[str] | None = LABELS, **params) -> IoUVote:
    return IoUVote(**params).fit(list(objects), labels=labels)


def ltwh(b) -> tuple:
    return (b.label, b.left, b.top, b.width, b.height)


def test_a_unanimous_crowd_gives_its_box_with_full_confidence():
    model = vote(image("0", *(answer(w, (100, 100, 50, 80)) for w in "abcde")))
    (result,) = model.results_
    (b,) = result.boxes
    assert ltwh(b) == ("car", 100, 100, 50, 80)
    assert (b.support, b.confidence, b.mean_iou, b.votes, b.workers) == (1.0, 1.0, 1.0, 5, tuple("abcde"))
    assert (result.n_workers, result.flags, result.image_width) == (5, [], 1000)


def test_one_sloppy_worker_does_not_move_the_median_but_moves_the_mean():
    crowd = image("0", *(answer(w, (100, 100, 100, 100)) for w in "abcd"), answer("e", (130, 100, 100, 100)))
    (median,) = vote(crowd).results_[0].boxes
    (mean,) = vote(crowd, coordinates="mean").results_[0].boxes
    assert (median.left, median.votes) == (100, 5)
    assert mean.left == pytest.approx(106)
    assert median.confidence == pytest.approx(median.support * median_pairwise_iou(crowd))


def median_pairwise_iou(crowd: ObjectAnswers) -> float:
    """Mean IoU over pairs of distinct workers: the agreement factor of the confidence."""
    boxes = [a.boxes[0] for a in crowd.answers]
    ious = [iou(p, q) for i, p in enumerate(boxes) for q in boxes[i + 1 :]]
    return sum(ious) / len(ious)


def iou(p: Box, q: Box) -> float:
    w = max(0.0, min(p.left + p.width, q.left + q.width) - max(p.left, q.left))
    h = max(0.0, min(p.top + p.height, q.top + q.height) - max(p.top, q.top))
    return w * h / (p.width * p.height + q.width * q.height - w * h)


def spammer_job() -> list[ObjectAnswers]:
    """Ten images that a, b, c box alike while s1 and s2 draw somewhere else, then an image whose
    object only a and b drew."""
    objects = [
        image(
            str(i),
            *(answer(w, (10 * i, 100, 80, 80)) for w in "abc"),
            answer("s1", (500, 20 * i, 60, 60)),
            answer("s2", (800, 20 * i, 60, 60)),
        )
        for i in range(10)
    ]
    objects.append(
        image(
            "hard",
            answer("a", (300, 300, 40, 40)),
            answer("b", (302, 300, 40, 40)),
            answer("c"),
            answer("s1", (600, 600, 90, 90)),
            answer("s2", (10, 700, 90, 90)),
        )
    )
    return objects


def test_spammers_are_down_weighted_under_agreement_and_the_object_they_outvoted_returns():
    unweighted = vote(*spammer_job(), weighting="none")
    weighted = vote(*spammer_job(), weighting="agreement")
    assert unweighted.results_[-1].boxes == []  # 2 of 5 workers: below half
    (recovered,) = weighted.results_[-1].boxes
    assert (recovered.left, recovered.workers) == (301, ("a", "b"))
    # Pass 1 kept nothing on "hard", so a and b drew one box too many there and c was right.
    skill = 20 / 21
    assert weighted.skills_ == pytest.approx(
        {"a": skill, "b": skill, "c": 1.0, "s1": iou_vote.MIN_WEIGHT, "s2": iou_vote.MIN_WEIGHT}
    )
    assert recovered.support == pytest.approx(2 * skill / (2 * skill + 1 + 2 * iou_vote.MIN_WEIGHT))
    assert set(unweighted.skills_.values()) == {1.0}
    assert [w for w, q in weighted.workers_.items() if q.low_quality] == ["s1", "s2"]
    assert all(len(r.boxes) == 1 for r in weighted.results_)


def test_min_support_is_the_share_of_workers_who_answered():
    crowd = image(
        "0", answer("a", (100, 100, 50, 50)), answer("b", (100, 100, 50, 50)), answer("c"), answer("d")
    )
    assert len(vote(crowd, weighting="none").results_[0].boxes) == 1  # 2 of 4 reach 0.5
    assert vote(crowd, weighting="none", min_support=0.51).results_[0].boxes == []
    lone = image("0", answer("a", (100, 100, 50, 50)), answer("b"), answer("c"))
    (b,) = vote(lone, weighting="none", min_support=0.0).results_[0].boxes
    assert (b.votes, b.support, b.confidence) == (1, pytest.approx(1 / 3), 0.0)


def test_the_label_is_the_majority_of_the_cluster_whatever_labels_were_drawn():
    crowd = image(
        "0",
        *(answer(w, ("car", 100, 100, 50, 50)) for w in "abc"),
        *(answer(w, ("sign", 101, 100, 50, 50)) for w in "de"),
    )
    result = vote(crowd).results_[0]
    (b,) = result.boxes  # class-agnostic: one object, not a car and a sign
    assert (b.label, b.votes) == ("car", 5)
    assert result.flags == ["label_disagreement"]
    assert vote(crowd).workers_["d"].matched == 0  # a box with the losing label is not a match


@pytest.mark.parametrize(
    ("labels", "winner"), [(["car", "sign"], "car"), (["sign", "car"], "sign"), (None, "car")]
)
def test_a_label_tie_goes_to_the_earlier_label(labels, winner):
    crowd = image(
        "0",
        *(
            answer(w, (lab, 100, 100, 50, 50))
            for w, lab in zip("abcd", ["sign", "car", "sign", "car"], strict=True)
        ),
    )
    assert vote(crowd, labels=labels, weighting="none").results_[0].boxes[0].label == winner


def test_empty_answers_are_votes_for_nothing():
    crowd = image(
        "0", answer("a", (100, 100, 50, 50)), answer("b", (100, 100, 50, 50)), *(answer(w) for w in "cde")
    )
    result = vote(crowd, weighting="none").results_[0]
    assert (result.boxes, result.flags) == ([], ["rejected_clusters"])


@pytest.mark.parametrize("weighting", ["none", "agreement"])
def test_a_crowd_that_drew_nothing_gives_no_boxes(weighting):
    model = vote(image("0", *(answer(w) for w in "abc")), image("1"), weighting=weighting)
    assert [r.boxes for r in model.results_] == [[], []]
    assert [r.flags for r in model.results_] == [[], ["no_answers"]]
    quality = model.workers_["a"]
    assert (quality.answers, quality.boxes, quality.recall, quality.precision, quality.low_quality) == (
        1,
        0,
        1.0,
        1.0,
        False,
    )
    assert model.skills_ == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_a_single_worker_gives_confidence_zero_as_ground_truth_does():
    result = vote(image("0", answer("a", (100, 100, 50, 50), (300, 300, 20, 20)))).results_[0]
    assert [(b.support, b.confidence, b.votes) for b in result.boxes] == [(1.0, 0.0, 1), (1.0, 0.0, 1)]
    assert result.flags == ["few_workers"]


def test_worker_quality_against_the_consensus():
    model = vote(
        image(
            "0",
            answer("a", (100, 100, 100, 100)),
            answer("b", (100, 100, 100, 100)),
            answer("c", (110, 100, 100, 100)),
        ),
        image(
            "1",
            answer("a", (400, 400, 60, 60)),
            answer("b", (400, 400, 60, 60)),
            answer("c", (700, 700, 50, 50)),
        ),
        weighting="none",
    )
    a, c = model.workers_["a"], model.workers_["c"]
    assert (a.answers, a.boxes, a.matched, a.recall, a.precision, a.mean_iou) == (2, 2, 2, 1.0, 1.0, 1.0)
    assert (c.answers, c.boxes, c.matched, c.recall, c.precision) == (2, 2, 1, 0.5, 0.5)
    assert c.mean_iou == pytest.approx(90 / 110)
    assert (a.weight, c.weight, c.low_quality) == (1.0, 1.0, False)  # 4 boxes: too little evidence to flag
    assert [len(r.boxes) for r in model.results_] == [1, 1]


def test_per_object_flags():
    model = vote(
        image("none"),
        image("pair", answer("a", (100, 100, 50, 50)), answer("b", (100, 100, 50, 50))),
        image(
            "split",
            *(answer(w, (100, 100, 50, 50)) for w in "abc"),
            answer("d"),
            answer("e", (600, 600, 50, 50)),
        ),
        weighting="none",
    )
    flags = {r.dataset_object_id: r.flags for r in model.results_}
    assert flags == {
        "none": ["no_answers"],
        "pair": ["few_workers"],
        "split": ["low_support", "rejected_clusters"],  # 3 of 5 = 0.6 < 0.7; e's box voted out
    }


@pytest.mark.parametrize(
    "params",
    [
        {"iou_threshold": 0.0},
        {"iou_threshold": 1.5},
        {"min_support": -0.1},
        {"min_support": 1.1},
        {"coordinates": "average"},
        {"weighting": "skill"},
    ],
)
def test_bad_parameters_are_refused(params):
    with pytest.raises(ValueError, match=next(iter(params))):
        IoUVote(**params)
    if "weighting" not in params:  # consolidate_image takes fixed weights instead
        with pytest.raises(ValueError, match=next(iter(params))):
            consolidate_image([], **params)


def test_a_worker_answering_twice_is_refused_rather_than_counted_twice():
    with pytest.raises(ValueError, match="answered twice"):
        vote(image("0", answer("a", (1, 1, 5, 5)), answer("a", (1, 1, 5, 5))))


def test_consolidate_image_with_fixed_weights():
    answers = [answer("a", (100, 100, 50, 50)), answer("b", (100, 100, 50, 50)), answer("c"), answer("d")]
    assert consolidate_image(answers, {"c": 0.0, "d": 0.0}, min_support=0.9)[0].votes == 2
    assert consolidate_image(answers, min_support=0.9) == []
    with pytest.raises(ValueError, match="finite"):
        consolidate_image(answers, {"a": -1.0})


def test_the_docstring_example_runs():
    outcome = doctest.testmod(iou_vote)
    assert outcome.attempted > 0 and outcome.failed == 0


# ----------------------------------------------------------------------------- order independence

# Boxes on a coarse grid in a small image: many overlaps, IoU ties and contested Hungarian matches.
GRID_BOX = st.tuples(
    st.sampled_from(LABELS),
    st.integers(0, 12).map(lambda v: 5.0 * v),
    st.integers(0, 12).map(lambda v: 5.0 * v),
    st.integers(2, 8).map(lambda v: 5.0 * v),
    st.integers(2, 8).map(lambda v: 5.0 * v),
)


@st.composite
def crowd(draw) -> list[ObjectAnswers]:
    workers = [f"w{i}" for i in range(draw(st.integers(1, 6)))]
    objects = []
    for i in range(draw(st.integers(1, 4))):
        chosen = draw(st.lists(st.sampled_from(workers), unique=True, max_size=len(workers)))
        objects.append(image(str(i), *(answer(w, *draw(st.lists(GRID_BOX, max_size=5))) for w in chosen)))
    return objects


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    crowd(),
    st.sampled_from(["none", "agreement"]),
    st.sampled_from(["median", "mean"]),
    st.randoms(use_true_random=False),
)
def test_the_result_does_not_depend_on_the_order_of_objects_workers_or_boxes(
    objects, weighting, coordinates, rnd
):
    shuffled = []
    for obj in rnd.sample(objects, len(objects)):
        answers = [a.model_copy(update={"boxes": rnd.sample(a.boxes, len(a.boxes))}) for a in obj.answers]
        shuffled.append(obj.model_copy(update={"answers": rnd.sample(answers, len(answers))}))
    first = IoUVote(weighting=weighting, coordinates=coordinates).fit(objects, labels=LABELS)
    second = IoUVote(weighting=weighting, coordinates=coordinates).fit(shuffled, labels=LABELS)
    by_id = {r.dataset_object_id: r for r in second.results_}
    assert first.results_ == [by_id[r.dataset_object_id] for r in first.results_]
    assert first.skills_ == second.skills_
    assert first.workers_ == second.workers_


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=30), st.lists(st.integers(0, 5), max_size=30), st.integers(1, 40))
def test_cross_pairs_a_block_at_a_time_are_the_same_pairs_in_the_same_order(image_a, image_b, block):
    import numpy as np

    a, b = np.array(image_a, dtype=np.int64), np.array(image_b, dtype=np.int64)
    whole = iou_vote._cross_pairs(a, b, 6)
    original = iou_vote.BLOCK_PAIRS
    iou_vote.BLOCK_PAIRS = block
    try:
        blocks = list(iou_vote._cross_pair_blocks(a, b, 6))
    finally:
        iou_vote.BLOCK_PAIRS = original
    largest_image = int((np.bincount(a, minlength=6) * np.bincount(b, minlength=6)).max())
    assert all(len(i) <= block + largest_image for i, _ in blocks)
    joined = [np.concatenate(side).tolist() for side in zip(*blocks, strict=True)]
    assert joined == [side.tolist() for side in whole]


def test_a_job_voted_in_blocks_of_a_few_pairs_gives_the_same_results(monkeypatch):
    from orchestrator.consolidation.simulated_crowd import CrowdSimulator, synthetic_dataset

    labels = ["class0", "class1"]
    objects = CrowdSimulator(3, labels=labels).simulate(synthetic_dataset(60, 4.0, 2, 3), workers_per_image=6)
    expected = IoUVote().fit(objects, labels=labels)
    monkeypatch.setattr(iou_vote, "BLOCK_PAIRS", 5)
    got = IoUVote().fit(objects, labels=labels)
    assert repr(got.results_) == repr(expected.results_) and got.workers_ == expected.workers_
    assert sum(len(r.boxes) for r in expected.results_) > 100


def test_iou_of_integer_pixels_and_of_two_single_boxes_is_a_float():
    import numpy as np

    from orchestrator.consolidation import box_iou
    from orchestrator.consolidation.iou import iou

    pixels = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 5, 15, 15], [20, 20, 30, 30]]))
    assert pixels.tolist() == [[25 / 175, 0.0]]
    assert float(iou(np.array([0, 0, 1, 1.0]), np.array([0, 0, 2, 2.0]))) == 0.25

"""IoU-voting consolidation of crowd bounding boxes. Pure numpy/scipy: no I/O, no AWS.

One voting pass over a job, with a weight w_j per worker (1 for everyone unless weighted):

1. Validate: boxes become x1, y1, x2, y2 with ordered corners, clipped to the image when its size is
   known; boxes left without area, non-finite or beyond `MAX_COORDINATE` are dropped, and so are
   boxes whose label is not in `labels`.
2. Canonical order: in each image workers are ranked by decreasing weight, then worker id, and
   boxes by coordinates, then label. Every later tie-break follows this order, so the result does
   not depend on the order of workers or boxes in the input.
3. Clustering, class-agnostic, at most one box per worker per cluster: the first-ranked worker's
   boxes start the clusters; each next worker's boxes are matched one-to-one to the clusters by
   maximum total IoU (Hungarian, scipy's `linear_sum_assignment`) over pairs with IoU >=
   `iou_threshold` against the cluster's running weighted mean box; unmatched boxes start new
   clusters. All images advance one worker per round, vectorized.
4. Merge: two clusters of an image that share no worker and whose weighted mean boxes overlap at
   IoU >= `iou_threshold` are merged, best pair first, until none is left (an early sloppy box can
   drag a cluster's mean away from the later boxes of the same object).
5. Support = sum of w_j over the cluster's workers / sum of w_j over every worker who answered the
   image, including those who drew nothing. Clusters with support >= `min_support` are kept.
6. Label = the label with the largest summed weight among the members; ties go to the earlier label
   in `labels` (alphabetical when `labels` is None).
7. Box = per edge (x1, y1, x2, y2), the median (or mean) of the members, unweighted: the weights
   decide which clusters are kept and their labels, not where the edges go.
8. Confidence = support x agreement, agreement = mean IoU over pairs of distinct members, each pair
   weighted by w_i x w_j; 0 for a one-member cluster, so a box drawn by a single worker scores 0.00
   as in Ground Truth.

Weighting "agreement" runs the pass twice: pass 1 with w = 1, then every worker's F1 against the
pass-1 consensus over the whole job, F1 = 2 x matched / (boxes drawn + consensus boxes on the images
the worker answered) (1 when both are 0), floored at `MIN_WEIGHT`, is its w in pass 2. A box is
matched when its cluster was kept and it carries the winning label.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat
from typing import Literal

import numpy as np

from orchestrator.consolidation.answers import MAX_COORDINATE, AnswerColumns, ObjectAnswers, WorkerAnswer
from orchestrator.consolidation.assignment import linear_sum_assignment
from orchestrator.consolidation.gold import GoldScore, gold_weights
from orchestrator.consolidation.iou import area, edge_iou
from orchestrator.consolidation.iou import iou as paired_iou

Coordinates = Literal["median", "mean"]
Weighting = Literal["none", "agreement"]

MIN_WEIGHT = 0.01  # a worker's weight floor: keeps supports defined when every worker scores 0
LOW_SUPPORT = 0.7  # a kept box below this support is flagged "low_support" for review
FEW_WORKERS = 3  # fewer answers than this: flagged "few_workers" (no majority beyond a pair)
MIN_EVIDENCE = 5  # boxes drawn + consensus boxes seen before a worker can be flagged low quality
_TOL = 1e-9
# Candidate pairs of a block of images, measured together (`_cross_pair_blocks`).
BLOCK_PAIRS = 1 << 16


@dataclass(slots=True)
class ConsolidatedBox:
    """One consolidated object: its box, label and how much the crowd agreed on it. A plain record
    (slots, not frozen: a job makes one per box, and a frozen dataclass sets each field through
    `object.__setattr__`)."""

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
    label_share: float = 1.0
    """Weighted share of the members that gave the winning label."""


@dataclass(slots=True)
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


class IoUVote:
    """Consolidate crowd boxes by IoU voting (crowd-kit style: `fit`, `fit_predict`, fitted `*_`).

    Parameters:
        iou_threshold: lowest IoU at which a worker's box may join a cluster. Lower merges looser
            boxes (more recall on sloppy crowds, risk of merging neighbours); higher splits them.
        min_support: lowest weighted fraction of the image's workers a cluster needs to be kept.
            0.5 keeps what at least half the (weighted) workers drew; lower trades precision for recall.
        coordinates: "median" places each edge at the median of the members (robust to one sloppy
            box); "mean" at their mean (better only on Gaussian noise; real jitter is heavy-tailed).
        weighting: "agreement" (default) runs a first unweighted pass, scores each worker by F1
            against that consensus over the whole job, and votes again with those scores as weights
            (Wawa-style): spammers then barely count. "none" gives every worker weight 1, so one
            job's outputs do not depend on the other images in it.
        low_quality_f1: a worker whose F1 against the final consensus is below this, with at least
            `MIN_EVIDENCE` boxes drawn or expected, gets `low_quality=True`.

    Fitted attributes are `results_`, `skills_` and `workers_` (declared below). `ObjectResult.flags`
    holds: "no_answers", "few_workers" (< 3 answers), "low_support" (a kept
    box with support < 0.7), "rejected_clusters" (boxes some workers drew were voted out),
    "label_disagreement" (a kept box whose members disagree on the label).

    Example:
        >>> from orchestrator.consolidation import Box, IoUVote, ObjectAnswers, WorkerAnswer
        >>> def answer(worker, *boxes):
        ...     return WorkerAnswer(worker_id=worker, boxes=[Box(label="car", left=x, top=10, width=40,
        ...                         height=20) for x in boxes])
        >>> image = ObjectAnswers(dataset_object_id="0", source_ref="s3://b/0.jpg",
        ...                       answers=[answer("a", 10), answer("b", 12), answer("c", 11, 300)])
        >>> result, = IoUVote().fit_predict([image], labels=["car"])
        >>> [(b.label, b.left, b.width, b.votes, round(b.support, 2)) for b in result.boxes]
        [('car', 11.0, 40.0, 3, 1.0)]
        >>> result.flags
        ['rejected_clusters']
    """

    results_: list[ObjectResult]
    """One `ObjectResult` per input object, in input order."""

    skills_: dict[str, float]
    """Worker id -> the weight the worker's boxes carried in the final vote (1.0 each without weighting)."""

    workers_: dict[str, WorkerQuality]
    """Worker id -> `WorkerQuality`: boxes drawn and matched, precision, recall and F1 against the final
    consensus, and the `low_quality` flag."""

    def __init__(
        self,
        iou_threshold: float = 0.5,
        min_support: float = 0.5,
        coordinates: Coordinates = "median",
        weighting: Weighting = "agreement",
        low_quality_f1: float = 0.5,
    ) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if not 0.0 <= min_support <= 1.0:
            raise ValueError(f"min_support must be in [0, 1], got {min_support}")
        if coordinates not in ("median", "mean"):
            raise ValueError(f"coordinates must be 'median' or 'mean', got {coordinates!r}")
        if weighting not in ("none", "agreement"):
            raise ValueError(f"weighting must be 'none' or 'agreement', got {weighting!r}")
        self.iou_threshold = iou_threshold
        self.min_support = min_support
        self.coordinates = coordinates
        self.weighting = weighting
        self.low_quality_f1 = low_quality_f1

    def fit(
        self,
        objects: Sequence[ObjectAnswers] | AnswerColumns,
        labels: list[str] | None = None,
        gold: Mapping[str, GoldScore] | None = None,
    ) -> IoUVote:
        """Consolidate every object of a job; see the class docstring for the fitted attributes.

        `gold` (worker id -> `GoldScore`), with `weighting="agreement"`, puts gold evidence first:
        each weight blends the worker's gold F1 and its agreement F1 by how many gold boxes it has
        (`consolidation.gold.gold_weight`).
        """
        job = _Job.build(objects, labels)
        weights = np.ones(len(job.worker_ids))
        vote = self._vote(job, weights)
        if self.weighting == "agreement":
            agreement = vote.worker_f1()
            if gold:
                agreement = gold_weights(gold, job.worker_ids, agreement)
            weights = np.maximum(agreement, MIN_WEIGHT)
            del vote  # the first pass's arrays go before the second pass makes its own
            vote = self._vote(job, weights)
        self.skills_ = {w: float(weights[i]) for i, w in enumerate(job.worker_ids)}
        self.workers_ = vote.worker_quality(weights, self.low_quality_f1)
        self.results_ = vote.results()
        return self

    def fit_predict(
        self, objects: Sequence[ObjectAnswers] | AnswerColumns, labels: list[str] | None = None
    ) -> list[ObjectResult]:
        """`fit`, then return `results_`."""
        return self.fit(objects, labels).results_

    def _vote(self, job: _Job, weights: np.ndarray) -> _Vote:
        return _Vote(job, weights, self.iou_threshold, self.min_support, self.coordinates)


def consolidate_image(
    answers: Sequence[WorkerAnswer],
    weights: Mapping[str, float] | None = None,
    *,
    labels: list[str] | None = None,
    iou_threshold: float = 0.5,
    min_support: float = 0.5,
    coordinates: Coordinates = "median",
    image_width: int | None = None,
    image_height: int | None = None,
) -> list[ConsolidatedBox]:
    """Consolidate one image's answers (one per worker) with fixed worker weights (default 1 each).

    The image size for clipping defaults to the one the answers carry. See `consolidate_objects`.
    """
    if image_width and image_height:
        answers = [
            a.model_copy(update={"image_width": image_width, "image_height": image_height}) for a in answers
        ]
    image = ObjectAnswers(dataset_object_id="", source_ref="", answers=list(answers))
    return consolidate_objects(
        [image],
        weights,
        labels=labels,
        iou_threshold=iou_threshold,
        min_support=min_support,
        coordinates=coordinates,
    )[0].boxes


def consolidate_objects(
    objects: Sequence[ObjectAnswers],
    weights: Mapping[str, float] | None = None,
    *,
    labels: list[str] | None = None,
    iou_threshold: float = 0.5,
    min_support: float = 0.5,
    coordinates: Coordinates = "median",
) -> list[ObjectResult]:
    """One voting pass over `objects` with fixed worker weights (default 1 each; a worker not in
    `weights` weighs 1): no weights are learned, so each object's result depends on its answers and
    `weights` only. Weights below `MIN_WEIGHT` are raised to it. Same algorithm and parameters as
    `IoUVote`."""
    IoUVote(iou_threshold, min_support, coordinates)  # validates the parameters
    job = _Job.build(objects, labels)
    given = weights or {}
    w = np.array([float(given.get(worker, 1.0)) for worker in job.worker_ids])
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("worker weights must be finite and >= 0")
    w = np.maximum(w, MIN_WEIGHT)
    return _Vote(job, w, iou_threshold, min_support, coordinates).results()


@dataclass
class _Job:
    """A job as flat arrays. Answers are sorted by (image, worker id); boxes are x1, y1, x2, y2, sorted
    by (image, x1, y1, x2, y2, label)."""

    object_ids: list[str]
    source_refs: list[str]
    worker_ids: list[str]  # sorted; a worker's index is its rank here
    label_names: list[str]  # tie-break order
    n_images: int
    image_size: list[tuple[int | None, int | None]]
    ans_image: np.ndarray  # (A,) image of each answer
    ans_worker: np.ndarray  # (A,) worker of each answer
    box_answer: np.ndarray  # (N,) answer of each box
    box_xyxy: np.ndarray  # (N, 4)
    box_label: np.ndarray  # (N,)

    @classmethod
    def build(cls, objects: Sequence[ObjectAnswers] | AnswerColumns, labels: list[str] | None) -> _Job:
        answers = objects if isinstance(objects, AnswerColumns) else AnswerColumns.from_objects(objects)
        worker_ids = sorted(set(answers.worker_ids))
        worker_index = {w: i for i, w in enumerate(worker_ids)}
        if labels is None:
            labels = sorted(set(answers.labels))
        label_index = {label: i for i, label in enumerate(labels)}
        ans_image = answers.answer_object
        ans_worker = np.array([worker_index[w] for w in answers.worker_ids], dtype=np.int64)
        order = np.lexsort((ans_worker, ans_image))
        # Equal neighbours after the sort: one worker answered one image twice (the later answer in
        # input order comes second, lexsort being stable); report the first such answer of the input.
        twice = (np.diff(ans_image[order]) == 0) & (np.diff(ans_worker[order]) == 0)
        if twice.any():
            later = int(order[1:][twice].min())
            raise ValueError(
                f"object {answers.object_ids[ans_image[later]]!r}: worker "
                f"{answers.worker_ids[later]!r} answered twice; "
                "parse answers with orchestrator.consolidation.answers, which keeps one answer per worker"
            )
        # An image's size is the one given by the first worker id (by sort order) that gives one: the
        # first answer with a size in `order` (by image, then worker id) of each image.
        sized = np.fromiter((bool(w and h) for w, h in answers.image_sizes), bool, len(answers.image_sizes))
        candidates = order[sized[order]]
        first = np.unique(ans_image[candidates], return_index=True)[1]
        sizes: list[tuple[int | None, int | None]] = [(None, None)] * len(answers)
        for answer in candidates[first].tolist():
            sizes[ans_image[answer]] = answers.image_sizes[answer]
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        box_answer = position[answers.box_answer]
        n_boxes = len(answers.labels)
        box_label = np.fromiter(map(label_index.get, answers.labels, repeat(-1)), np.int64, n_boxes)
        ltwh = answers.ltwh
        xyxy = np.concatenate([ltwh[:, :2], ltwh[:, :2] + ltwh[:, 2:]], axis=1)
        ans_image, ans_worker = ans_image[order], ans_worker[order]
        xyxy, keep = _validate(xyxy, sizes, ans_image[box_answer])
        keep &= box_label >= 0  # a label not in `labels`
        xyxy, box_label, box_answer = xyxy[keep], box_label[keep], box_answer[keep]
        # Sorted once by (image, coordinates, label): each pass then only needs a stable sort by its
        # worker ranks to get its processing order (rank, image, coordinates, label).
        by_image = _sort_boxes(ans_image[box_answer], xyxy, box_label)
        return cls(
            object_ids=answers.object_ids,
            source_refs=answers.source_refs,
            worker_ids=worker_ids,
            label_names=list(labels),
            n_images=len(answers),
            image_size=sizes,
            ans_image=ans_image,
            ans_worker=ans_worker,
            box_answer=box_answer[by_image],
            box_xyxy=xyxy[by_image],
            box_label=box_label[by_image],
        )


def _sort_boxes(image: np.ndarray, xyxy: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Order of boxes by (image, x1, y1, x2, y2, label), ties in input order: np.lexsort on all six
    keys, sorting on the remaining keys only the runs tied on (image, x1), which are few (a full
    six-key lexsort costs one sort of the whole job per key)."""
    order = np.lexsort((xyxy[:, 0], image))
    same = (np.diff(image[order]) == 0) & (np.diff(xyxy[order, 0]) == 0)
    tied = np.zeros(len(order), dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    runs = order[tied]  # whole runs, in (image, x1, input) order: lexsort keeps that order on ties
    x1, y1, x2, y2 = xyxy[runs].T
    order[tied] = runs[np.lexsort((label[runs], y2, x2, y1, x1, image[runs]))]
    return order


def _validate(
    xyxy: np.ndarray, sizes: list[tuple[int | None, int | None]], box_image: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Order corners, clip to the image where its size is known; mask of finite, in-range boxes with area."""
    xyxy = np.concatenate(
        [np.minimum(xyxy[:, :2], xyxy[:, 2:]), np.maximum(xyxy[:, :2], xyxy[:, 2:])], axis=1
    )
    limits = np.array([(w or np.inf, h or np.inf) for w, h in sizes], dtype=np.float64).reshape(-1, 2)
    upper = np.tile(limits[box_image], 2)
    xyxy = np.clip(xyxy, 0.0, upper, where=np.isfinite(upper), out=xyxy.copy())
    in_range = np.all(np.abs(xyxy) <= MAX_COORDINATE, axis=1)  # False for NaN too
    keep = in_range & (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    return xyxy, keep


@dataclass(frozen=True)
class _Consensus:
    """Per kept cluster: its box (x1, y1, x2, y2), confidence and members' mean IoU to the box; per
    box of the job, its IoU to its kept cluster's box (0 elsewhere)."""

    box: np.ndarray
    confidence: np.ndarray
    mean_iou: np.ndarray
    matched_iou: np.ndarray


class _Vote:
    """One voting pass over a job with fixed worker weights: clusters, kept boxes, per-box matches."""

    def __init__(
        self,
        job: _Job,
        weights: np.ndarray,
        iou_threshold: float,
        min_support: float,
        coordinates: Coordinates,
    ) -> None:
        self.job = job
        ans_weight = weights[job.ans_worker]
        # Processing order inside each image: heavier workers first, then worker id (answers are
        # already sorted by image, then worker id, so lexsort's stability supplies the id tie-break).
        by_rank = np.lexsort((-ans_weight, job.ans_image))
        first = np.searchsorted(job.ans_image, job.ans_image)
        ans_rank = np.empty(len(by_rank), dtype=np.int64)
        ans_rank[by_rank] = np.arange(len(by_rank)) - first[by_rank]
        self.image_weight = np.bincount(job.ans_image, weights=ans_weight, minlength=job.n_images)
        self.n_workers = np.bincount(job.ans_image, minlength=job.n_images)

        xyxy, label, answer = job.box_xyxy, job.box_label, job.box_answer
        order = np.argsort(ans_rank[answer], kind="stable")  # job boxes are sorted by image, coordinates
        self.xyxy, self.label, self.answer = xyxy[order], label[order], answer[order]
        self.image = job.ans_image[self.answer]
        self.weight = ans_weight[self.answer]
        self.rank = ans_rank[self.answer]
        self.cluster, self.cluster_image = _cluster(
            self.image, self.xyxy, self.weight, self.rank, iou_threshold, job.n_images
        )
        self.cluster, self.cluster_image = _merge_split(
            self.cluster, self.cluster_image, self.xyxy, self.weight, self.rank, iou_threshold, job.n_images
        )
        self._score_clusters(min_support, coordinates)

    def _score_clusters(self, min_support: float, coordinates: Coordinates) -> None:
        n_clusters = len(self.cluster_image)
        cluster_weight = np.bincount(self.cluster, weights=self.weight, minlength=n_clusters)
        support = cluster_weight / self.image_weight[self.cluster_image]
        kept = support >= min_support - _TOL
        kept_index = np.cumsum(kept) - 1  # cluster -> row among kept clusters
        n_kept = int(kept.sum())
        member = kept[self.cluster]  # boxes in kept clusters
        row = kept_index[self.cluster[member]]

        n_labels = max(len(self.job.label_names), 1)
        label_weight = np.bincount(
            row * n_labels + self.label[member], weights=self.weight[member], minlength=n_kept * n_labels
        ).reshape(n_kept, n_labels)
        top = label_weight.max(axis=1, initial=0.0)
        winner = np.argmax(label_weight >= top[:, None] - _TOL, axis=1)  # first label in tie-break order
        self.kept_weight = cluster_weight[kept]
        self.label_disagreement = top < self.kept_weight - _TOL
        self.label_share = top / self.kept_weight

        self.box_label, self.votes = winner, np.bincount(row, minlength=n_kept)
        self.support = support[kept]
        self.kept, self.kept_image = kept, self.cluster_image[kept]
        self.rejected_image = np.bincount(self.cluster_image[~kept], minlength=self.job.n_images) > 0
        # A box matches the consensus if its cluster was kept and it carries the winning label.
        self.matched = np.zeros(len(self.cluster), dtype=bool)
        self.matched[member] = self.label[member] == winner[row]
        self.box_row = np.full(len(self.cluster), -1)
        self.box_row[member] = row
        self.coordinates = coordinates

    @cached_property
    def consensus(self) -> _Consensus:
        """The kept clusters' boxes and how closely their members agree: what the results and the
        workers' report show. No weight depends on them (`worker_f1` reads which clusters were kept
        and their labels), so the first pass of agreement weighting never computes them."""
        member = self.box_row >= 0
        row = self.box_row[member]
        box, agreement = _box_and_agreement(
            row,
            self.rank[member],
            self.xyxy[member],
            self.weight[member],
            self.n_workers[self.kept_image],
            self.coordinates,
        )
        member_iou = paired_iou(self.xyxy[member], box[row])
        matched_iou = np.zeros(len(self.cluster))
        matched_iou[member] = member_iou
        return _Consensus(
            box=box,
            confidence=self.support * agreement,
            mean_iou=np.bincount(row, weights=member_iou, minlength=len(box)) / np.maximum(self.votes, 1),
            matched_iou=matched_iou,
        )

    def _worker_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        job, n = self.job, len(self.job.worker_ids)
        box_worker = job.ans_worker[self.answer]
        kept_per_image = np.bincount(self.kept_image, minlength=job.n_images)
        answers = np.bincount(job.ans_worker, minlength=n)
        boxes = np.bincount(box_worker, minlength=n)
        matched = np.bincount(box_worker, weights=self.matched, minlength=n)
        expected = np.bincount(job.ans_worker, weights=kept_per_image[job.ans_image], minlength=n)
        return answers, boxes, matched, expected, box_worker

    def worker_f1(self) -> np.ndarray:
        """Each worker's F1 against this pass's consensus over the job (1.0 when both drew nothing)."""
        _, boxes, matched, expected, _ = self._worker_counts()
        return np.divide(2 * matched, boxes + expected, out=np.ones(len(boxes)), where=boxes + expected > 0)

    def worker_quality(self, weights: np.ndarray, low_quality_f1: float) -> dict[str, WorkerQuality]:
        answers, boxes, matched, expected, box_worker = self._worker_counts()
        iou = np.where(self.matched, self.consensus.matched_iou, 0.0)
        iou_sum = np.bincount(box_worker, weights=iou, minlength=len(self.job.worker_ids))
        f1 = self.worker_f1()
        quality = {}
        for i, worker in enumerate(self.job.worker_ids):
            quality[worker] = WorkerQuality(
                worker_id=worker,
                answers=int(answers[i]),
                boxes=int(boxes[i]),
                matched=int(matched[i]),
                recall=float(matched[i] / expected[i]) if expected[i] else 1.0,
                precision=float(matched[i] / boxes[i]) if boxes[i] else 1.0,
                mean_iou=float(iou_sum[i] / matched[i]) if matched[i] else 0.0,
                weight=float(weights[i]),
                low_quality=bool(f1[i] < low_quality_f1 and boxes[i] + expected[i] >= MIN_EVIDENCE),
            )
        return quality

    def results(self) -> list[ObjectResult]:
        job = self.job
        # Kept boxes grouped by image, in coordinate order inside an image. Columns become Python lists
        # once (tolist), not one numpy scalar at a time: this loop runs once per box of the job.
        consensus = self.consensus
        box = consensus.box
        order = np.lexsort((self.box_label, box[:, 3], box[:, 2], box[:, 1], box[:, 0], self.kept_image))
        bounds = np.searchsorted(self.kept_image[order], np.arange(job.n_images + 1)).tolist()
        box = box[order]
        members = self._members()
        columns = zip(  # in the order of ConsolidatedBox's fields
            [job.label_names[k] for k in self.box_label[order].tolist()],
            box[:, 0].tolist(),
            box[:, 1].tolist(),
            (box[:, 2] - box[:, 0]).tolist(),
            (box[:, 3] - box[:, 1]).tolist(),
            consensus.confidence[order].tolist(),
            self.support[order].tolist(),
            self.votes[order].tolist(),
            consensus.mean_iou[order].tolist(),
            [members[k] for k in order.tolist()],
            self.label_share[order].tolist(),
            strict=True,
        )
        boxes = [ConsolidatedBox(*row) for row in columns]
        low_support = np.bincount(self.kept_image[self.support < LOW_SUPPORT - _TOL], minlength=job.n_images)
        disagree = np.bincount(self.kept_image[self.label_disagreement], minlength=job.n_images)
        image_flags = zip(
            self.n_workers.tolist(),
            (low_support > 0).tolist(),
            self.rejected_image.tolist(),
            (disagree > 0).tolist(),
            strict=True,
        )
        results = []
        for i, (object_id, source_ref, (n_workers, low, rejected, disagreement)) in enumerate(
            zip(job.object_ids, job.source_refs, image_flags, strict=True)
        ):
            flags = [
                flag
                for flag, on in (
                    ("no_answers", n_workers == 0),
                    ("few_workers", 0 < n_workers < FEW_WORKERS),
                    ("low_support", low),
                    ("rejected_clusters", rejected),
                    ("label_disagreement", disagreement),
                )
                if on
            ]
            width_px, height_px = job.image_size[i]
            results.append(
                ObjectResult(
                    dataset_object_id=object_id,
                    source_ref=source_ref,
                    image_width=width_px,
                    image_height=height_px,
                    boxes=boxes[bounds[i] : bounds[i + 1]],
                    n_workers=n_workers,
                    flags=flags,
                )
            )
        return results

    def _members(self) -> list[tuple[str, ...]]:
        """Worker ids of each kept cluster, sorted."""
        member = self.kept[self.cluster]
        row = (np.cumsum(self.kept) - 1)[self.cluster[member]]
        worker = self.job.ans_worker[self.answer[member]]
        order = np.lexsort((worker, row))
        bounds = np.searchsorted(row[order], np.arange(len(self.support) + 1)).tolist()
        names = list(map(self.job.worker_ids.__getitem__, worker[order].tolist()))
        return [tuple(names[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


def _cluster(
    image: np.ndarray,
    xyxy: np.ndarray,
    weight: np.ndarray,
    rank: np.ndarray,
    iou_threshold: float,
    n_images: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster id of every box and image of every cluster. Boxes come sorted by (rank, image, coordinates).

    Round r adds the r-th worker of every image at once: its boxes are matched to that image's
    clusters (one box per cluster, pairs with IoU >= threshold against the cluster's running
    weighted mean, maximum total IoU); the rest start new clusters.
    """
    n = len(image)
    cluster = np.empty(n, dtype=np.int64)
    cluster_image = np.empty(n, dtype=np.int64)
    # Edges first (4, n), as `edge_iou` reads them: a round gathers each edge from one contiguous row.
    edges = np.ascontiguousarray(xyxy.T)
    mean = np.empty((4, n))
    weighted_sum = np.empty((4, n))
    weight_sum = np.empty(n)
    n_clusters = 0
    bounds = np.searchsorted(rank, np.arange(int(rank.max(initial=-1)) + 2))
    for start, stop in zip(bounds[:-1], bounds[1:], strict=False):
        boxes, w = edges[:, start:stop], weight[start:stop]
        fresh = np.ones(stop - start, dtype=bool)
        if n_clusters:
            c, b = _match_round(
                cluster_image[:n_clusters],
                mean[:, :n_clusters],
                image[start:stop],
                boxes,
                iou_threshold,
                n_images,
            )
            cluster[start + b] = c
            weighted_sum[:, c] += w[b] * boxes[:, b]
            weight_sum[c] += w[b]
            mean[:, c] = weighted_sum[:, c] / weight_sum[c]
            fresh[b] = False
        new = np.flatnonzero(fresh)
        ids = np.arange(n_clusters, n_clusters + len(new))
        cluster[start + new] = ids
        cluster_image[ids] = image[start + new]
        mean[:, ids] = boxes[:, new]
        weighted_sum[:, ids] = w[new] * boxes[:, new]
        weight_sum[ids] = w[new]
        n_clusters += len(new)
    return cluster, cluster_image[:n_clusters]


def _match_round(
    cluster_image: np.ndarray,
    cluster_box: np.ndarray,
    box_image: np.ndarray,
    boxes: np.ndarray,
    iou_threshold: float,
    n_images: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches (cluster ids, box indexes) of a round's boxes, sorted by image, to the clusters;
    `cluster_box` and `boxes` are edges first (4, n)."""
    cluster_area, box_area = area(cluster_box), area(boxes)
    candidates = []
    for c, b in _cross_pair_blocks(cluster_image, box_image, n_images):
        iou = edge_iou(cluster_box[:, c], boxes[:, b], cluster_area[c], box_area[b])
        ok = iou >= iou_threshold
        candidates.append((c[ok], b[ok], iou[ok]))
    c, b, iou = (np.concatenate(column) for column in zip(*candidates, strict=True))
    # Where some cluster or box has two candidates the Hungarian algorithm decides; elsewhere every
    # candidate pair is the optimal assignment already.
    crowded = (np.bincount(c, minlength=len(cluster_image))[c] > 1) | (
        np.bincount(b, minlength=boxes.shape[1])[b] > 1
    )
    if not crowded.any():
        return c, b
    pair_image = box_image[b]
    contested = np.zeros(n_images, dtype=bool)
    contested[pair_image[crowded]] = True
    hard = contested[pair_image]
    keep_c, keep_b = [c[~hard]], [b[~hard]]
    c, b, iou, pair_image = c[hard], b[hard], iou[hard], pair_image[hard]
    # One small matrix per contested image: rows are its candidate clusters, columns its candidate
    # boxes, both ascending. Local indexes come from one global sort of all contested pairs (grouped
    # by image), so the loop below does O(pairs of the image) work per image.
    rows, row_of = np.unique(c, return_inverse=True)
    cols, col_of = np.unique(b, return_inverse=True)
    images, pair_start = np.unique(pair_image, return_index=True)
    # Clusters and boxes of an image: a contiguous run of rows (cols) once sorted by image.
    by_image = np.argsort(cluster_image[rows], kind="stable")
    rows, row_of = rows[by_image], np.argsort(by_image)[row_of]
    row_start = np.searchsorted(cluster_image[rows], images)
    col_start = np.searchsorted(box_image[cols], images)
    row_stop = np.append(row_start[1:], len(rows))
    col_stop = np.append(col_start[1:], len(cols))
    # Everything but the assignment itself is done outside the per-image loop, which runs thousands
    # of times: local indexes of each pair in its image's matrix, and (after the loop) dropping the
    # assigned cells that are not candidate pairs (the zero cells: candidates have IoU >= threshold > 0).
    pair_stop = np.append(pair_start[1:], len(c))
    pair_image = np.repeat(np.arange(len(images)), pair_stop - pair_start)  # among the contested images
    local_row = row_of - row_start[pair_image]
    local_col = col_of - col_start[pair_image]
    # Images whose matrices have one shape are filled at once, as one stack, and solved one by one: the
    # loop then only calls the solver.
    shapes, shape_of = np.unique(
        np.stack([row_stop - row_start, col_stop - col_start], axis=1), axis=0, return_inverse=True
    )
    assigned_rows, assigned_cols = [], []
    for n, (height, width) in enumerate(shapes.tolist()):
        group = np.flatnonzero(shape_of.reshape(-1) == n)
        slot = np.full(len(images), -1)
        slot[group] = np.arange(len(group))
        in_group = slot[pair_image] >= 0
        stack = np.zeros((len(group), height, width))
        stack[slot[pair_image[in_group]], local_row[in_group], local_col[in_group]] = iou[in_group]
        solved = [linear_sum_assignment(matrix, maximize=True) for matrix in stack]
        counts = [len(r) for r, _ in solved]
        assigned_rows.append(np.concatenate([r for r, _ in solved]) + np.repeat(row_start[group], counts))
        assigned_cols.append(np.concatenate([k for _, k in solved]) + np.repeat(col_start[group], counts))
    r, k = np.concatenate(assigned_rows), np.concatenate(assigned_cols)
    good = np.isin(r * len(cols) + k, row_of * len(cols) + col_of)
    keep_c.append(rows[r[good]])
    keep_b.append(cols[k[good]])
    return np.concatenate(keep_c), np.concatenate(keep_b)


def _cross_pair_blocks(
    image_a: np.ndarray, image_b: np.ndarray, n_images: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`_cross_pairs`, in the same order, a run of images at a time: about `BLOCK_PAIRS` pairs per block
    (an image with more is one block), so the arrays of a block stay in the processor's cache and a
    job of any size holds one block's pairs at a time, not every pair of every image."""
    sort_a = np.argsort(image_a, kind="stable")
    sort_b = np.argsort(image_b, kind="stable")
    n_a = np.bincount(image_a, minlength=n_images)
    n_b = np.bincount(image_b, minlength=n_images)
    start_a = np.concatenate([[0], np.cumsum(n_a)])
    start_b = np.concatenate([[0], np.cumsum(n_b)])
    pairs = np.cumsum(n_a * n_b)
    total = int(pairs[-1]) if n_images else 0
    ends = np.searchsorted(pairs, np.arange(BLOCK_PAIRS, total + BLOCK_PAIRS, BLOCK_PAIRS), side="right")
    bounds = np.unique(np.concatenate([[0], np.minimum(ends, n_images), [n_images]])).tolist()
    for first, stop in zip(bounds[:-1], bounds[1:], strict=False):
        rows_a = sort_a[start_a[first] : start_a[stop]]
        rows_b = sort_b[start_b[first] : start_b[stop]]
        i, j = _cross_pairs(image_a[rows_a] - first, image_b[rows_b] - first, stop - first)
        yield rows_a[i], rows_b[j]


def _cross_pairs(image_a: np.ndarray, image_b: np.ndarray, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j) with image_a[i] == image_b[j], grouped by image, i then j ascending."""
    sort_a = np.argsort(image_a, kind="stable")
    sort_b = np.argsort(image_b, kind="stable")
    n_b = np.bincount(image_b, minlength=n_images)
    first_b = np.cumsum(n_b) - n_b  # where each image's run starts in sort_b
    image = image_a[sort_a]
    per_a = n_b[image]  # partners of each i, taken in image order
    slot = np.cumsum(per_a) - per_a  # first output slot of each i
    i = np.repeat(sort_a, per_a)
    # Output slot s of the i starting at `slot` takes the (s - slot)-th j of its image.
    j = sort_b[np.arange(len(i)) - np.repeat(slot - first_b[image], per_a)]
    return i, j


def _merge_split(
    cluster: np.ndarray,
    cluster_image: np.ndarray,
    xyxy: np.ndarray,
    weight: np.ndarray,
    rank: np.ndarray,
    iou_threshold: float,
    n_images: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two clusters of an image that share no worker and whose mean boxes overlap at IoU >=
    threshold (best pair first, repeated until none is left): greedy clustering can split one object
    when an early sloppy box drags a cluster's mean away from later boxes."""
    # Only images that merged something in the last round are looked at again: elsewhere no pair
    # qualified and no cluster changed, so none would now.
    active = np.ones(n_images, dtype=bool)
    # A cluster holding a box of every worker who drew in its image shares a worker with every other
    # cluster there, so it can merge with none: only the others are paired.
    box_image = cluster_image[cluster]
    drew = np.zeros((n_images, int(rank.max(initial=0)) + 1), dtype=bool)
    drew[box_image, rank] = True
    drawing = drew.sum(axis=1)
    while len(cluster):
        n = len(cluster_image)
        weight_sum = np.bincount(cluster, weights=weight, minlength=n)
        mean = np.stack([np.bincount(cluster, weights=weight * xyxy[:, d], minlength=n) for d in range(4)])
        mean /= weight_sum
        mean_area = area(mean)
        full = np.bincount(cluster, minlength=n) == drawing[cluster_image]
        live = np.flatnonzero(active[cluster_image] & ~full)
        candidates = []
        for a, b in _cross_pair_blocks(cluster_image[live], cluster_image[live], n_images):
            a, b = live[a[a < b]], live[b[a < b]]
            iou = edge_iou(mean[:, a], mean[:, b], mean_area[a], mean_area[b])
            ok = iou >= iou_threshold
            candidates.append((a[ok], b[ok], iou[ok]))
        a, b, iou = (np.concatenate(column) for column in zip(*candidates, strict=True))
        if len(a):
            members = np.zeros((n, int(rank.max()) + 1), dtype=bool)
            members[cluster, rank] = True
            ok = ~np.any(members[a] & members[b], axis=1)
            a, b, iou = a[ok], b[ok], iou[ok]
        if not len(a):
            return cluster, cluster_image
        target = np.arange(n)
        used = np.zeros(n, dtype=bool)
        first, second = a.tolist(), b.tolist()
        for i in np.lexsort((b, a, -iou)).tolist():
            if not used[first[i]] and not used[second[i]]:
                used[first[i]] = used[second[i]] = True
                target[second[i]] = first[i]
        active[:] = False
        active[cluster_image[used]] = True
        keep = target == np.arange(n)
        cluster = (np.cumsum(keep) - 1)[target[cluster]]
        cluster_image = cluster_image[keep]
    return cluster, cluster_image


def _box_and_agreement(
    row: np.ndarray,
    slot: np.ndarray,
    xyxy: np.ndarray,
    weight: np.ndarray,
    width: np.ndarray,
    coordinates: Coordinates,
) -> tuple[np.ndarray, np.ndarray]:
    """Each kept cluster's box and agreement from its members (cluster `row`, worker `slot`).

    Members are laid out (cluster, worker slot, edge) in one block per number of workers of the
    cluster's image (`width`): one job-wide width would make a single image with many workers cost
    that many slots, and their square, for every cluster of the job.
    """
    box, agreement = np.empty((len(width), 4)), np.empty(len(width))
    for m in np.unique(width).tolist():
        rows = np.flatnonzero(width == m)
        position = np.empty(len(width), dtype=np.int64)
        position[rows] = np.arange(len(rows))
        pick = width[row] == m
        at = (position[row[pick]], slot[pick])
        edges = np.full((len(rows), m, 4), np.nan)
        edges[at] = xyxy[pick]
        weights = np.zeros((len(rows), m))
        weights[at] = weight[pick]
        # Weights choose the clusters and labels, not the edges: members already agree at IoU >= the
        # threshold, and an unweighted median keeps averaging the middle pair where weights would pick
        # one box (measured against a skill-weighted median: better on real and simulated crowds alike).
        box[rows] = _median(edges) if coordinates == "median" else np.nanmean(edges, axis=1)
        # The pairs of members, m x m per cluster, a block of clusters at a time: all at once they
        # were a job's largest arrays.
        step = max(BLOCK_PAIRS // (m * m), 1)
        for start in range(0, len(rows), step):
            block = slice(start, start + step)
            agreement[rows[block]] = _pairwise_agreement(edges[block], weights[block])
    return box, agreement


def _median(edges: np.ndarray) -> np.ndarray:
    """Per cluster and edge, the median of the members' values. edges (k, m, 4), NaN = absent."""
    values = np.sort(edges, axis=1)  # NaN (absent) last
    present = np.sum(~np.isnan(edges), axis=1, keepdims=True)
    low = np.take_along_axis(values, np.maximum(present - 1, 0) // 2, axis=1)
    high = np.take_along_axis(values, present // 2, axis=1)
    return ((low + high) / 2)[:, 0, :]


def _pairwise_agreement(edges: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean IoU over pairs of different members of each cluster; 0 with one member."""
    pair_iou = paired_iou(edges[:, :, None, :], edges[:, None, :, :])
    pair_weight = weights[:, :, None] * weights[:, None, :]
    pair_weight[:, np.arange(weights.shape[1]), np.arange(weights.shape[1])] = 0.0
    total = pair_weight.sum(axis=(1, 2))
    return np.divide(
        (pair_weight * pair_iou).sum(axis=(1, 2)), total, out=np.zeros(len(total)), where=total > 0
    )

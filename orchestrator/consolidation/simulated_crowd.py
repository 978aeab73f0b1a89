"""Simulated crowd workers drawing boxes on images with known truth, calibrated to real MTurk workers.

Used by benchmarks and tests, and by `labeljob portal simulate`. Pure numpy; every draw comes from
one seeded `numpy.random.Generator`, so a seed reproduces a run call for call.

The noise model (docs/consolidation.md, "The simulated crowd"), calibrated to the real pedestrian
answers in tests/data/:
- a worker is a spammer with probability `spammer_rate` (exactly that share of the pool): it draws
  Poisson(number of objects) random boxes with random labels;
- every other worker has a base recall r ~ Beta(`recall_beta`) (p10/p50/p90 0.89/0.98/1.00 by
  default; with the crowding and size factors below, per-worker recall lands near the real spread),
  an edge-noise scale s ~ LogNormal(0, 0.3) and a per-edge bias b ~ N(0, `bias_sd`) x side;
- an object is drawn with probability r x crowding x size: crowding costs `CROWDING` of recall per
  extra object up to 4; objects whose short side, as displayed, is under `small_object_px` are mostly
  missed;
- each edge moves by b x side + t(`jitter_df`) noise of scale (`jitter_abs` + `jitter_rel` x side) x s
  (heavy-tailed like real jitter), and x edges move outward by `looseness` x width (real boxes are
  loose); the label becomes a neighbouring label (index +-1) with probability `wrong_label_rate`;
  an object is drawn twice with probability `duplicate_rate`;
- Poisson(`spurious_rate` x (1 + 0.5 per extra object up to 4), x 0.3 on empty images) spurious
  boxes land at random.

Pixel constants (`small_object_px`, `jitter_abs`) are display pixels of the calibration images
(1280 x 720, `DISPLAY`): the task page fits every image to its canvas, so on a smaller image an
object looks bigger and a click's error covers fewer image pixels. They are scaled by
min(1280 / width, 720 / height) of each image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.consolidation.answers import Box, ObjectAnswers, WorkerAnswer
from orchestrator.consolidation.iou import box_iou

CROWDING = 0.02
IMAGE_SIZES = ((1280, 720), (640, 480), (1920, 1080))
DISPLAY = (1280, 720)  # size of the real images the pixel constants were measured on


@dataclass(frozen=True)
class TruthImage:
    """An image with its true boxes."""

    image_id: str
    width: int
    height: int
    boxes: list[Box]


@dataclass(frozen=True)
class WorkerProfile:
    """A simulated worker's habits, fixed for the whole run."""

    worker_id: str
    spammer: bool
    recall: float
    jitter_scale: float
    bias: tuple[float, float, float, float]  # x1, y1, x2, y2 offsets as fractions of the side
    activity: float  # relative chance of being picked for an image


class CrowdSimulator:
    """A pool of `n_workers` simulated workers ("w00", "w01", ...) for one seed."""

    def __init__(
        self,
        seed: int = 0,
        *,
        n_workers: int = 40,
        labels: Sequence[str] = ("object",),
        spammer_rate: float = 0.10,
        wrong_label_rate: float = 0.03,
        recall_beta: tuple[float, float] = (12.0, 0.5),
        spurious_rate: float = 0.05,
        jitter_rel: float = 0.05,
        jitter_abs: float = 3.0,
        jitter_df: float = 6.0,
        bias_sd: float = 0.02,
        looseness: float = 0.02,
        duplicate_rate: float = 0.005,
        small_object_px: float = 22.0,
    ) -> None:
        if not labels:
            raise ValueError("labels must not be empty")
        self.rng = np.random.default_rng(seed)
        self.labels = list(labels)
        self.wrong_label_rate = wrong_label_rate
        self.spurious_rate = spurious_rate
        self.jitter_rel = jitter_rel
        self.jitter_abs = jitter_abs
        self.jitter_df = jitter_df
        self.looseness = looseness
        self.duplicate_rate = duplicate_rate
        self.small_object_px = small_object_px
        digits = len(str(max(n_workers - 1, 1)))
        spammers = set(self.rng.permutation(n_workers)[: round(spammer_rate * n_workers)].tolist())
        self.profiles = {}
        for i in range(n_workers):
            worker_id = f"w{i:0{digits}d}"
            self.profiles[worker_id] = WorkerProfile(
                worker_id=worker_id,
                spammer=i in spammers,
                recall=float(self.rng.beta(*recall_beta)),
                jitter_scale=float(self.rng.lognormal(0.0, 0.3)),
                bias=tuple(float(v) for v in self.rng.normal(0.0, bias_sd, 4)),
                activity=float(self.rng.lognormal(0.0, 1.0)),
            )

    @property
    def workers(self) -> list[str]:
        return list(self.profiles)

    def worker(self, worker_id: str) -> WorkerProfile:
        return self.profiles[worker_id]

    def answer(
        self,
        worker_id: str,
        truth_boxes: Sequence[Box],
        image_width: int,
        image_height: int,
        rng: np.random.Generator | None = None,
    ) -> list[Box]:
        """The boxes this worker draws on an image with these true boxes, clipped to the image.

        Draws come from `rng` if given (callers answering from several threads pass one per answer, so
        a seed reproduces a run whatever the scheduling), else from the simulator's own generator."""
        rng = rng or self.rng
        profile = self.profiles[worker_id]
        unknown = {b.label for b in truth_boxes} - set(self.labels)
        if unknown:
            raise ValueError(f"truth labels {sorted(unknown)} are not among the simulator's labels")
        truth = np.array([(b.left, b.top, b.width, b.height) for b in truth_boxes]).reshape(-1, 4)
        labels = np.array([self.labels.index(b.label) for b in truth_boxes], dtype=np.int64)
        n = len(truth)
        if profile.spammer:
            boxes, labels = self._random_boxes(rng, rng.poisson(n), image_width, image_height)
        else:
            display = min(DISPLAY[0] / image_width, DISPLAY[1] / image_height)
            boxes, labels = self._draw(rng, profile, truth, labels, display)
            spurious, spurious_labels = self._random_boxes(
                rng, rng.poisson(self.spurious_rate * (min(n, 4) if n else 0.4)), image_width, image_height
            )
            boxes, labels = np.concatenate([boxes, spurious]), np.concatenate([labels, spurious_labels])
        return _to_boxes(boxes, labels, self.labels, image_width, image_height)

    def _draw(
        self,
        rng: np.random.Generator,
        profile: WorkerProfile,
        truth: np.ndarray,
        labels: np.ndarray,
        display: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes for the objects this worker draws; `display` = display pixels per image pixel."""
        n = len(truth)
        crowding = 1.0 - CROWDING * (min(max(n, 1), 4) - 1)
        short_side = np.minimum(truth[:, 2], truth[:, 3])
        size = 1.0 / (1.0 + np.exp(-(short_side * display - self.small_object_px) / 5.0))
        drawn = rng.random(n) < profile.recall * crowding * size
        twice = drawn & (rng.random(n) < self.duplicate_rate)
        pick = np.concatenate([np.flatnonzero(drawn), np.flatnonzero(twice)])
        left, top, width, height = truth[pick].T
        side = np.stack([width, height, width, height], axis=1)
        sigma = (self.jitter_abs / display + self.jitter_rel * side) * profile.jitter_scale
        # Student-t scaled to unit variance for df > 2: heavy tails at the same spread.
        unit = np.sqrt((self.jitter_df - 2.0) / self.jitter_df) if self.jitter_df > 2 else 1.0
        noise = rng.standard_t(self.jitter_df, side.shape) * unit * sigma
        loose = self.looseness * width
        corners = np.stack([left - loose, top, left + width + loose, top + height], axis=1)
        corners += np.array(profile.bias) * side + noise
        picked_labels = labels[pick].copy()
        if len(self.labels) > 1:
            wrong = rng.random(len(pick)) < self.wrong_label_rate
            step = rng.choice([-1, 1], len(pick))
            picked_labels[wrong] = (picked_labels[wrong] + step[wrong]) % len(self.labels)
        return corners, picked_labels

    def _random_boxes(
        self, rng: np.random.Generator, count: int, image_width: int, image_height: int
    ) -> tuple[np.ndarray, np.ndarray]:
        size = rng.uniform(0.05, 0.4, (count, 2)) * (image_width, image_height)
        corner = rng.uniform(0.0, 1.0, (count, 2)) * ((image_width, image_height) - size)
        return np.concatenate([corner, corner + size], axis=1), rng.integers(0, len(self.labels), count)

    def simulate(self, images: Sequence[TruthImage], workers_per_image: int = 5) -> list[ObjectAnswers]:
        """Answers of `workers_per_image` distinct workers per image, picked in proportion to activity."""
        if not 0 < workers_per_image <= len(self.profiles):
            raise ValueError(f"workers_per_image must be in 1..{len(self.profiles)}")
        ids = self.workers
        activity = np.array([self.profiles[w].activity for w in ids])
        objects = []
        for image in images:
            chosen = self.rng.choice(len(ids), workers_per_image, replace=False, p=activity / activity.sum())
            answers = [
                WorkerAnswer(
                    worker_id=ids[j],
                    boxes=self.answer(ids[j], image.boxes, image.width, image.height),
                    image_width=image.width,
                    image_height=image.height,
                )
                for j in sorted(chosen)
            ]
            objects.append(
                ObjectAnswers(
                    dataset_object_id=image.image_id, source_ref=f"sim://{image.image_id}", answers=answers
                )
            )
        return objects


def _to_boxes(
    corners: np.ndarray, labels: np.ndarray, names: list[str], image_width: int, image_height: int
) -> list[Box]:
    corners = np.clip(corners, 0.0, np.array([image_width, image_height] * 2, dtype=float))
    size = corners[:, 2:] - corners[:, :2]
    keep = np.flatnonzero((size[:, 0] >= 1.0) & (size[:, 1] >= 1.0))
    return [
        Box(
            label=names[labels[i]], left=corners[i, 0], top=corners[i, 1], width=size[i, 0], height=size[i, 1]
        )
        for i in keep.tolist()
    ]


def synthetic_dataset(
    n_images: int,
    objects_per_image: float,
    n_classes: int,
    seed: int,
    *,
    image_sizes: Sequence[tuple[int, int]] = IMAGE_SIZES,
    max_overlap: float = 0.3,
) -> list[TruthImage]:
    """Random truth: Poisson(`objects_per_image`) objects per image, labels "class0".., short sides
    log-uniform from 16 px to half the image, aspect 1:2 to 2:1, no two objects overlapping at IoU above
    `max_overlap` (an object that finds no free spot in 20 tries is left out)."""
    rng = np.random.default_rng(seed)
    labels = [f"class{i}" for i in range(n_classes)]
    images = []
    for i in range(n_images):
        width, height = image_sizes[rng.integers(len(image_sizes))]
        placed = np.empty((0, 4))
        boxes = []
        for _ in range(rng.poisson(objects_per_image)):
            for _ in range(20):
                short = np.exp(rng.uniform(np.log(16.0), np.log(0.5 * min(width, height))))
                aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
                w, h = (short * aspect, short) if aspect >= 1 else (short, short / aspect)
                w, h = min(w, width), min(h, height)
                x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
                candidate = np.array([[x, y, x + w, y + h]])
                if not len(placed) or box_iou(candidate, placed).max() <= max_overlap:
                    placed = np.concatenate([placed, candidate])
                    boxes.append(Box(label=labels[rng.integers(n_classes)], left=x, top=y, width=w, height=h))
                    break
        images.append(TruthImage(image_id=str(i), width=width, height=height, boxes=boxes))
    return images

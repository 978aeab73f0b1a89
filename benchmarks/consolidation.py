"""Consolidation benchmark: IoUVote against one random worker, WBF and vote-NMS, on real and simulated crowds.

Real: tests/data/pedestrians-dev.jsonl (7 MTurk workers per image, expert boxes), workers
sub-sampled to k = 1, 3, 5, 7 per image with several seeds. Synthetic:
orchestrator.consolidation.simulated_crowd scenarios (spammers, wrong labels, objects per image,
workers per image). Prints markdown tables.

    .venv/bin/python -m benchmarks.consolidation                 # everything (a few minutes)
    .venv/bin/python -m benchmarks.consolidation --quick         # 1,000 synthetic images, 2 seeds
    taskset -c 0 .venv/bin/python -m benchmarks.consolidation --only speed
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.box_metrics import Boxes, coco_ap, detection_metrics
from orchestrator.consolidation import (
    AnswerColumns,
    Box,
    CrowdSimulator,
    IoUVote,
    ObjectAnswers,
    ObjectResult,
    WorkerAnswer,
    box_iou,
    synthetic_dataset,
)

REAL_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "pedestrians-dev.jsonl"
Method = Callable[[Sequence[ObjectAnswers], list[str], int], list[Boxes]]


def _xyxy(boxes: Sequence[Box], label_index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    xyxy = np.array([(b.left, b.top, b.left + b.width, b.top + b.height) for b in boxes]).reshape(-1, 4)
    return xyxy, np.array([label_index[b.label] for b in boxes], dtype=np.int64)


def _size(obj: ObjectAnswers) -> np.ndarray:
    a = next(a for a in obj.answers if a.image_width)
    return np.array([a.image_width, a.image_height] * 2, dtype=float)


def single_worker(objects: Sequence[ObjectAnswers], labels: list[str], seed: int) -> list[Boxes]:
    """Baseline: the boxes of one random worker per image, score 1."""
    rng = np.random.default_rng(seed)
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for obj in objects:
        answers = sorted(obj.answers, key=lambda a: a.worker_id)
        xyxy, lab = _xyxy(answers[rng.integers(len(answers))].boxes, index)
        out.append(Boxes(xyxy, lab, np.ones(len(lab))))
    return out


def wbf_inputs(objects: Sequence[ObjectAnswers], labels: list[str]) -> list[tuple]:
    """Per image, ensemble-boxes input: one model per worker (sorted by id), boxes scaled to [0, 1]."""
    index = {label: i for i, label in enumerate(labels)}
    inputs = []
    for obj in objects:
        scale = _size(obj)
        boxes, scores, labs = [], [], []
        for answer in sorted(obj.answers, key=lambda a: a.worker_id):
            xyxy, lab = _xyxy(answer.boxes, index)
            boxes.append(np.clip(xyxy / scale, 0.0, 1.0))
            scores.append(np.ones(len(lab)))
            labs.append(lab)
        inputs.append((boxes, scores, labs, scale))
    return inputs


def wbf_run(inputs: list[tuple]) -> list[Boxes]:
    from ensemble_boxes import weighted_boxes_fusion

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for boxes, scores, labs, scale in inputs:
            xyxy, score, lab = weighted_boxes_fusion(
                boxes, scores, labs, iou_thr=0.55, skip_box_thr=0.0, conf_type="box_and_model_avg"
            )
            keep = score >= 0.5 - 1e-9
            out.append(Boxes(xyxy[keep] * scale, lab[keep].astype(np.int64), score[keep]))
    return out


def wbf(objects: Sequence[ObjectAnswers], labels: list[str], seed: int) -> list[Boxes]:
    """Baseline: ensemble-boxes WBF, box_and_model_avg, iou_thr 0.55, keep score >= 0.5."""
    return wbf_run(wbf_inputs(objects, labels))


def vote_nms(objects: Sequence[ObjectAnswers], labels: list[str], seed: int) -> list[Boxes]:
    """Baseline: score each drawn box by the share of workers with a box at IoU >= 0.5 to it, NMS at
    0.5 from the best score, keep score >= 0.5. Among equal scores the most central box (largest summed
    IoU with the others) goes first, then coordinates."""
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for obj in objects:
        answers = sorted(obj.answers, key=lambda a: a.worker_id)
        parts = [_xyxy(a.boxes, index) for a in answers]
        xyxy = np.concatenate([p[0] for p in parts])
        lab = np.concatenate([p[1] for p in parts])
        owner = np.repeat(np.arange(len(parts)), [len(p[1]) for p in parts])
        if not len(lab):
            out.append(Boxes.empty())
            continue
        iou = box_iou(xyxy, xyxy)
        close = iou >= 0.5
        score = (close.astype(float) @ np.eye(len(parts))[owner] > 0).sum(axis=1) / len(parts)
        centrality = np.where(close, iou, 0.0).sum(axis=1)
        order = np.lexsort((xyxy[:, 3], xyxy[:, 2], xyxy[:, 1], xyxy[:, 0], -centrality, -score))
        kept: list[int] = []
        for i in order:
            if score[i] < 0.5 - 1e-9:
                break
            if not close[i, kept].any():
                kept.append(i)
        keep = np.array(kept, dtype=np.int64)
        out.append(Boxes(xyxy[keep], lab[keep], score[keep]))
    return out


def result_boxes(results: Sequence[ObjectResult], labels: list[str]) -> list[Boxes]:
    """IoUVote's results as scored boxes, one `Boxes` per image."""
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for result in results:
        b = result.boxes
        xyxy = np.array([(x.left, x.top, x.left + x.width, x.top + x.height) for x in b]).reshape(-1, 4)
        lab = np.array([index[x.label] for x in b], dtype=np.int64)
        out.append(Boxes(xyxy, lab, np.array([x.confidence for x in b])))
    return out


def iou_vote(**params) -> Method:
    def run(objects: Sequence[ObjectAnswers], labels: list[str], seed: int) -> list[Boxes]:
        return result_boxes(IoUVote(**params).fit_predict(objects, labels), labels)

    return run


METHODS: dict[str, Method] = {
    "single worker": single_worker,
    "WBF .55, keep >= .5": wbf,
    "vote-NMS": vote_nms,
    "IoUVote median, unweighted": iou_vote(weighting="none"),
    "IoUVote mean, unweighted": iou_vote(coordinates="mean", weighting="none"),
    "IoUVote default (median, agreement)": iou_vote(),
}

FIT_ONLY: dict[str, dict] = {
    "IoUVote median, unweighted": {"weighting": "none"},
    "IoUVote mean, unweighted": {"coordinates": "mean", "weighting": "none"},
    "IoUVote default (median, agreement)": {},
}


@dataclass
class Dataset:
    name: str
    objects: list[ObjectAnswers]
    truth: list[Boxes]
    labels: list[str]


def load_real(path: Path) -> tuple[list[dict], list[Boxes]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    truth = []
    for row in rows:
        xyxy = np.array(
            [(b["left"], b["top"], b["left"] + b["width"], b["top"] + b["height"]) for b in row["expert"]]
        ).reshape(-1, 4)
        truth.append(Boxes(xyxy, np.zeros(len(xyxy), dtype=np.int64), np.ones(len(xyxy))))
    return rows, truth


def real_object(row: dict, workers: Sequence[dict]) -> ObjectAnswers:
    """One image of the real data with the answers of `workers` (entries of its "workers"), in that order."""
    answers = [
        WorkerAnswer(
            worker_id=w["worker"],
            boxes=[Box(**b) for b in w["boxes"]],
            image_width=row["width"],
            image_height=row["height"],
        )
        for w in workers
    ]
    return ObjectAnswers(dataset_object_id=row["image"], source_ref=row["image"], answers=answers)


def real_subsample(rows: list[dict], truth: list[Boxes], k: int, seed: int) -> Dataset:
    """k of each image's workers, picked at random (seeded)."""
    rng = np.random.default_rng(seed)
    objects = [
        real_object(row, [row["workers"][i] for i in rng.choice(len(row["workers"]), k, replace=False)])
        for row in rows
    ]
    return Dataset(f"real k={k} seed={seed}", objects, truth, ["pedestrian"])


@dataclass(frozen=True)
class Scenario:
    name: str
    spammer_rate: float = 0.10
    wrong_label_rate: float = 0.05
    n_classes: int = 3
    objects_per_image: float = 6.0
    workers_per_image: int = 5
    recall_beta: tuple[float, float] = (12.0, 0.5)
    spurious_rate: float = 0.05


SCENARIOS = [
    Scenario("base: 10% spam, 5% wrong of 3, 6 obj, k=5"),
    Scenario("0% spammers", spammer_rate=0.0),
    Scenario("25% spammers", spammer_rate=0.25),
    Scenario(
        "harsh: 25% spam, miss .2, spurious .3", spammer_rate=0.25, recall_beta=(4.0, 1.0), spurious_rate=0.3
    ),
    Scenario("0% wrong labels", wrong_label_rate=0.0),
    Scenario("10% wrong labels of 3", wrong_label_rate=0.10),
    Scenario("10% wrong labels of 10", wrong_label_rate=0.10, n_classes=10),
    Scenario("1 object per image", objects_per_image=1.0),
    Scenario("20 objects per image", objects_per_image=20.0),
    Scenario("k=3", workers_per_image=3),
    Scenario("k=7", workers_per_image=7),
]


def scenario_labels(scenario: Scenario) -> list[str]:
    return [f"class{i}" for i in range(scenario.n_classes)]


def make_crowd(scenario: Scenario, seed: int) -> CrowdSimulator:
    """The scenario's simulated crowd; the same seed gives the same workers."""
    return CrowdSimulator(
        seed,
        labels=scenario_labels(scenario),
        spammer_rate=scenario.spammer_rate,
        wrong_label_rate=scenario.wrong_label_rate,
        recall_beta=scenario.recall_beta,
        spurious_rate=scenario.spurious_rate,
    )


def synthetic(scenario: Scenario, n_images: int, seed: int) -> Dataset:
    truth_images = synthetic_dataset(n_images, scenario.objects_per_image, scenario.n_classes, seed)
    labels = scenario_labels(scenario)
    objects = make_crowd(scenario, seed).simulate(truth_images, scenario.workers_per_image)
    index = {label: i for i, label in enumerate(labels)}
    truth = []
    for image in truth_images:
        xyxy, lab = _xyxy(image.boxes, index)
        truth.append(Boxes(xyxy, lab, np.ones(len(lab))))
    return Dataset(scenario.name, objects, truth, labels)


def evaluate(method: Method, data: Dataset, seed: int, min_width: float = 0.0) -> dict[str, float]:
    found = method(data.objects, data.labels, seed)
    truth = data.truth
    if min_width:
        truth = [t.subset(t.xyxy[:, 2] - t.xyxy[:, 0] >= min_width) for t in truth]
        found = [f.subset(f.xyxy[:, 2] - f.xyxy[:, 0] >= min_width) for f in found]
    return detection_metrics(truth, found) | coco_ap(truth, found, len(data.labels))


def shuffled(objects: Sequence[ObjectAnswers], rng: np.random.Generator) -> list[ObjectAnswers]:
    """The same answers with workers and each worker's boxes in a random order."""
    out = []
    for obj in objects:
        answers = [
            a.model_copy(update={"boxes": [a.boxes[i] for i in rng.permutation(len(a.boxes))]})
            for a in (obj.answers[i] for i in rng.permutation(len(obj.answers)))
        ]
        out.append(obj.model_copy(update={"answers": answers}))
    return out


def determinism(method: Method, data: Dataset, permutations: int, seed: int) -> float:
    """Share of images whose output (boxes, labels, scores as a set) is bit-identical under shuffling."""

    def canonical(b: Boxes) -> np.ndarray:
        rows = np.column_stack([b.xyxy, b.labels, b.scores])
        return rows[np.lexsort(rows.T[::-1])] if len(rows) else rows

    reference = [canonical(b) for b in method(data.objects, data.labels, seed)]
    same = np.ones(len(reference), dtype=bool)
    rng = np.random.default_rng(seed + 1000)
    for _ in range(permutations):
        found = method(shuffled(data.objects, rng), data.labels, seed)
        same &= [np.array_equal(r, canonical(f)) for r, f in zip(reference, found, strict=True)]
    return float(same.mean())


COLUMNS = [
    ("P50", "P@.5"),
    ("R50", "R@.5"),
    ("F1_50", "F1@.5"),
    ("F1_75", "F1@.75"),
    ("mIoU", "mIoU"),
    ("IoU_ge75", "IoU>=.75"),
    ("label_acc", "label acc"),
    ("AP", "AP"),
    ("AP50", "AP50"),
    ("AP75", "AP75"),
]


def table(rows: list[tuple[str, str, dict[str, float]]], first: str) -> str:
    head = f"| {first} | method | " + " | ".join(c for _, c in COLUMNS) + " |"
    lines = [head, "|---|---|" + "---:|" * len(COLUMNS)]
    for group, name, m in rows:
        lines.append(
            f"| {group} | {name} | " + " | ".join(f"{m[k]:.3f}".lstrip("0") for k, _ in COLUMNS) + " |"
        )
    return "\n".join(lines)


def mean_metrics(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}


def run_real(seeds: int, min_width: float) -> str:
    rows, truth = load_real(REAL_DATA)
    out = []
    for k in (1, 3, 5, 7):
        for name, method in METHODS.items():
            if k == 1 and name not in ("single worker", "IoUVote default (median, agreement)"):
                continue
            runs = [evaluate(method, real_subsample(rows, truth, k, s), s, min_width) for s in range(seeds)]
            out.append((str(k), name, mean_metrics(runs)))
            print(f"  real k={k} {name}: {mean_metrics(runs)}", flush=True)
    return table(out, "k")


def run_synthetic(n_images: int, seeds: int) -> str:
    out = []
    for scenario in SCENARIOS:
        data = [synthetic(scenario, n_images, s) for s in range(seeds)]
        for name, method in METHODS.items():
            m = mean_metrics([evaluate(method, d, s) for s, d in enumerate(data)])
            out.append((scenario.name, name, m))
            print(f"  {scenario.name} / {name}: {m}", flush=True)
    return table(out, "scenario")


def run_determinism(n_images: int, permutations: int) -> str:
    rows, truth = load_real(REAL_DATA)
    sets = [real_subsample(rows, truth, 5, 0), synthetic(SCENARIOS[0], n_images, 0)]
    lines = ["| method | real k=5 | synthetic base |", "|---|---:|---:|"]
    for name, method in METHODS.items():
        shares = [determinism(method, d, permutations, 0) for d in sets]
        lines.append(f"| {name} | " + " | ".join(f"{100 * s:.1f}%" for s in shares) + " |")
    return "\n".join(lines)


def best_time(run: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` runs, in seconds: on a shared machine the others are slowed by other work."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def run_speed(n_images: int, repeats: int = 1) -> str:
    data = synthetic(SCENARIOS[0], n_images, 0)
    n_boxes = sum(len(a.boxes) for obj in data.objects for a in obj.answers)
    warm = data.objects[:50]
    timings: list[tuple[str, float]] = []
    inputs = wbf_inputs(data.objects, data.labels)
    wbf_run(wbf_inputs(warm, data.labels))  # numba compiles on first use
    timings.append(("WBF (call only, inputs prepared)", best_time(lambda: wbf_run(inputs), repeats)))
    for name, method in METHODS.items():
        method(warm, data.labels, 0)
        seconds = best_time(lambda m=method: m(data.objects, data.labels, 0), repeats)
        timings.append((f"{name} (from ObjectAnswers)", seconds))
    # The same runs without the conversion of each result into benchmark arrays (the WBF row above
    # does not count its input preparation either): `fit` alone, ObjectAnswers in, ObjectResults out.
    for name, params in FIT_ONLY.items():
        IoUVote(**params).fit(warm, data.labels)
        seconds = best_time(lambda p=params: IoUVote(**p).fit(data.objects, data.labels), repeats)
        timings.append((f"{name} (fit only)", seconds))
    # And from the columns `labeljob consolidate` reads a payload into, prepared beforehand like WBF's
    # inputs: `fit` alone as the command runs it.
    columns = AnswerColumns.from_objects(data.objects)
    for name, params in FIT_ONLY.items():
        seconds = best_time(lambda p=params: IoUVote(**p).fit(columns, data.labels), repeats)
        timings.append((f"{name} (fit only, from AnswerColumns)", seconds))
    wbf_rate = n_boxes / timings[0][1]
    lines = [
        f"{n_images:,} images, {n_boxes:,} worker boxes ({n_boxes / n_images:.1f} per image), one process, "
        f"best of {repeats} run{'s' * (repeats > 1)} per method.",
        "",
        "| method | images/s | boxes/s | ms/image | x WBF |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, seconds in timings:
        rate = n_boxes / seconds
        lines.append(
            f"| {name} | {n_images / seconds:,.0f} | {rate:,.0f} | {1000 * seconds / n_images:.3f} "
            f"| {rate / wbf_rate:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="synthetic images per scenario")
    parser.add_argument("--seeds", type=int, default=5, help="seeds for the real-data sub-samples")
    parser.add_argument("--synthetic-seeds", type=int, default=1, help="seeds per synthetic scenario")
    parser.add_argument("--permutations", type=int, default=5, help="shuffles for the determinism check")
    parser.add_argument("--quick", action="store_true", help="1,000 synthetic images, 2 seeds, 2 shuffles")
    parser.add_argument("--repeats", type=int, default=3, help="speed: best of this many runs per method")
    parser.add_argument("--only", choices=["real", "synthetic", "determinism", "speed"], action="append")
    args = parser.parse_args()
    if args.quick:
        args.images, args.seeds, args.permutations = min(args.images, 1000), min(args.seeds, 2), 2
    parts = args.only or ["real", "synthetic", "determinism", "speed"]
    report = []
    if "real" in parts:
        report.append(f"### Real: pedestrians-dev, {args.seeds} seeds\n\n" + run_real(args.seeds, 0.0))
        report.append(f"### Real, boxes >= 30 px wide, {args.seeds} seeds\n\n" + run_real(args.seeds, 30.0))
    if "synthetic" in parts:
        report.append(
            f"### Synthetic: {args.images:,} images per scenario\n\n"
            + run_synthetic(args.images, args.synthetic_seeds)
        )
    if "determinism" in parts:
        det_images = min(args.images, 1000)
        report.append(
            f"### Determinism: identical output under {args.permutations} shuffles of workers and boxes "
            f"({det_images:,} synthetic images)\n\n" + run_determinism(det_images, args.permutations)
        )
    if "speed" in parts:
        report.append("### Speed (base scenario)\n\n" + run_speed(args.images, args.repeats))
    print("\n\n".join(report))


if __name__ == "__main__":
    main()

"""Adaptive overlap benchmark: `StoppingRule` replayed on real and simulated crowds against fixed k.

Real: tests/data/pedestrians-dev.jsonl (7 MTurk answers per image, expert boxes). Each image's
workers are taken in a seeded random order; every image starts with `min_workers` answers, and after
each round (worker weights from `IoUVote` over the job so far) the next answer is added only where
the rule asks, up to `max_workers` or the 7 answers there are. Fixed k = 2..7 takes the first k of
the same orders, in the same run. The final answers are consolidated by the default `IoUVote`.
Simulated: `CrowdSimulator` with 25 % spammers (a `benchmarks.consolidation.Scenario`), 7 answers
per image, replayed the same way, reporting where the extra answers went. Prints markdown tables
and writes the quality/answers plot.

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.adaptive                     # 5 seeds, ~3 minutes
    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.adaptive --seeds 2 --images 300 --plot ''
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.box_metrics import Boxes, detection_metrics
from benchmarks.consolidation import (
    REAL_DATA,
    Scenario,
    iou_vote,
    load_real,
    make_crowd,
    real_object,
    synthetic,
)
from orchestrator.consolidation import IoUVote, ObjectAnswers, StoppingRule

PLOT = Path(__file__).resolve().parents[1] / "docs" / "adaptive-overlap.png"
TOLERANCES = (0.04, 0.06, 0.08, 0.10, 0.12, 0.14, 0.16, 0.20, 0.25)
FIXED = (2, 3, 4, 5, 6, 7)
BASELINE_K = 5
LABELS = ["pedestrian"]


def real_pools(rows: list[dict], seed: int) -> list[ObjectAnswers]:
    """Every image with all its answers, workers in a seeded random order."""
    rng = np.random.default_rng(seed)
    return [
        real_object(row, [row["workers"][i] for i in rng.permutation(len(row["workers"]))]) for row in rows
    ]


def first(pools: Sequence[ObjectAnswers], counts: Sequence[int]) -> list[ObjectAnswers]:
    """Each object with the first `counts[i]` answers of its pool."""
    return [p.model_copy(update={"answers": p.answers[:c]}) for p, c in zip(pools, counts, strict=True)]


def replay(pools: Sequence[ObjectAnswers], rule: StoppingRule, labels: list[str]) -> list[ObjectAnswers]:
    """Start every object with `rule.min_workers` answers of its pool; each round, weigh the workers
    over the whole job so far and add the next answer where the rule asks (and the pool has one)."""
    counts = np.array([min(rule.min_workers, len(p.answers)) for p in pools])
    available = np.array([len(p.answers) for p in pools])
    while True:
        objects = first(pools, counts)
        weights = IoUVote().fit(objects, labels=labels).skills_
        wants = np.array([d.needs_more for d in rule.fit_predict(objects, weights, labels)], dtype=bool)
        grow = wants & (counts < available)
        if not grow.any():
            return objects
        counts += grow


@dataclass
class Point:
    name: str
    answers: float
    metrics: dict[str, float]


def score(objects: list[ObjectAnswers], truth: list[Boxes], labels: list[str]) -> dict[str, float]:
    return detection_metrics(truth, iou_vote()(objects, labels, 0))


def mean_point(name: str, runs: list[tuple[list[ObjectAnswers], list[Boxes]]], labels: list[str]) -> Point:
    scores = [score(objects, truth, labels) for objects, truth in runs]
    answers = np.mean([np.mean([len(o.answers) for o in objects]) for objects, _ in runs])
    return Point(name, float(answers), {k: float(np.mean([s[k] for s in scores])) for k in scores[0]})


def run_real(seeds: int, max_workers: int) -> tuple[list[Point], list[Point]]:
    rows, truth = load_real(REAL_DATA)
    pools = [real_pools(rows, seed) for seed in range(seeds)]
    fixed = []
    for k in FIXED:
        fixed.append(mean_point(f"fixed k={k}", [(first(p, [k] * len(p)), truth) for p in pools], LABELS))
        print(f"  {fixed[-1]}", flush=True)
    adaptive = []
    for tolerance in TOLERANCES:
        rule = StoppingRule(max_workers=max_workers, edge_tolerance=tolerance)
        runs = [(replay(p, rule, LABELS), truth) for p in pools]
        adaptive.append(mean_point(f"adaptive edge_tolerance={tolerance:.2f}", runs, LABELS))
        print(f"  {adaptive[-1]}", flush=True)
    return fixed, adaptive


COLUMNS = [("F1_75", "F1@.75"), ("mIoU", "mIoU"), ("F1_50", "F1@.5"), ("P50", "P@.5"), ("R50", "R@.5")]


def table(points: list[Point], baseline: Point) -> str:
    head = "| run | answers / image | answers saved vs k=5 | " + " | ".join(c for _, c in COLUMNS) + " |"
    lines = [head, "|---|---:|---:|" + "---:|" * len(COLUMNS)]
    for p in points:
        saved = 1 - p.answers / baseline.answers
        # Four decimals: the targets compare the adaptive runs with k = 5 at the third.
        values = " | ".join(f"{p.metrics[k]:.4f}" for k, _ in COLUMNS)
        lines.append(f"| {p.name} | {p.answers:.2f} | {100 * saved:+.0f} % | {values} |")
    return "\n".join(lines)


def plot(fixed: list[Point], adaptive: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, (key, title) in zip(axes, [("F1_75", "F1@0.75"), ("mIoU", "matched mean IoU")], strict=True):
        ax.plot([p.answers for p in fixed], [p.metrics[key] for p in fixed], "o-", label="fixed k = 2..7")
        ax.plot(
            [p.answers for p in adaptive],
            [p.metrics[key] for p in adaptive],
            "s-",
            label="adaptive, edge_tolerance",
        )
        for p in adaptive:
            ax.annotate(p.name.rsplit("=", 1)[1], (p.answers, p.metrics[key]), fontsize=7, alpha=0.7)
        ax.set_xlabel("answers per image")
        ax.set_title(f"{title}, pedestrians-dev")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=110)


SPAMMERS = Scenario(
    "25% spammers, 1.3 objects per image as in the real data, 7 answers drawn",
    spammer_rate=0.25,
    objects_per_image=1.3,
    workers_per_image=7,
)


def run_spammers(n_images: int, seeds: int, max_workers: int) -> str:
    """25 % spammers: adaptive vs fixed k = 5, and answers by spammers among each image's first answers."""
    rule = StoppingRule(max_workers=max_workers)
    fixed_runs, adaptive_runs = [], []
    by_spammers: dict[int, list[int]] = {}
    for seed in range(seeds):
        data = synthetic(SPAMMERS, n_images, seed)
        crowd = make_crowd(SPAMMERS, seed)
        # The simulator lists an image's workers by id; the replay takes them in a random order.
        rng = np.random.default_rng(seed)
        pools = [
            o.model_copy(update={"answers": [o.answers[i] for i in rng.permutation(len(o.answers))]})
            for o in data.objects
        ]
        adaptive = replay(pools, rule, data.labels)
        fixed_runs.append((first(pools, [BASELINE_K] * len(pools)), data.truth))
        adaptive_runs.append((adaptive, data.truth))
        for obj in adaptive:
            spammers = sum(crowd.worker(a.worker_id).spammer for a in obj.answers[: rule.min_workers])
            by_spammers.setdefault(spammers, []).append(len(obj.answers))
    labels = data.labels
    points = [
        mean_point(f"fixed k={BASELINE_K}", fixed_runs, labels),
        mean_point("adaptive", adaptive_runs, labels),
    ]
    print(f"  {points}", flush=True)
    extra_total = sum(n - rule.min_workers for counts in by_spammers.values() for n in counts)
    images_total = sum(len(counts) for counts in by_spammers.values())
    lines = [
        table(points, points[0]),
        "",
        f"| spammers among the first {rule.min_workers} answers | images | answers / image | share of images "
        "| share of the extra answers |",
        "|---:|---:|---:|---:|---:|",
    ]
    for spammers, counts in sorted(by_spammers.items()):
        extra = sum(n - rule.min_workers for n in counts)
        share = 100 * len(counts) / images_total
        lines.append(
            f"| {spammers} | {len(counts):,} | {np.mean(counts):.2f} | {share:.0f} % "
            f"| {100 * extra / max(extra_total, 1):.0f} % |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, default=5, help="worker orders per image (real) and crowds (simulated)"
    )
    parser.add_argument("--max-workers", type=int, default=7, help="the rule's max_workers")
    parser.add_argument("--images", type=int, default=1000, help="simulated images per seed")
    parser.add_argument("--plot", default=str(PLOT), help="PNG to write ('' for none)")
    args = parser.parse_args()
    fixed, adaptive = run_real(args.seeds, args.max_workers)
    baseline = next(p for p in fixed if p.name == f"fixed k={BASELINE_K}")
    report = [
        f"### Real: pedestrians-dev, {args.seeds} seeds, max_workers {args.max_workers}\n\n"
        + table(fixed + adaptive, baseline)
    ]
    if args.plot:
        plot(fixed, adaptive, Path(args.plot))
    report.append(
        f"### Simulated: 25 % spammers, 3 classes, 1.3 objects per image, {args.images:,} images x "
        f"{args.seeds} seeds\n\n" + run_spammers(args.images, args.seeds, args.max_workers)
    )
    print("\n\n".join(report))


if __name__ == "__main__":
    main()

"""Gold tasks benchmark: gold-first worker weights against agreement weights on the same simulated crowd.

Each worker also answers gold images (known boxes) at the job's gold rate, as the portal mixes them
in; their `GoldScore`s feed IoUVote (`fit(..., gold=...)`). The job's own images are scored against
their truth (precision, recall, F1 at IoU 0.5 and 0.75), and blocking by `gold_min_f1` after
`gold_min_seen` gold tasks is scored against the crowd's true spammers. Prints markdown tables.

    .venv/bin/python -m benchmarks.gold               # 2,000 images, 3 seeds
    .venv/bin/python -m benchmarks.gold --quick       # 500 images, 2 seeds
"""

from __future__ import annotations

import argparse
import math
from collections import Counter

import numpy as np

from benchmarks.box_metrics import detection_metrics
from benchmarks.consolidation import SCENARIOS, Scenario, make_crowd, result_boxes, synthetic
from orchestrator.consolidation import GoldScore, IoUVote, ObjectAnswers, score_gold, synthetic_dataset

GOLD_RATE = 0.1
GOLD_MIN_F1 = 0.5
GOLD_MIN_SEEN = 5
GOLD_IMAGES = 200
COLUMNS = ("P50", "R50", "F1_50", "P75", "R75", "F1_75")


def gold_scores(scenario: Scenario, objects: list[ObjectAnswers], seed: int) -> dict[str, GoldScore]:
    """Each worker's score on gold images: one gold task per GOLD_RATE share of its tasks, at least one."""
    crowd = make_crowd(scenario, seed)  # the same workers as the job's crowd
    gold = synthetic_dataset(GOLD_IMAGES, scenario.objects_per_image, scenario.n_classes, seed + 10_000)
    tasks = Counter(answer.worker_id for obj in objects for answer in obj.answers)
    rng = np.random.default_rng(seed)
    scores = {}
    for worker, n in sorted(tasks.items()):
        seen = min(len(gold), math.ceil(GOLD_RATE * n / (1 - GOLD_RATE)))
        total = GoldScore()
        for i in rng.choice(len(gold), seen, replace=False).tolist():
            image = gold[i]
            total += score_gold(
                crowd.answer(worker, image.boxes, image.width, image.height, rng), image.boxes
            )
        scores[worker] = total
    return scores


def blocking(scenario: Scenario, scores: dict[str, GoldScore], seed: int) -> dict[str, float]:
    """Share of spammers blocked, and of honest workers blocked by mistake."""
    crowd = make_crowd(scenario, seed)
    blocked = {w for w, s in scores.items() if s.tasks >= GOLD_MIN_SEEN and s.f1 < GOLD_MIN_F1}
    spammers = {w for w in scores if crowd.worker(w).spammer}
    honest = set(scores) - spammers
    return {
        "spammers blocked": len(blocked & spammers) / len(spammers) if spammers else 1.0,
        "honest blocked": len(blocked & honest) / len(honest) if honest else 0.0,
    }


def run(n_images: int, seeds: int) -> str:
    quality, blocks = [], []
    for scenario in [s for s in SCENARIOS if s.spammer_rate == 0.25]:
        runs: dict[str, list[dict]] = {"agreement": [], "gold first": []}
        block_runs = []
        for seed in range(seeds):
            data = synthetic(scenario, n_images, seed)
            scores = gold_scores(scenario, data.objects, seed)
            for name, gold in (("agreement", None), ("gold first", scores)):
                results = IoUVote().fit(data.objects, data.labels, gold=gold).results_
                runs[name].append(detection_metrics(data.truth, result_boxes(results, data.labels)))
            block_runs.append(blocking(scenario, scores, seed))
        for name, metrics in runs.items():
            mean = {k: float(np.mean([m[k] for m in metrics])) for k in COLUMNS}
            quality.append(
                f"| {scenario.name} | {name} | " + " | ".join(f"{mean[k]:.3f}" for k in COLUMNS) + " |"
            )
            print(f"  {scenario.name} / {name}: {mean}", flush=True)
        mean_block = {k: float(np.mean([b[k] for b in block_runs])) for k in block_runs[0]}
        blocks.append(
            f"| {scenario.name} | {mean_block['spammers blocked']:.3f} | {mean_block['honest blocked']:.3f} |"
        )
    head = "| scenario | weights | " + " | ".join(COLUMNS) + " |\n|---|---|" + "---:|" * len(COLUMNS)
    block_head = "| scenario | spammers blocked | honest workers blocked |\n|---|---:|---:|"
    return "\n".join([head, *quality, "", block_head, *blocks])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 images, 2 seeds")
    args = parser.parse_args()
    n_images, seeds = (500, 2) if args.quick else (2000, 3)
    print(
        f"{n_images} images a seed, {seeds} seeds; gold rate {GOLD_RATE}, {GOLD_IMAGES} gold images; "
        f"blocking below gold F1 {GOLD_MIN_F1} after {GOLD_MIN_SEEN} gold tasks\n"
    )
    print(run(n_images, seeds))


if __name__ == "__main__":
    main()

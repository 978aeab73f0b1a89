"""The worst cases of consolidating one object, timed for docs/reliability.md (never asserted).

The parser caps an answer at MAX_BOXES_PER_ANSWER boxes, so one object's work is bounded by the
number of workers times that cap; these cases measure the cap, a large crowd at the cap, a flood
from one worker, and many boxes piled on one spot (every pair overlapping).
"""

from __future__ import annotations

import time

from orchestrator.consolidation import (
    MAX_BOXES_PER_ANSWER,
    AnswerReport,
    IoUVote,
    ObjectAnswers,
    parse_element_answer,
)

LABELS = ["car", "pedestrian", "sign"]
SIZE = {"width": 4000, "height": 4000}


def _answer(worker: str, boxes: list[dict]):
    content = {"annotatedResult": {"boundingBoxes": boxes, "inputImageProperties": SIZE}}
    return parse_element_answer(content, worker, LABELS, AnswerReport())


def _grid(count: int, shift: int) -> list[dict]:
    """`count` separate boxes on a grid, nudged by `shift` pixels per worker."""
    return [
        {
            "label": LABELS[i % 3],
            "left": (i % 60) * 60 + shift,
            "top": (i // 60) * 60 + shift,
            "width": 40,
            "height": 40,
        }
        for i in range(count)
    ]


def _pile(count: int, shift: int) -> list[dict]:
    """`count` boxes around one spot, overlapping each other but rarely near-duplicates."""
    return [
        {
            "label": LABELS[i % 3],
            "left": 100 + (i * 37 + shift) % 400,
            "top": 100 + (i * 53) % 400,
            "width": 300 + (i * 71) % 500,
            "height": 300 + (i * 29) % 500,
        }
        for i in range(count)
    ]


def _timed(name: str, answers: list) -> tuple[str, int, float]:
    obj = ObjectAnswers(dataset_object_id="0", source_ref="s3://b/0.jpg", answers=answers)
    started = time.perf_counter()
    IoUVote(weighting="agreement").fit_predict([obj], labels=LABELS)
    return name, sum(len(a.boxes) for a in answers), time.perf_counter() - started


def worst_cases() -> list[tuple[str, int, float]]:
    cap = MAX_BOXES_PER_ANSWER
    flood = [_answer("flood", _grid(5 * cap, 0))] + [_answer(f"w{i}", _grid(20, i)) for i in range(4)]
    return [
        _timed(
            f"5 workers x {cap:,} boxes (the per-answer cap)",
            [_answer(f"w{i}", _grid(cap, i)) for i in range(5)],
        ),
        _timed(f"9 workers x {cap:,} boxes", [_answer(f"w{i}", _grid(cap, i)) for i in range(9)]),
        _timed(f"one worker sends {5 * cap:,} boxes (kept: {cap:,}), 4 workers x 20", flood),
        _timed(
            "5 workers x 300 boxes piled on one spot", [_answer(f"w{i}", _pile(300, i)) for i in range(5)]
        ),
    ]

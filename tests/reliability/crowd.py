"""Deterministic portal workers: every task of a job answered through the leasing functions.

Each answer is a function of the object id and the worker's number only, and is submitted at a
fixed time, so two runs of the same job store byte-identical answers whatever happened in between.
"""

from __future__ import annotations

import json

from orchestrator.backends.portal.db import Database
from orchestrator.backends.portal.leasing import submit_answer, take_task
from orchestrator.backends.portal.simulate import simulated_worker

# Every answer is submitted at this instant (2026-01-01T00:00:00Z), so outputs never depend on the clock.
SUBMITTED_AT = 1_767_225_600.0
IMAGE_SIZE = (640, 480)


def answer(object_id: str, worker: int, labels: list[str], spread: int = 1) -> dict:
    """The element's answer of worker `worker` for `object_id`: one box per label, jittered by worker,
    `spread` times as much on odd objects (workers who disagree there, for adaptive overlap)."""
    base = int(object_id) if object_id.isdigit() else len(object_id)
    shift = worker * (spread if base % 2 else 1)
    boxes = [
        {
            "label": label,
            "left": 20 + 40 * i + base % 7 + shift,
            "top": 30 + 25 * i + base % 5,
            "width": 80 + worker % 3,
            "height": 60 + base % 4,
        }
        for i, label in enumerate(labels)
    ]
    width, height = IMAGE_SIZE
    return {
        "annotatedResult": {
            "boundingBoxes": boxes,
            "inputImageProperties": {"width": width, "height": height},
        }
    }


def workers(db: Database, count: int, prefix: str = "crowd") -> list[int]:
    """Database ids of workers `<prefix>-1..N`, created on first use."""
    with db.write() as session:
        return [simulated_worker(session, f"{prefix}-{i}", None, 0.0).id for i in range(1, count + 1)]


def answer_all(
    db: Database, job: str, labels: list[str], count: int, limit: int | None = None, spread: int = 1
) -> int:
    """Workers `crowd-1..count` answer the job's tasks in turn; at most `limit` answers. Returns how many."""
    done = 0
    for number, worker_id in enumerate(workers(db, count), start=1):
        while limit is None or done < limit:
            leased = take_task(db, worker_id, SUBMITTED_AT, job)
            if leased is None:
                break
            content = json.dumps(answer(leased.object_id, number, labels, spread), separators=(",", ":"))
            submit_answer(db, worker_id, leased.lease_id, content, SUBMITTED_AT)
            done += 1
    return done

"""Simulated workers: real HTTP clients of a running portal, drawing boxes with the calibrated noise model.

Each simulated worker is a thread with its own bearer token. It asks the JSON API for a task,
loads the image as a browser would, draws boxes from the image's known truth through
`crowd_simulator.CrowdSimulator`, and posts them in the `<crowd-bounding-box>` element's format,
until the portal has nothing left for it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.backends.portal.db import Database, Worker
from orchestrator.backends.portal.leasing import release_leases
from orchestrator.backends.portal.tokens import issue_token
from orchestrator.backends.portal.workers import worker_by_public_id
from orchestrator.consolidation import Box, CrowdSimulator, TruthImage
from orchestrator.errors import InputError

TRUTH_FILENAME = "truth.jsonl"


def load_truth(path: str | Path) -> dict[str, TruthImage]:
    """`truth.jsonl` lines `{"key", "width", "height", "boxes"}` by key (relative to its folder)."""
    path = Path(path)
    truth = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such truth file") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            truth[row["key"]] = TruthImage(
                image_id=row["key"],
                width=int(row["width"]),
                height=int(row["height"]),
                boxes=[Box.model_validate(box) for box in row["boxes"]],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}:{number}: not a truth line: {exc}") from None
    return truth


def find_truth_file(source_ref: str) -> Path | None:
    """The nearest `truth.jsonl` in the folders above a local image, if any."""
    from orchestrator.storage import open_object

    if source_ref.startswith("s3://"):
        return None
    store, _ = open_object(source_ref)
    for folder in (store.root, *store.root.parents):
        if (folder / TRUTH_FILENAME).is_file():
            return folder / TRUTH_FILENAME
    return None


def truth_for(source_ref: str, truth: dict[str, TruthImage]) -> TruthImage | None:
    """The truth of the image a source-ref names: the truth key that ends its path."""
    for key, image in truth.items():
        if source_ref == key or source_ref.endswith("/" + key):
            return image
    return None


def simulated_worker(session: Session, public_id: str, job_id: int | None, now: float) -> Worker:
    """The simulated worker `public_id`, created on first use."""
    return worker_by_public_id(session, public_id, name=public_id, source="simulator", now=now, job_id=job_id)


def simulated_workers(db: Database, count: int, job_id: int | None = None, prefix: str = "sim") -> list[str]:
    """Tokens for `count` simulated workers `sim-1..sim-N`, created on first use, new tokens each call."""
    with db.write() as session:
        return [
            issue_token(session, "worker", simulated_worker(session, f"{prefix}-{i}", job_id, time.time()).id)
            for i in range(1, count + 1)
        ]


def release_simulated_leases(db: Database, count: int, prefix: str = "sim") -> int:
    """Give back the tasks simulated workers `sim-1..sim-N` hold, e.g. after an error or Ctrl-C."""
    names = [f"{prefix}-{i}" for i in range(1, count + 1)]
    with db.read() as session:
        ids = list(session.scalars(select(Worker.id).where(Worker.public_id.in_(names))))
    return release_leases(db, ids, time.time())


def check_truth_labels(truth: dict[str, TruthImage], labels: list[str]) -> None:
    """An InputError when the truth has boxes of a label the job does not have."""
    unknown = sorted({box.label for image in truth.values() for box in image.boxes} - set(labels))
    if unknown:
        raise InputError(
            f"the truth has labels the job lacks: {', '.join(unknown)} (the job's: {', '.join(labels)})",
            hint="simulate a job whose labels include the truth's, or pass --truth with a matching file",
        )


@dataclass
class SimulationResult:
    """What the simulated crowd did, with the latency of each kind of request in seconds."""

    answers: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)
    take_seconds: list[float] = field(default_factory=list)
    image_seconds: list[float] = field(default_factory=list)
    submit_seconds: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.take_seconds) + len(self.image_seconds) + len(self.submit_seconds)


def simulate(
    base_url: str,
    tokens: list[str],
    truth: dict[str, TruthImage],
    labels: list[str],
    *,
    job: str | None = None,
    seed: int = 0,
    spammer_rate: float = 0.0,
    fetch_images: bool = True,
    max_tasks: int | None = None,
    timeout: float = 30.0,
    on_answer: Callable[[], None] | None = None,
) -> SimulationResult:
    """Run one thread per token until the portal has no task left for any of them.

    `max_tasks` caps the answers per worker. Spammers are `round(spammer_rate x workers)` of them.
    On any exception here (Ctrl-C included) every worker stops after its request in flight.
    """
    check_truth_labels(truth, labels)
    stop = threading.Event()
    crowd = CrowdSimulator(seed, n_workers=max(len(tokens), 1), labels=labels, spammer_rate=spammer_rate)
    profiles = crowd.workers
    image_number = {key: n for n, key in enumerate(sorted(truth))}
    result = SimulationResult()
    result_lock = threading.Lock()

    def work(index: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[index]}"}
        params = {"job": job} if job else {}
        done = 0
        with httpx.Client(base_url=base_url, headers=headers, timeout=timeout) as client:
            while (max_tasks is None or done < max_tasks) and not stop.is_set():
                started = time.perf_counter()
                response = client.post("/api/tasks/next", params=params)
                took = time.perf_counter() - started
                if response.status_code == 204:
                    break
                if response.status_code != 200:
                    _record(errors=f"take: HTTP {response.status_code}: {response.text[:200]}")
                    break
                task = response.json()
                image = truth_for(task["source_ref"], truth)
                if image is None:
                    _record(errors=f"no truth for {task['source_ref']}")
                    break
                image_took = None
                if fetch_images:
                    started = time.perf_counter()
                    loaded = client.get(task["image_url"])
                    image_took = time.perf_counter() - started
                    if loaded.status_code != 200:
                        _record(errors=f"image: HTTP {loaded.status_code} for {task['image_url']}")
                        break
                # One generator per (worker, image): the same seed gives the same boxes whatever order
                # the threads run in.
                rng = np.random.default_rng([seed, index, image_number[image.image_id]])
                boxes = crowd.answer(profiles[index], image.boxes, image.width, image.height, rng)
                answer = {
                    "taskAnswers": [
                        {
                            "annotatedResult": {
                                "boundingBoxes": [
                                    {
                                        "label": b.label,
                                        "left": round(b.left),
                                        "top": round(b.top),
                                        "width": max(1, round(b.width)),
                                        "height": max(1, round(b.height)),
                                    }
                                    for b in boxes
                                ],
                                "inputImageProperties": {"width": image.width, "height": image.height},
                            }
                        }
                    ]
                }
                started = time.perf_counter()
                response = client.post(task["submit_url"], json=answer)
                submit_took = time.perf_counter() - started
                _record(take=took, image=image_took, submit=submit_took)
                if response.status_code == 200:
                    done += 1
                    _record(answers=1)
                    if on_answer:
                        on_answer()
                elif response.status_code == 409:
                    _record(refused=1)
                else:
                    _record(errors=f"submit: HTTP {response.status_code}: {response.text[:200]}")
                    break

    def _record(
        *,
        take: float | None = None,
        image: float | None = None,
        submit: float | None = None,
        answers: int = 0,
        refused: int = 0,
        errors: str | None = None,
    ) -> None:
        with result_lock:
            if take is not None:
                result.take_seconds.append(take)
            if image is not None:
                result.image_seconds.append(image)
            if submit is not None:
                result.submit_seconds.append(submit)
            result.answers += answers
            result.refused += refused
            if errors:
                result.errors.append(errors)

    started = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=max(len(tokens), 1), thread_name_prefix="sim-worker")
    try:
        for future in [pool.submit(work, i) for i in range(len(tokens))]:
            future.result()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    result.elapsed = time.perf_counter() - started
    return result

"""Portal load benchmark: many simulated workers against one portal process on SQLite.

Launches a job of N objects (the sample bucket's scenes, repeated) with K answers each on the
`portal` backend, starts `labeljob portal serve` as its own process on a loopback port, and runs
W simulated workers (threads, real HTTP) until every object has its answers. Reports requests per
second, p50/p95 latency of taking a task, loading its image and submitting the answer, and checks
in the database that no answer was lost or duplicated.

    .venv/bin/python -m benchmarks.portal_load                       # 2,000 objects x 3, 50 workers
    .venv/bin/python -m benchmarks.portal_load --objects 200 --workers 10
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import func, select

from orchestrator.backends.portal.backend import PortalBackend
from orchestrator.backends.portal.db import Answer, Task
from orchestrator.backends.portal.simulate import load_truth, simulate, simulated_workers
from orchestrator.jobs import JobStore, launch_job, read_items
from orchestrator.spec import parse_spec
from orchestrator.storage import open_store

SAMPLE_BUCKET = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "bucket"
LABELS = ["car", "pedestrian", "sign"]
SERVER_START_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentiles(seconds: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(seconds, n=100)
    return {"p50_ms": round(cuts[49] * 1000, 1), "p95_ms": round(cuts[94] * 1000, 1)}


def run(
    objects: int, answers_per_object: int, workers: int, spammers: float, folder: Path, db_url: str | None
) -> dict:
    truth = load_truth(SAMPLE_BUCKET / "truth.jsonl")
    scenes = [key for key in truth if "/img_" in key]
    manifest = folder / "load.manifest"
    manifest.write_text(
        "".join(
            json.dumps({"source-ref": (SAMPLE_BUCKET / scenes[i % len(scenes)]).as_uri()}) + "\n"
            for i in range(objects)
        )
    )
    spec = parse_spec(
        {
            "name": "portal-load",
            "labels": LABELS,
            "input_manifest": str(manifest),
            "output": str(folder / "labeling"),
            "task": {"workers_per_object": answers_per_object, "time_limit": "10m"},
        }
    )
    workspace = open_store(folder / "workspace")
    backend = PortalBackend(workspace, db_url=db_url)
    launch_job(spec, backend, JobStore(workspace), read_items(spec))
    db = backend.database()
    tokens = simulated_workers(db, workers)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-c",
        "from orchestrator.cli import main; main()",
        "--workspace",
        str(folder / "workspace"),
        "portal",
        "serve",
        "--port",
        str(port),
        "--db",
        db.url,
    ]
    # The server prints the admin link (a secret) on stdout: keep it out of the benchmark's output.
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            try:
                httpx.get(url + "/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the portal did not start: {server.stderr.read().decode()[-2000:]}"
                    ) from None
                time.sleep(0.1)
        result = simulate(
            url,
            tokens,
            truth,
            LABELS,
            job=spec.name,
            seed=0,
            spammer_rate=spammers,
            max_tasks=objects,  # a bound on each worker's loop, whatever happens
            timeout=60,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)

    with db.read() as session:
        stored = session.scalar(select(func.count(Answer.id)))
        unique = session.scalar(
            select(func.count()).select_from(select(Answer.task_id, Answer.worker_id).distinct().subquery())
        )
        wrong_tasks = session.scalar(select(func.count(Task.id)).where(Task.answered != Task.wanted))
    expected = objects * answers_per_object
    return {
        "objects": objects,
        "answers_per_object": answers_per_object,
        "workers": workers,
        "spammer_rate": spammers,
        "database": db.url.split(":")[0],
        "seconds": round(result.elapsed, 1),
        "requests": result.requests,
        "requests_per_second": round(result.requests / result.elapsed, 1),
        "answers_per_second": round(result.answers / result.elapsed, 1),
        "take": percentiles(result.take_seconds),
        "image": percentiles(result.image_seconds),
        "submit": percentiles(result.submit_seconds),
        "answers_accepted": result.answers,
        "answers_refused": result.refused,
        "client_errors": len(result.errors),
        "answers_in_db": stored,
        "unique_task_worker_pairs": unique,
        "tasks_not_exactly_full": wrong_tasks,
        "no_answer_lost_or_duplicated": stored == unique == expected == result.answers and wrong_tasks == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--answers", type=int, default=3, help="answers per object")
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--spammers", type=float, default=0.1)
    parser.add_argument("--db", help="an empty database URL to use instead of SQLite in a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="portal-load-") as folder:
        summary = run(args.objects, args.answers, args.workers, args.spammers, Path(folder), args.db)
    print(json.dumps(summary, indent=2))
    if not summary["no_answer_lost_or_duplicated"]:
        sys.exit(1)


if __name__ == "__main__":
    main()

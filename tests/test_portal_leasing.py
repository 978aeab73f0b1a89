"""Portal leasing: limits under concurrency, expiry, double submits, and the schema's guarantees."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from orchestrator.backends.portal import catalog, rounds
from orchestrator.backends.portal.app import create_app
from orchestrator.backends.portal.db import Answer, Lease, Task, Worker, open_database
from orchestrator.backends.portal.leasing import take_task
from orchestrator.backends.portal.server import ServerThread
from orchestrator.backends.portal.tokens import issue_token
from orchestrator.jobs import ManifestItem
from orchestrator.spec import parse_spec

REPO = Path(__file__).resolve().parent.parent
SAMPLE_BUCKET = REPO / "manifests" / "examples" / "bucket"
ANSWER = {"annotatedResult": {"boundingBoxes": [], "inputImageProperties": {"width": 640, "height": 480}}}


class Clock:
    """A settable clock for lease expiry, starting now."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _images(n: int) -> list[ManifestItem]:
    scenes = sorted(p for p in (SAMPLE_BUCKET / "images").glob("img_*.jpg"))
    return [ManifestItem(str(i), scenes[i % len(scenes)].as_uri(), {}) for i in range(n)]


def _job(db, tmp_path, name: str, objects: int, wanted: int, time_limit: int = 60):
    spec = parse_spec(
        {
            "name": name,
            "labels": ["car", "pedestrian", "sign"],
            "input_manifest": str(tmp_path / "in.manifest"),
            "output": str(tmp_path / "out"),
            "task": {"workers_per_object": wanted, "time_limit": time_limit},
        }
    )
    with db.write() as session:
        job, _ = catalog.load_job(session, spec, _images(objects), time.time())
    return job


def _workers(db, n: int, job_id: int | None = None) -> list[str]:
    tokens = []
    with db.write() as session:
        for i in range(n):
            worker = Worker(
                public_id=f"t-{job_id}-{i}", name=f"t{i}", source="invite", job_id=job_id, created_at=0
            )
            session.add(worker)
            session.flush()
            tokens.append(issue_token(session, "worker", worker.id))
    return tokens


@pytest.fixture
def db_url(portal_db_url):
    return portal_db_url


def _counts(db, job_id: int) -> tuple[list[tuple[int, int, int]], Counter]:
    """(answered, wanted, answers in the table) per task, and answers per (task, worker)."""
    with db.read() as session:
        tasks = session.execute(
            select(Task.answered, Task.wanted, func.count(Answer.id))
            .outerjoin(Answer, Answer.task_id == Task.id)
            .where(Task.job_id == job_id)
            .group_by(Task.id)
        ).all()
        pairs = Counter(session.execute(select(Answer.task_id, Answer.worker_id)).all())
    return [tuple(row) for row in tasks], pairs


def _crowd(urls: list[str], tokens: list[str]) -> Counter:
    """Each token a thread on `urls[i % len(urls)]`, answering until told there is nothing left.

    Three in ten answers are sent twice (a double click). Returns the submit outcomes and "error"
    for each unexpected reply.
    """
    outcomes: Counter = Counter()
    lock = threading.Lock()

    def worker(token: str, seed: int) -> None:
        rng = random.Random(seed)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=urls[seed % len(urls)], headers=headers, timeout=30) as client:
            while (taken := client.post("/api/tasks/next")).status_code == 200:
                url = taken.json()["submit_url"]
                replies = [client.post(url, json={"taskAnswers": [ANSWER]})]
                if rng.random() < 0.3:
                    replies.append(client.post(url, json=ANSWER))
                with lock:
                    outcomes.update(r.json()["status"] if r.status_code == 200 else "error" for r in replies)
            if taken.status_code != 204:
                with lock:
                    outcomes["error"] += 1

    threads = [threading.Thread(target=worker, args=(t, i)) for i, t in enumerate(tokens)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def _assert_every_task_has_exactly_its_answers(db, job_id: int, objects: int, wanted: int, outcomes) -> None:
    tasks, pairs = _counts(db, job_id)
    assert len(tasks) == objects
    assert all(answered == wanted == stored for answered, wanted, stored in tasks)
    assert outcomes["accepted"] == objects * wanted and outcomes["error"] == 0
    assert max(pairs.values()) == 1
    assert sum(pairs.values()) == objects * wanted


def test_many_workers_at_once_never_overfill_nor_repeat(tmp_path, db_url):
    """Two portal instances share the database, as two processes would; 16 workers alternate."""
    db = open_database(db_url)
    job = _job(db, tmp_path, "crowd", objects=25, wanted=3)
    tokens = _workers(db, 16)
    servers = [ServerThread(create_app(db_url, None)).start() for _ in range(2)]
    try:
        outcomes = _crowd([server.url for server in servers], tokens)
    finally:
        for server in servers:
            server.stop()
    _assert_every_task_has_exactly_its_answers(db, job.id, 25, 3, outcomes)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_portal_serve_processes_share_one_postgresql_job(tmp_path, postgres_url):
    """30 workers split across two `labeljob portal serve` processes on one database and one job."""
    db = open_database(postgres_url)
    job = _job(db, tmp_path, "shared", objects=12, wanted=3)
    tokens = _workers(db, 30)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    urls, processes = [], []
    for _ in range(2):
        port = _free_port()
        command = [sys.executable, "-c", "from orchestrator.cli import main; main()"]
        command += ["--workspace", str(tmp_path / "ws"), "-q", "portal", "serve", "--port", str(port)]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url, process in zip(urls, processes, strict=True):
            _wait_for(url, process)
        outcomes = _crowd(urls, tokens)
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)

    _assert_every_task_has_exactly_its_answers(db, job.id, 12, 3, outcomes)
    with db.read() as session:
        leases = session.execute(
            select(Lease.task_id, func.count(Lease.id), func.count(Lease.submitted_at)).group_by(
                Lease.task_id
            )
        ).all()
    with db.read() as session:
        assert catalog.server_url(session) in urls  # for `portal invite` and `portal simulate`
    # No lease expired in between, so a task with more leases than answers was leased twice.
    assert sorted((count, submitted) for _, count, submitted in leases) == [(3, 3)] * 12


def _wait_for(url: str, process: subprocess.Popen) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise AssertionError(f"portal serve exited with {process.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no portal answered at {url}")


def test_expired_lease_goes_back_and_late_submit_is_refused(tmp_path, db_url):
    clock = Clock()
    db = open_database(db_url)
    _job(db, tmp_path, "expiry", objects=1, wanted=1, time_limit=60)
    slow, quick = _workers(db, 2)
    client = TestClient(create_app(db_url, None, clock=clock))
    auth = {"slow": {"Authorization": f"Bearer {slow}"}, "quick": {"Authorization": f"Bearer {quick}"}}

    first = client.post("/api/tasks/next", headers=auth["slow"]).json()
    assert client.post("/api/tasks/next", headers=auth["quick"]).status_code == 204  # leased to slow
    clock.now += 61
    second = client.post("/api/tasks/next", headers=auth["quick"]).json()
    assert second["object_id"] == first["object_id"]

    late = client.post(first["submit_url"], json=ANSWER, headers=auth["slow"])
    assert late.status_code == 409
    assert late.json()["error"] == "expired"
    assert "ran out" in late.json()["message"]
    assert (
        client.post(second["submit_url"], json=ANSWER, headers=auth["quick"]).json()["status"] == "accepted"
    )
    assert client.post("/api/tasks/next", headers=auth["slow"]).status_code == 204  # the object is full


def test_own_expired_lease_is_renewed_and_live_lease_resumed(tmp_path, db_url):
    clock = Clock()
    db = open_database(db_url)
    _job(db, tmp_path, "renew", objects=2, wanted=1, time_limit=60)
    (token,) = _workers(db, 1)
    client = TestClient(create_app(db_url, None, clock=clock), headers={"Authorization": f"Bearer {token}"})
    first = client.post("/api/tasks/next").json()
    assert client.post("/api/tasks/next").json() == first  # a reload shows the same task
    clock.now += 120
    again = client.post("/api/tasks/next").json()
    assert again["lease_id"] == first["lease_id"] and again["expires_at"] > first["expires_at"]
    assert client.post(again["submit_url"], json=ANSWER).json()["status"] == "accepted"


def test_double_submit_is_idempotent(tmp_path, db_url):
    db = open_database(db_url)
    job = _job(db, tmp_path, "double", objects=1, wanted=2)
    (token,) = _workers(db, 1)
    client = TestClient(create_app(db_url, None), headers={"Authorization": f"Bearer {token}"})
    task = client.post("/api/tasks/next").json()
    first = client.post(task["submit_url"], json=ANSWER).json()
    other = {
        "annotatedResult": {"boundingBoxes": [{"label": "car", "left": 1, "top": 1, "width": 5, "height": 5}]}
    }
    second = client.post(task["submit_url"], json=other).json()
    assert first["status"] == "accepted" and second["status"] == "duplicate"
    assert second["answer_id"] == first["answer_id"]
    tasks, _ = _counts(db, job.id)
    assert tasks == [(1, 2, 1)]
    with db.read() as session:
        assert json.loads(session.scalar(select(Answer.content))) == ANSWER  # the first answer stays


def test_a_worker_never_gets_one_object_twice(tmp_path, db_url):
    db = open_database(db_url)
    _job(db, tmp_path, "once", objects=3, wanted=2)
    (token,) = _workers(db, 1)
    client = TestClient(create_app(db_url, None), headers={"Authorization": f"Bearer {token}"})
    seen = []
    while (task := client.post("/api/tasks/next")).status_code == 200:
        seen.append(task.json()["object_id"])
        client.post(task.json()["submit_url"], json=ANSWER)
    assert sorted(seen) == ["0", "1", "2"]


def test_a_new_round_refuses_a_lease_of_the_retired_one_and_earlier_workers(tmp_path, db_url):
    """docs/review.md, "On the portal": a reject retires the task and opens the next round."""
    db = open_database(db_url)
    job = _job(db, tmp_path, "rounds", objects=1, wanted=2)
    answered, drawing, fresh = _workers(db, 3)
    client = TestClient(create_app(db_url, None))
    auth = {
        name: {"Authorization": f"Bearer {t}"} for name, t in [("a", answered), ("d", drawing), ("f", fresh)]
    }
    first = client.post("/api/tasks/next", headers=auth["a"]).json()
    assert client.post(first["submit_url"], json=ANSWER, headers=auth["a"]).json()["status"] == "accepted"
    stale = client.post("/api/tasks/next", headers=auth["d"]).json()
    with db.write() as session:
        assert rounds.reopen(session, "rounds", "0", 2, time.time()) == 2

    # The lease on the retired task ended; its worker may answer the new round, the earlier one not.
    late = client.post(stale["submit_url"], json=ANSWER, headers=auth["d"])
    assert late.status_code == 409 and late.json()["error"] == "expired"
    assert client.post("/api/tasks/next", headers=auth["a"]).status_code == 204
    for name in ("d", "f"):
        task = client.post("/api/tasks/next", headers=auth[name]).json()
        assert task["object_id"] == "0" and task["lease_id"] != stale["lease_id"]
        assert client.post(task["submit_url"], json=ANSWER, headers=auth[name]).json()["status"] == "accepted"
    tasks, _ = _counts(db, job.id)
    assert sorted(tasks) == [(1, 2, 1), (2, 2, 2)]  # each round within its own slots
    with db.write() as session:
        session.execute(text("UPDATE jobs SET status = 'stopped'"))
        assert rounds.reopen(session, "rounds", "0", 2, time.time()) is None  # a stopped job stays as is


def test_someone_elses_lease_and_closed_jobs_are_refused(tmp_path, db_url):
    db = open_database(db_url)
    _job(db, tmp_path, "closing", objects=2, wanted=1)
    owner, stranger = _workers(db, 2)
    client = TestClient(create_app(db_url, None))
    task = client.post("/api/tasks/next", headers={"Authorization": f"Bearer {owner}"}).json()
    theft = client.post(task["submit_url"], json=ANSWER, headers={"Authorization": f"Bearer {stranger}"})
    assert theft.status_code == 409 and theft.json()["error"] == "unknown_lease"
    with db.write() as session:
        catalog.stop_job(session, "closing", time.time())
    closed = client.post(task["submit_url"], json=ANSWER, headers={"Authorization": f"Bearer {owner}"})
    assert closed.status_code == 409 and closed.json()["error"] == "closed"
    assert client.post("/api/tasks/next", headers={"Authorization": f"Bearer {stranger}"}).status_code == 204


def test_an_invited_worker_only_gets_its_job(tmp_path, db_url):
    db = open_database(db_url)
    _job(db, tmp_path, "first", objects=1, wanted=1)
    second = _job(db, tmp_path, "second", objects=1, wanted=1)
    (token,) = _workers(db, 1, job_id=second.id)
    client = TestClient(create_app(db_url, None), headers={"Authorization": f"Bearer {token}"})
    assert client.post("/api/tasks/next").json()["job"] == "second"
    assert client.post("/api/tasks/next", params={"job": "first"}).status_code == 204


def test_schema_refuses_extra_and_duplicate_answers(tmp_path, db_url):
    db = open_database(db_url)
    job = _job(db, tmp_path, "schema", objects=1, wanted=1)
    _workers(db, 2)
    with db.read() as session:
        task = session.scalars(select(Task).where(Task.job_id == job.id)).one()
        w1, w2 = session.scalars(select(Worker.id).order_by(Worker.id)).all()

    def add_answer(worker_id: int, slot: int, wanted: int) -> None:
        with db.write() as session:
            lease = Lease(task_id=task.id, worker_id=worker_id, started_at=0, expires_at=1)
            session.add(lease)
            session.flush()
            session.add(
                Answer(
                    task_id=task.id,
                    wanted=wanted,
                    slot=slot,
                    worker_id=worker_id,
                    lease_id=lease.id,
                    content="{}",
                    submitted_at=0,
                    seconds=0,
                )
            )

    add_answer(w1, slot=1, wanted=1)
    with pytest.raises(IntegrityError):
        add_answer(w2, slot=2, wanted=1)  # beyond the wanted count
    with pytest.raises(IntegrityError):
        add_answer(w2, slot=2, wanted=2)  # lying about wanted: the composite foreign key refuses
    with pytest.raises(IntegrityError):
        add_answer(w2, slot=1, wanted=1)  # a slot already taken


def test_a_task_locked_by_a_request_in_flight_is_waited_for_not_refused(tmp_path, postgres_url):
    """SKIP LOCKED alone told a worker "nothing left" while another request held the last task's lock."""
    db = open_database(postgres_url)
    job = _job(db, tmp_path, "locked", objects=1, wanted=2)
    _workers(db, 1)
    with db.read() as session:
        worker_id = session.scalar(select(Worker.id))
    taken: list = []
    with db.write() as holder:
        holder.execute(select(Task).where(Task.job_id == job.id).with_for_update())
        thread = threading.Thread(target=lambda: taken.append(take_task(db, worker_id, time.time())))
        thread.start()
        # Hold the lock until the taker waits on it (or has given up, the old behaviour).
        for _ in range(200):
            with db.read() as session:
                waiting = session.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            if waiting or not thread.is_alive():
                break
            time.sleep(0.05)
    thread.join(30)
    assert taken and taken[0] is not None and taken[0].job_name == "locked"


def test_no_postgresql_server_is_a_skip_that_says_why():
    from tests.postgres import _unreachable

    reason = _unreachable("postgresql+psycopg://postgres@127.0.0.1:1/test")
    assert reason.startswith("no PostgreSQL server answers at postgresql+psycopg://postgres@127.0.0.1:1/test")
    assert "PORTAL_TEST_POSTGRES_URL" in reason

"""A reject in a portal job's review sends the image back to the crowd (docs/review.md, "On the
portal"): a new round for new workers only, the earlier answers out of the new consensus, the job in
progress until the round is answered, then its outputs written again. A simulated crowd over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from orchestrator.backends.portal.app import create_app
from orchestrator.backends.portal.catalog import stop_job
from orchestrator.backends.portal.db import Answer, RetiredTask, Task, Worker
from orchestrator.backends.portal.server import ServerThread
from orchestrator.backends.portal.simulate import load_truth, simulate, simulated_workers
from orchestrator.backends.portal.tokens import issue_token
from orchestrator.consolidation import AnswerReport
from orchestrator.jobs import finish_job, launch_job, poll_job, read_items
from orchestrator.outputs import read_source_lines, read_worker_responses
from orchestrator.storage import open_object, open_store

SAMPLE_BUCKET = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "bucket"
LABELS = ["car", "pedestrian", "sign"]


@pytest.fixture
def finished(portal_spec, portal_db_url):
    """A four-image job, two answers each, finished by sim-1 and sim-2; a running portal over it."""
    keys = [json.loads(line)["key"] for line in (SAMPLE_BUCKET / "truth.jsonl").read_text().splitlines()]
    spec, jobs, backend = portal_spec("rework-1", keys[:4], task={"workers_per_object": 2})
    launch_job(spec, backend, jobs, read_items(spec))
    db = backend.database()
    truth = load_truth(SAMPLE_BUCKET / "truth.jsonl")

    def poll():
        return poll_job(spec.name, backend, jobs, finish=lambda s, r: finish_job(s, r, jobs))

    with ServerThread(create_app(db.url, jobs.workspace)) as server:
        tokens = simulated_workers(db, 4)
        # One worker after another: at once, PostgreSQL's SKIP LOCKED may leave one a task short.
        for token in tokens[:2]:
            first = simulate(server.url, [token], truth, LABELS, job=spec.name, seed=1)
            assert (first.answers, first.errors) == (4, [])
        assert poll().status == "completed"
        with db.write() as session:
            admin = issue_token(session, "admin")
        yield spec, jobs, db, server, tokens, admin, truth, poll


def _answers_by_worker(db, object_id: str) -> dict[str, list[str]]:
    with db.read() as session:
        rows = session.execute(
            select(Task.object_id, Worker.public_id)
            .join(Answer, Answer.task_id == Task.id)
            .join(Worker, Worker.id == Answer.worker_id)
            .where(Task.object_id.startswith(object_id))
        ).all()
    found: dict[str, list[str]] = {}
    for task_object, worker in rows:
        found.setdefault(task_object, []).append(worker)
    return {key: sorted(value) for key, value in found.items()}


def test_a_worker_cannot_reject_and_a_stopped_job_keeps_its_tasks(finished):
    spec, jobs, db, server, tokens, admin, truth, poll = finished
    as_worker = httpx.post(
        f"{server.url}/review/{spec.name}/api/items/0",
        json={"action": "reject"},
        headers={"Authorization": f"Bearer {tokens[2]}"},
    )
    assert as_worker.status_code == 403
    anonymous = httpx.post(f"{server.url}/review/{spec.name}/api/items/0", json={"action": "reject"})
    assert anonymous.status_code == 401
    with db.read() as session:
        assert session.scalar(select(func.count(RetiredTask.task_id))) == 0
    assert jobs.get(spec.name).status == "completed"

    # A stopped job takes no new answers: the reject is recorded for rejected.manifest only.
    with db.write() as session:
        assert stop_job(session, spec.name, 0.0)
    headers = {"Authorization": f"Bearer {admin}"}
    stopped = httpx.post(
        f"{server.url}/review/{spec.name}/api/items/0", json={"action": "reject"}, headers=headers
    )
    assert stopped.json()["decision"] == "reject"
    with db.read() as session:
        assert session.scalar(select(func.count(RetiredTask.task_id))) == 0
    assert jobs.get(spec.name).status == "completed" and jobs.get(spec.name).outputs


def test_a_rejected_image_is_answered_again_by_new_workers_and_the_outputs_rewritten(finished):
    spec, jobs, db, server, tokens, admin, truth, poll = finished
    headers = {"Authorization": f"Bearer {admin}"}
    review = f"{server.url}/review/{spec.name}"
    items = httpx.get(f"{review}/api/items", headers=headers).json()
    target = items[1]
    object_id = next(
        oid
        for oid, line in read_source_lines(*open_object(spec.input_manifest)).items()
        if line["source-ref"] == target["source-ref"]
    )
    assert {w["worker_id"] for w in target["workers"]} == {"sim-1", "sim-2"}

    rejected = httpx.post(f"{review}/api/items/{target['index']}", json={"action": "reject"}, headers=headers)
    assert rejected.json()["decision"] == "reject"
    record = jobs.get(spec.name)
    assert record.status == "in_progress" and record.outputs == {}

    # Never twice: the workers who answered the image get nothing, even in a new round.
    for token in tokens[:2]:
        again = simulate(server.url, [token], truth, LABELS, job=spec.name, seed=2)
        assert (again.answers, again.errors) == (0, [])
    record = poll()
    assert record.status == "in_progress" and (record.counters.total, record.counters.labeled) == (4, 3)
    # The reviewer keeps reviewing while the image is out.
    assert httpx.get(f"{review}/api/items", headers=headers).status_code == 200

    for token in tokens[2:]:
        fresh = simulate(server.url, [token], truth, LABELS, job=spec.name, seed=2)
        assert (fresh.answers, fresh.errors) == (1, [])
    record = poll()
    assert record.status == "completed" and record.outputs["manifest"]

    # Both rounds' answers are kept in the portal, each within its task's slots.
    assert _answers_by_worker(db, object_id) == {
        f"{object_id}~1": ["sim-1", "sim-2"],
        object_id: ["sim-3", "sim-4"],
    }
    # Only the new round's answers count for the object; the other objects keep theirs.
    output = open_store(str(Path(spec.output) / spec.name))
    refs = {
        oid: line["source-ref"] for oid, line in read_source_lines(*open_object(spec.input_manifest)).items()
    }
    objects = {
        obj.dataset_object_id: obj for obj in read_worker_responses(output, refs, LABELS, AnswerReport())
    }
    assert sorted(a.worker_id for a in objects[object_id].answers) == ["sim-3", "sim-4"]
    assert all(
        sorted(a.worker_id for a in obj.answers) == ["sim-1", "sim-2"]
        for oid, obj in objects.items()
        if oid != object_id
    )
    # The review is built again from the new outputs: the new workers beside the new consensus.
    items = {item["source-ref"]: item for item in httpx.get(f"{review}/api/items", headers=headers).json()}
    assert {w["worker_id"] for w in items[target["source-ref"]]["workers"]} == {"sim-3", "sim-4"}
    assert len(items) == 4

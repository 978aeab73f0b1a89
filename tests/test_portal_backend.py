"""The `portal` backend end to end: launch, a simulated crowd over real HTTP, poll, finish, review."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from orchestrator.backends.portal.app import create_app
from orchestrator.backends.portal.backend import PortalBackend
from orchestrator.backends.portal.db import Task
from orchestrator.backends.portal.server import ServerThread
from orchestrator.backends.portal.simulate import find_truth_file, load_truth, simulate, simulated_workers
from orchestrator.backends.portal.tokens import issue_token
from orchestrator.errors import ConfigError
from orchestrator.jobs import finish_job, launch_job, new_record, poll_job, read_items

SAMPLE_BUCKET = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "bucket"
LABELS = ["car", "pedestrian", "sign"]


def _job(portal_spec):
    keys = [json.loads(line)["key"] for line in (SAMPLE_BUCKET / "truth.jsonl").read_text().splitlines()]
    return portal_spec("street-1", [key for key in keys if "/img_" in key][:6])


@pytest.fixture
def job(portal_spec, portal_db_url):
    """A spec over six sample images, 3 answers each, and the job layer's store and the backend."""
    return _job(portal_spec)


def _tasks(backend: PortalBackend) -> int:
    with backend.database().read() as session:
        return session.scalar(select(func.count(Task.id)))


def test_launch_simulate_poll_finish_and_review(job):
    spec, jobs, backend = job
    items = read_items(spec)
    outcome = launch_job(spec, backend, jobs, items)
    assert outcome.created and outcome.record.status == "in_progress"
    assert _tasks(backend) == 6
    assert not launch_job(spec, backend, jobs, items).created
    backend.launch(spec, items, outcome.record)  # the backend itself is idempotent too
    assert _tasks(backend) == 6

    def finish(spec_, record):
        return finish_job(spec_, record, jobs)

    app = create_app(backend.database().url, jobs.workspace)
    with ServerThread(app) as server:
        assert poll_job(spec.name, backend, jobs, finish=finish).status == "in_progress"
        tokens = simulated_workers(backend.database(), 3)
        truth = load_truth(find_truth_file(items[0].source_ref))
        result = simulate(server.url, tokens, truth, LABELS, job=spec.name, seed=3)
        assert (result.answers, result.refused, result.errors) == (18, 0, [])
        assert len(result.image_seconds) == 18

        record = poll_job(spec.name, backend, jobs, finish=finish)
        assert record.status == "completed"
        assert (record.counters.total, record.counters.labeled) == (6, 6)

        responses = Path(spec.output) / spec.name / "annotations" / "worker-response" / "iteration-1"
        assert sorted(p.name for p in responses.iterdir()) == [str(i) for i in range(6)]
        for folder in responses.iterdir():
            (stored,) = folder.iterdir()
            answers = json.loads(stored.read_text())["answers"]
            assert sorted(a["workerId"] for a in answers) == ["sim-1", "sim-2", "sim-3"]
            assert all("annotatedResult" in a["answerContent"] for a in answers)
        assert "manifest" in record.outputs

        with backend.database().write() as session:
            admin = issue_token(session, "admin")
        assert httpx.get(f"{server.url}/review/{spec.name}/api/items").status_code == 401
        worker_call = httpx.get(
            f"{server.url}/review/{spec.name}/", headers={"Authorization": f"Bearer {tokens[0]}"}
        )
        assert worker_call.status_code == 403
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}) as client:
            moved = client.get(f"/admin/jobs/{spec.name}/review")
            assert moved.status_code == 303 and moved.headers["location"] == f"/review/{spec.name}/"
            assert "review.js" in client.get(f"/review/{spec.name}/").text
            # The review app of the job: the consensus beside each worker's boxes, least certain first.
            items = client.get(f"/review/{spec.name}/api/items", params={"order": "uncertain"}).json()
            assert len(items) == 6 and all(len(item["workers"]) == 3 for item in items)
            assert {w["worker_id"] for w in items[0]["workers"]} == {"sim-1", "sim-2", "sim-3"}
            lowest = [min((b["confidence"] for b in item["boxes"]), default=1.0) for item in items]
            assert lowest[0] == min(lowest)
            image = client.get(f"/review/{spec.name}/api/items/{items[0]['index']}/image")
            assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
            stats = client.get(f"/admin/jobs/{spec.name}").text
            assert "sim-1" in stats and "recall" in stats
            # The admin pages agree with `labeljob status`: complete, and nothing left to stop.
            assert "Status: completed." in stats and "Stop this job" not in stats
            listed = client.get("/api/admin/jobs").json()
            assert [(job["name"], job["status"]) for job in listed] == [(spec.name, record.status)]
            manifest = client.get(f"/admin/jobs/{spec.name}/files/manifest")
            assert manifest.status_code == 200 and manifest.text.count("\n") == 6
            rejected = client.post(
                f"/review/{spec.name}/api/items/{items[0]['index']}", json={"action": "reject"}
            )
            assert rejected.json()["decision"] == "reject"
            folder = Path(jobs.workspace.root) / "jobs" / spec.name / "review"
            assert [
                json.loads(x)["source-ref"] for x in (folder / "rejected.manifest").read_text().splitlines()
            ] == [items[0]["source-ref"]]
            assert len((folder / "reviewed.manifest").read_text().splitlines()) == 5
            # The rejected image went back to the crowd (tests/test_portal_rework.py): in progress again.
            assert "Status: completed." not in client.get(f"/admin/jobs/{spec.name}").text


def test_poll_hands_answers_over_once_unless_the_record_was_not_saved(job):
    spec, jobs, backend = job
    items = read_items(spec)
    record = launch_job(spec, backend, jobs, items).record
    app = create_app(backend.database().url, jobs.workspace)
    with ServerThread(app) as server:
        truth = load_truth(SAMPLE_BUCKET / "truth.jsonl")
        # One worker after another: at once, PostgreSQL's SKIP LOCKED would spread them over more objects.
        for token in simulated_workers(backend.database(), 3):
            simulate(server.url, [token], truth, LABELS, max_tasks=2)

    first = backend.poll(spec, record)
    assert first.status == "in_progress" and first.labeled == 2 and len(first.answers) == 2
    assert all(len(obj.answers) == 3 for obj in first.answers)
    # The job layer did not save the record (a crash): the same answers come again.
    again = backend.poll(spec, record)
    assert [o.dataset_object_id for o in again.answers] == [o.dataset_object_id for o in first.answers]
    record.backend_state.update(again.backend_state)
    assert backend.poll(spec, record).answers == []


def test_stop_reports_partial_answers_and_closes_the_job(job):
    spec, jobs, backend = job
    items = read_items(spec)
    record = launch_job(spec, backend, jobs, items).record
    with ServerThread(create_app(backend.database().url, None)) as server:
        tokens = simulated_workers(backend.database(), 1)
        simulate(server.url, tokens, load_truth(SAMPLE_BUCKET / "truth.jsonl"), LABELS, max_tasks=2)
        backend.stop(spec, record)
        after = simulate(server.url, tokens, load_truth(SAMPLE_BUCKET / "truth.jsonl"), LABELS)
        assert after.answers == 0
    result = backend.poll(spec, record)
    assert result.status == "stopped" and result.labeled == 0
    assert [len(obj.answers) for obj in result.answers] == [1, 1]
    assert result.unlabeled_ids == [str(i) for i in range(6)]


def test_validate_estimate_plan(tmp_path, portal_spec):
    spec, _, backend = _job(portal_spec)
    assert backend.validate(spec) == []
    public = spec.model_copy(update={"workforce": spec.workforce.model_copy(update={"type": "public"})})
    assert [key for key, _ in backend.validate(public)] == ["workforce.type"]
    estimate = backend.estimate(spec, 10)
    assert estimate.total_usd == 0 and estimate.lines[0].quantity == 30
    items = read_items(spec) * 3
    plan = backend.plan(spec, items, new_record(spec, len(items)))
    assert len(plan.requests) == 1 + 10 + 1 and plan.requests[-1]["request"].startswith("create 8 more")
    assert not (tmp_path / "workspace").exists()  # planning touches nothing
    s3_backend = PortalBackend(workspace=None)
    assert s3_backend.plan(spec, None, new_record(spec, 0)).warnings
    with pytest.raises(ConfigError):
        s3_backend.database()

"""Adaptive overlap: the `[task.adaptive]` spec and a portal job that asks for answers where needed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, inspect, select

from orchestrator.backends import get_backend
from orchestrator.backends.portal.app import create_app
from orchestrator.backends.portal.db import Answer, Database, Task, _add_missing_columns
from orchestrator.backends.portal.server import ServerThread
from orchestrator.backends.portal.simulate import load_truth, simulate, simulated_workers
from orchestrator.errors import SpecError
from orchestrator.jobs import JobStore, finish_job, launch_job, new_record, poll_job, read_items, status_row
from orchestrator.spec import parse_spec
from orchestrator.storage import open_store
from tests.test_portal_backend import LABELS, SAMPLE_BUCKET


def spec_data(tmp_path: Path, **task) -> dict:
    keys = [json.loads(line)["key"] for line in (SAMPLE_BUCKET / "truth.jsonl").read_text().splitlines()]
    manifest = tmp_path / "in.manifest"
    keys = [key for key in keys if "/img_" in key][:12]
    manifest.write_text(
        "".join(json.dumps({"source-ref": (SAMPLE_BUCKET / k).as_uri()}) + "\n" for k in keys)
    )
    return {
        "name": "street-adaptive",
        "labels": LABELS,
        "input_manifest": str(manifest),
        "output": str(tmp_path / "labeling"),
        "task": {"workers_per_object": 3, **task},
    }


def test_adaptive_spec_bounds_and_defaults(tmp_path):
    with pytest.raises(SpecError, match="max_workers"):
        parse_spec(spec_data(tmp_path, adaptive={"min_workers": 4, "max_workers": 3}))
    with pytest.raises(SpecError, match="edge_tolerance"):
        parse_spec(spec_data(tmp_path, adaptive={"edge_tolerance": 2}))
    with pytest.raises(SpecError, match="unknown key"):
        parse_spec(spec_data(tmp_path, adaptive={"min_answers": 2}))
    adaptive = parse_spec(spec_data(tmp_path, adaptive={})).task.adaptive
    assert (adaptive.min_workers, adaptive.max_workers, adaptive.edge_tolerance) == (2, 5, 0.12)


def test_a_spec_without_the_adaptive_section_keeps_its_fingerprint(tmp_path):
    # Jobs launched before [task.adaptive] (or [quality], [verify], portal.image_folder) existed must
    # still be recognised when launched again: their fingerprint is the hash of the spec as it was then.
    fixed = parse_spec(spec_data(tmp_path))
    before = fixed.model_dump(mode="json")
    del before["task"]["adaptive"], before["quality"], before["verify"], before["portal"]["image_folder"]
    canonical = json.dumps(before, sort_keys=True, separators=(",", ":"))
    assert fixed.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()
    assert parse_spec(spec_data(tmp_path, adaptive={})).fingerprint() != fixed.fingerprint()


def test_a_database_made_before_adaptive_overlap_gets_its_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db = Database(url)
    db.create_all()
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE answers")
        connection.exec_driver_sql("DROP TABLE leases")
        connection.exec_driver_sql("DROP TABLE tasks")
        connection.exec_driver_sql(
            "CREATE TABLE tasks (id INTEGER PRIMARY KEY, job_id INTEGER, position INTEGER, object_id TEXT, "
            "source_ref TEXT, image_key TEXT, wanted INTEGER, answered INTEGER, time_limit INTEGER, "
            "reported_in INTEGER)"
        )
        connection.exec_driver_sql(
            "INSERT INTO tasks VALUES (1, 1, 0, '0', 's3://b/0.jpg', '0.jpg', 3, 1, 300, NULL)"
        )
    db.dispose()
    again = Database(url)
    again.create_all()
    with again.read() as session:
        assert session.execute(select(Task.asked, Task.settled_at)).one() == (3, None)
    # A second process saw the old table before the first one altered it: its ALTER fails, and the
    # columns being there now is all that matters.
    calls = []

    def stale_then_real(engine):
        calls.append(engine)
        return SimpleNamespace(get_columns=lambda _: [{"name": "id"}]) if len(calls) == 1 else inspect(engine)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("orchestrator.backends.portal.db.inspect", stale_then_real)
        _add_missing_columns(again.engine)
    assert len(calls) == 2


def _task_counts(db: Database) -> dict[str, tuple[int, int, int, bool]]:
    """object id -> (answers, distinct workers, asked, settled)."""
    with db.read() as session:
        rows = session.execute(
            select(
                Task.object_id,
                Task.answered,
                select(func.count(func.distinct(Answer.worker_id)))
                .where(Answer.task_id == Task.id)
                .scalar_subquery(),
                Task.asked,
                Task.settled_at.is_not(None),
            )
        ).all()
    return {object_id: tuple(rest) for object_id, *rest in rows}


def test_a_portal_job_asks_for_more_answers_only_where_the_rule_wants_them(tmp_path):
    spec = parse_spec(spec_data(tmp_path, adaptive={"min_workers": 2, "max_workers": 5}))
    workspace = open_store(tmp_path / "workspace")
    backend = get_backend("portal", workspace=workspace)
    jobs = JobStore(workspace)
    items = read_items(spec)
    launch_job(spec, backend, jobs, items)
    db = backend.database()
    assert {asked for _, _, asked, _ in _task_counts(db).values()} == {2}

    def finish(spec_, record):
        return finish_job(spec_, record, jobs)

    truth = load_truth(SAMPLE_BUCKET / "truth.jsonl")
    rounds = []
    with ServerThread(create_app(db.url, workspace)) as server:
        tokens = simulated_workers(db, 8)
        for _ in range(6):  # at most max_workers - min_workers extensions, and one round to settle
            result = simulate(server.url, tokens, truth, LABELS, job=spec.name, seed=5, spammer_rate=0.25)
            assert (result.refused, result.errors) == (0, [])
            rounds.append(result.answers)
            # A poll whose record is not saved (a crash) is repeated: nothing is decided twice.
            record = jobs.get(spec.name)
            backend.poll(spec, record)
            record = poll_job(spec.name, backend, jobs, finish=finish)
            if record.status == "completed":
                break
    assert record.status == "completed", rounds
    counts = _task_counts(db)
    # Never twice: every answer of a task is from a different worker; never more than asked.
    assert all(answers == workers <= asked <= 5 for answers, workers, asked, _ in counts.values())
    # Every task is final: settled by the rule, or at max_workers.
    assert all(settled or answers == 5 for answers, _, _, settled in counts.values())
    per_task = sorted(answers for answers, *_ in counts.values())
    assert per_task[0] == 2 and per_task[-1] > 2, per_task  # some settled at once, some asked for more
    assert sum(rounds) == sum(per_task)
    # Exactly once: the stored worker responses hold every answer, the manifest every object.
    responses = Path(spec.output) / spec.name / "annotations" / "worker-response" / "iteration-1"
    stored = {
        folder.name: len(json.loads(next(folder.iterdir()).read_text())["answers"])
        for folder in responses.iterdir()
    }
    assert sorted(stored.values()) == per_task
    manifest = Path(record.outputs["manifest"].removeprefix("file://"))
    assert len(manifest.read_text().splitlines()) == len(items)
    row = status_row(record)
    assert (row["settled"], row["answers_final"]) == (len(items), sum(per_task))
    assert row["saved_vs_fixed"] == round(1 - sum(per_task) / (3 * len(items)), 3)


def test_estimate_and_plan_show_the_range_of_answers(tmp_path):
    spec = parse_spec(spec_data(tmp_path, adaptive={"min_workers": 2, "max_workers": 7}))
    backend = get_backend("portal", workspace=open_store(tmp_path / "workspace"))
    estimate = backend.estimate(spec, 100)
    assert estimate.lines[0].quantity == 700 and estimate.total_usd == 0
    assert "200 answers at least, about 370 expected (3.7 per object" in estimate.notes[-1]
    items = read_items(spec)
    plan = backend.plan(spec, items, new_record(spec, len(items)))
    assert plan.requests[0]["answers_per_object"].startswith("2 to 7")
    assert {r["answers"] for r in plan.requests[1:] if r["request"] == "create task"} == {2}

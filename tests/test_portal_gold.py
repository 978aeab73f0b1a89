"""Gold tasks on the portal (docs/portal.md, "Gold tasks"): a simulated crowd with 25 % spammers over
real HTTP; spammers are blocked by gold after `gold_min_seen` gold tasks, the ML lead sees why, and
no gold answer reaches the outputs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from orchestrator.backends.portal.app import create_app
from orchestrator.backends.portal.db import Answer, Block, Task, Worker
from orchestrator.backends.portal.server import ServerThread
from orchestrator.backends.portal.simulate import load_truth, simulate, simulated_workers
from orchestrator.backends.portal.tokens import issue_token
from orchestrator.consolidation import CrowdSimulator
from orchestrator.errors import SpecError
from orchestrator.jobs import finish_job, launch_job, poll_job, read_items
from orchestrator.spec import parse_spec

SAMPLE_BUCKET = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "bucket"
LABELS = ["car", "pedestrian", "sign"]
WORKERS, SPAMMERS, SEED = 8, 0.25, 0


def _gold_line(truth: dict) -> dict:
    """A truth.jsonl row as an augmented manifest line with confidence 1.0 boxes."""
    used = sorted({LABELS.index(b["label"]) for b in truth["boxes"]})
    return {
        "source-ref": (SAMPLE_BUCKET / truth["key"]).as_uri(),
        "gold": {
            "image_size": [{"width": truth["width"], "height": truth["height"], "depth": 3}],
            "annotations": [
                {
                    "class_id": LABELS.index(b["label"]),
                    **{k: b[k] for k in ("left", "top", "width", "height")},
                }
                for b in truth["boxes"]
            ],
        },
        "gold-metadata": {
            "objects": [{"confidence": 1.0} for _ in truth["boxes"]],
            "class-map": {str(i): LABELS[i] for i in used},
            "type": "groundtruth/object-detection",
            "human-annotated": "yes",
            "creation-date": "2026-12-01T00:00:00.000000",
            "job-name": "labeling-job/gold",
        },
    }


@pytest.fixture
def gold_job(tmp_path, portal_spec):
    """Ten job images; six more are gold, at a gold rate of 0.5, blocking below F1 0.5 after two."""
    rows = [json.loads(line) for line in (SAMPLE_BUCKET / "truth.jsonl").read_text().splitlines()]
    gold_rows = rows[10:16]
    gold = tmp_path / "gold.manifest"
    gold.write_text("".join(json.dumps(_gold_line(r)) + "\n" for r in gold_rows))
    rules = {"gold": str(gold), "gold_rate": 0.5, "gold_min_f1": 0.5, "gold_min_seen": 2}
    spec, jobs, backend = portal_spec("gold-1", [r["key"] for r in rows[:10]], quality=rules)
    return spec, jobs, backend, [(SAMPLE_BUCKET / r["key"]).as_uri() for r in gold_rows]


def test_gold_needs_the_portal_and_min_f1_needs_gold(tmp_path):
    base = {"name": "g", "labels": ["car"], "input_manifest": "in.manifest", "output": "out"}
    with pytest.raises(SpecError, match="portal and mturk backends only"):
        parse_spec({**base, "backend": "groundtruth", "quality": {"gold": "gold.manifest"}})
    with pytest.raises(SpecError, match="gold_min_f1 needs gold"):
        parse_spec({**base, "quality": {"gold_min_f1": 0.5}})
    with pytest.raises(SpecError, match="gold_rate"):
        parse_spec({**base, "quality": {"gold": "g.manifest", "gold_rate": 1.5}})
    # A spec without [quality] keeps the fingerprint it had before [quality] existed.
    assert "quality" not in json.dumps(parse_spec(base).model_dump(exclude_none=True))


def test_spammers_are_blocked_by_gold_and_gold_never_reaches_the_outputs(gold_job):
    spec, jobs, backend, gold_refs = gold_job
    items = read_items(spec)
    launch_job(spec, backend, jobs, items)
    crowd = CrowdSimulator(SEED, n_workers=WORKERS, labels=LABELS, spammer_rate=SPAMMERS)
    spammers = {f"sim-{i + 1}" for i, w in enumerate(crowd.workers) if crowd.worker(w).spammer}
    assert len(spammers) == 2
    truth = load_truth(SAMPLE_BUCKET / "truth.jsonl")
    db = backend.database()
    with ServerThread(create_app(db.url, jobs.workspace)) as server:
        tokens = simulated_workers(db, WORKERS)
        # Up to four tasks each: gold, job, gold, job at a gold rate of 0.5. A spammer is blocked by its
        # second gold answer and gets no fourth task. Then the crowd finishes the job.
        first = simulate(
            server.url, tokens, truth, LABELS, job=spec.name, seed=SEED, spammer_rate=SPAMMERS, max_tasks=4
        )
        assert (first.answers, first.errors) == (4 * WORKERS - len(spammers), [])
        rest = simulate(server.url, tokens, truth, LABELS, job=spec.name, seed=SEED, spammer_rate=SPAMMERS)
        assert rest.errors == []

        with db.read() as session:
            blocked = dict(
                session.execute(
                    select(Worker.public_id, Block.reason).join(Block, Block.worker_id == Worker.id)
                ).all()
            )
            per_worker = dict(
                session.execute(
                    select(Worker.public_id, func.count(Answer.id)).join(Answer).group_by(Worker.public_id)
                ).all()
            )
            gold_answers = session.scalar(
                select(func.count(Answer.id))
                .join(Task, Task.id == Answer.task_id)
                .where(Task.source_ref.in_(gold_refs))
            )
        assert set(blocked) == spammers
        assert all(
            reason.startswith("gold F1 0.") and "after 2 gold tasks" in reason for reason in blocked.values()
        )
        assert all(per_worker[w] == 3 for w in spammers)  # nothing after the block
        assert gold_answers >= 2 * WORKERS

        def finish(spec_, record):
            return finish_job(spec_, record, jobs)

        record = poll_job(spec.name, backend, jobs, finish=finish)
        assert record.status == "completed" and (record.counters.total, record.counters.labeled) == (10, 10)
        output = [
            json.loads(line)
            for line in Path(record.outputs["manifest"].removeprefix("file://")).read_text().splitlines()
        ]
        assert sorted(line["source-ref"] for line in output) == sorted(item.source_ref for item in items)
        responses = Path(spec.output) / spec.name / "annotations" / "worker-response" / "iteration-1"
        assert sorted(p.name for p in responses.iterdir()) == sorted(str(i) for i in range(10))
        stored = " ".join(p.read_text() for p in responses.rglob("*.json"))
        assert not any(ref in stored for ref in gold_refs)
        # The workers report carries each worker's gold score, and gold decided the weights.
        report = {
            row["worker_id"]: row
            for row in csv.DictReader(
                io.StringIO(Path(record.outputs["workers_report"].removeprefix("file://")).read_text())
            )
        }
        assert set(report) == {f"sim-{i}" for i in range(1, WORKERS + 1)}
        for worker, row in report.items():
            spammer = worker in spammers
            assert int(row["gold_tasks"]) >= 2 and (float(row["gold_f1"]) < 0.5) == spammer
            assert int(row["gold_missed"]) + int(row["gold_false"]) > 0 or not spammer
        honest_weights = [float(r["weight"]) for w, r in report.items() if w not in spammers]
        assert max(float(report[w]["weight"]) for w in spammers) < min(honest_weights)

        with db.write() as session:
            admin = issue_token(session, "admin")
        page = httpx.get(
            f"{server.url}/admin/jobs/{spec.name}", headers={"Authorization": f"Bearer {admin}"}
        ).text
        for worker in spammers:
            assert worker in page
        assert page.count("gold F1 0.") >= len(spammers)

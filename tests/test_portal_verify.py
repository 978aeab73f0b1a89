"""Verification jobs on the portal (docs/portal.md, "Verification jobs"): `launch --verify-from`
selects an earlier job's least confident images, and each task starts from that job's boxes."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from orchestrator.backends.portal.app import create_app
from orchestrator.backends.portal.server import ServerThread
from orchestrator.backends.portal.simulate import load_truth, simulate, simulated_workers
from orchestrator.backends.portal.verify import verify_spec
from orchestrator.cli.app import app as cli
from orchestrator.errors import SpecError
from orchestrator.jobs import JobStore, finish_job, launch_job, poll_job, read_items
from orchestrator.review import JOB_REVIEWED_KEY, DecisionIn, Review
from orchestrator.storage import open_object

SAMPLE_BUCKET = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "bucket"
LABELS = ["car", "pedestrian", "sign"]
runner = CliRunner()


@pytest.fixture
def finished(portal_spec):
    """A portal job over six sample images, answered by three simulated workers and finished."""
    keys = [json.loads(line)["key"] for line in (SAMPLE_BUCKET / "truth.jsonl").read_text().splitlines()][:6]
    spec, jobs, backend = portal_spec("street-1", keys)
    launch_job(spec, backend, jobs, read_items(spec))
    db = backend.database()
    with ServerThread(create_app(db.url, jobs.workspace)) as server:
        truth = load_truth(SAMPLE_BUCKET / "truth.jsonl")
        assert (
            simulate(server.url, simulated_workers(db, 3), truth, LABELS, job=spec.name, seed=1).errors == []
        )
    record = poll_job(spec.name, backend, jobs, finish=lambda s, r: finish_job(s, r, jobs))
    assert record.status == "completed"
    return spec, jobs, backend, record


def test_a_verification_job_needs_an_ended_job_a_new_attribute_and_the_portal(finished, portal_spec):
    spec, jobs, _, record = finished
    same_attr = portal_spec("check-1", ["images/img_0001.jpg"])[0]
    with pytest.raises(SpecError, match="label_attribute: must differ"):
        verify_spec(same_attr, record, jobs)
    other = portal_spec("check-2", ["images/img_0001.jpg"], label_attribute="verified")[0]
    with pytest.raises(SpecError, match="no line of street-1 has a box below 0.001"):
        verify_spec(other, record, jobs, below=0.001)
    running = record.model_copy(update={"status": "in_progress"})
    with pytest.raises(SpecError, match="still in_progress"):
        verify_spec(other, running, jobs)
    mturk = other.model_copy(update={"backend": "mturk"})
    with pytest.raises(SpecError, match="runs on the portal"):
        verify_spec(mturk, record, jobs)
    alone = runner.invoke(cli, ["launch", "spec.toml", "--verify-below", "0.5"])
    assert alone.exit_code == 2 and "--verify-decision go with --verify-from" in alone.stderr


def test_a_verification_job_on_the_items_the_review_selects(finished, portal_spec):
    spec, jobs, _, record = finished
    check = portal_spec("check-3", ["images/img_0001.jpg"], label_attribute="verified")[0]
    with pytest.raises(SpecError, match="has no review: decide items at /review/street-1/"):
        verify_spec(check, record, jobs, decisions=["undecided"])
    review = Review(
        open_object(record.outputs["manifest"]),
        (jobs.workspace, JobStore.key(spec.name, JOB_REVIEWED_KEY)),
        attr=spec.label_attribute,
    )
    review.decide(0, DecisionIn(action="accept"), "ada")
    review.decide(1, DecisionIn(action="fix", boxes=[]), "ada")
    lines = [
        json.loads(x)
        for x in Path(record.outputs["manifest"].removeprefix("file://")).read_text().splitlines()
    ]

    def selected(decisions: list[str]) -> list[str]:
        made = verify_spec(check, record, jobs, decisions=decisions)
        assert made.verify.decisions == decisions
        text = Path(made.input_manifest.removeprefix("file://")).read_text()
        return [json.loads(x)["source-ref"] for x in text.splitlines()]

    assert selected(["undecided"]) == [line["source-ref"] for line in lines[2:]]
    assert selected(["fix", "accept"]) == [line["source-ref"] for line in lines[:2]]
    with pytest.raises(SpecError, match="no line of street-1 has the review decision reject"):
        verify_spec(check, record, jobs, decisions=["reject"])
    unknown = runner.invoke(cli, ["launch", "spec.toml", "--verify-from", "x", "--verify-decision", "maybe"])
    assert unknown.exit_code == 2 and "give undecided, accept, fix or reject" in unknown.stderr


def test_verification_tasks_start_from_the_earlier_boxes_and_keep_them(finished, tmp_path):
    spec, jobs, backend, record = finished
    earlier = {
        line["source-ref"]: line
        for line in map(
            json.loads, Path(record.outputs["manifest"].removeprefix("file://")).read_text().splitlines()
        )
    }
    lowest = {
        ref: min((o["confidence"] for o in line["bbox-metadata"]["objects"]), default=0.0)
        for ref, line in earlier.items()
    }
    below = sorted(lowest.values())[3]  # the three least confident images
    toml = tmp_path / "check.toml"
    toml.write_text(
        'name = "street-1-check"\nbackend = "portal"\nlabels = ["car", "pedestrian", "sign"]\n'
        'label_attribute = "verified"\ninput_manifest = "unused.manifest"\n'
        f'output = "{tmp_path / "labeling"}"\n'
        "[task]\nworkers_per_object = 1\n"
    )
    launched = runner.invoke(
        cli,
        [
            "--workspace",
            str(jobs.workspace.root),
            "--format",
            "json",
            "launch",
            str(toml),
            "--verify-from",
            spec.name,
            "--verify-below",
            str(below),
        ],
    )
    assert launched.exit_code == 0, launched.output
    check = jobs.load("street-1-check")[0].job_spec
    assert check.verify.model_dump() == {
        "from_job": "street-1",
        "attribute": "bbox",
        "below": below,
        "decisions": None,
    }
    selected = [item.source_ref for item in read_items(check)]
    assert (
        sorted(selected) == sorted(ref for ref, value in lowest.items() if value < below)
        and len(selected) == 3
    )

    db = backend.database()
    with ServerThread(create_app(db.url, jobs.workspace)) as server:
        (token,) = simulated_workers(db, 1, prefix="checker")
        headers = {"Authorization": f"Bearer {token}"}
        task = httpx.post(f"{server.url}/api/tasks/next", params={"job": check.name}, headers=headers).json()
        line = earlier[task["source_ref"]]
        names = line["bbox-metadata"]["class-map"]
        expected = [
            {"label": names[str(a["class_id"])], **{k: a[k] for k in ("left", "top", "width", "height")}}
            for a in line["bbox"]["annotations"]
        ]
        assert task["initial_boxes"] == expected
        # "All correct": the worker submits the boxes as they were drawn, for every selected image.
        while task:
            answer = {
                "annotatedResult": {
                    "boundingBoxes": task["initial_boxes"],
                    "inputImageProperties": {"width": 640, "height": 480},
                }
            }
            assert (
                httpx.post(f"{server.url}{task['submit_url']}", json=answer, headers=headers).status_code
                == 200
            )
            nxt = httpx.post(f"{server.url}/api/tasks/next", params={"job": check.name}, headers=headers)
            task = nxt.json() if nxt.status_code == 200 else None
    done = poll_job(check.name, backend, jobs, finish=lambda s, r: finish_job(s, r, jobs))
    assert done.status == "completed"
    output = [
        json.loads(x) for x in Path(done.outputs["manifest"].removeprefix("file://")).read_text().splitlines()
    ]
    assert sorted(line["source-ref"] for line in output) == sorted(selected)
    for line in output:
        assert line["bbox"] == earlier[line["source-ref"]]["bbox"]  # the earlier attribute passes through
        assert line["verified"]["annotations"] == line["bbox"]["annotations"]


def test_the_task_page_draws_the_earlier_boxes(finished, tmp_path):
    spec, jobs, backend, record = finished
    check = verify_spec(
        finished[0].model_copy(update={"name": "street-1-page", "label_attribute": "verified"}), record, jobs
    )
    launch_job(check, backend, jobs, read_items(check))
    db = backend.database()
    (token,) = simulated_workers(db, 1, prefix="page")
    client = TestClient(create_app(db.url, jobs.workspace))
    task = client.post(
        "/api/tasks/next", params={"job": check.name}, headers={"Authorization": f"Bearer {token}"}
    ).json()
    client.cookies.set("labeljob_worker", token)
    page = client.get("/task", params={"job": check.name}).text
    drawn = re.search(r"initial-value='([^']*)'", page)
    assert drawn and json.loads(html.unescape(drawn.group(1))) == task["initial_boxes"] != []

"""Worker management: blocking and unblocking a worker (CLI and admin page) and revoking its access."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from orchestrator.backends.portal import catalog
from orchestrator.backends.portal.app import create_app
from orchestrator.backends.portal.db import Answer, Worker, open_database
from orchestrator.backends.portal.tokens import issue_invite, issue_token
from orchestrator.cli.app import app as cli
from orchestrator.jobs import ManifestItem, finish_job, launch_job, poll_job, read_items
from orchestrator.spec import parse_spec

SAMPLE_BUCKET = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "bucket"
EMPTY = {"annotatedResult": {"boundingBoxes": []}}


@pytest.fixture
def portal(tmp_path):
    """Jobs "one" and "two" (2 images each) in <tmp>/ws/portal.db, a worker "ann" with a token and an
    admin token, and a client of the app."""
    db_url = f"sqlite:///{tmp_path / 'ws' / 'portal.db'}"
    db = open_database(db_url)
    images = sorted((SAMPLE_BUCKET / "images").glob("img_000*.jpg"))[:2]
    with db.write() as session:
        for name in ("one", "two"):
            spec = parse_spec(
                {"name": name, "labels": ["car"], "input_manifest": "m", "output": str(tmp_path)}
            )
            items = [ManifestItem(str(i), p.as_uri(), {}) for i, p in enumerate(images)]
            catalog.load_job(session, spec, items, time.time())
        worker = Worker(public_id="ann", name="Ann", source="invite", created_at=0)
        session.add(worker)
        session.flush()
        token = issue_token(session, "worker", worker.id)
        admin = issue_token(session, "admin")
    client = TestClient(create_app(db_url, None), follow_redirects=False)
    return client, db, {"Authorization": f"Bearer {token}"}, admin, tmp_path / "ws"


def _cli(workspace: Path, *args: str):
    return CliRunner().invoke(cli, ["--workspace", str(workspace), "--format", "json", "portal", *args])


def _next(client, headers, job: str):
    return client.post("/api/tasks/next", params={"job": job}, headers=headers)


def test_a_blocked_worker_gets_no_task_and_its_open_lease_takes_no_answer(portal):
    client, db, ann, _, workspace = portal
    lease = _next(client, ann, "one").json()
    assert _cli(workspace, "block", "ann", "--job", "one").exit_code == 0
    assert _next(client, ann, "one").status_code == 204
    refused = client.post(lease["submit_url"], json=EMPTY, headers=ann)
    assert refused.status_code == 409 and refused.json()["error"] == "blocked"
    assert _next(client, ann, "two").status_code == 200  # blocked in "one" only
    listed = json.loads(_cli(workspace, "workers").stdout)
    assert listed == []  # nobody has answered yet
    client.post(_next(client, ann, "two").json()["submit_url"], json=EMPTY, headers=ann)
    (row,) = json.loads(_cli(workspace, "workers").stdout)
    assert (row["worker_id"], row["answers"], row["blocked"]) == ("ann", 1, "one")
    assert json.loads(_cli(workspace, "unblock", "ann", "--job", "one").stdout)["changed"] is True
    assert client.post(lease["submit_url"], json=EMPTY, headers=ann).json()["status"] == "accepted"
    assert _cli(workspace, "block", "ann").exit_code == 0  # every job
    assert _next(client, ann, "two").status_code == 204
    assert _cli(workspace, "block", "nobody").exit_code == 1
    with db.read() as session:
        assert session.scalar(select(func.count(Answer.id))) == 2


def test_revoke_ends_the_workers_tokens_sessions_and_invites_at_once(portal):
    client, db, ann, _, workspace = portal
    with db.write() as session:
        worker = session.scalar(select(Worker.id).where(Worker.public_id == "ann"))
        second = {"Authorization": f"Bearer {issue_token(session, 'session', worker, time.time(), job_id=1)}"}
        code = issue_invite(session, worker, time.time())
    assert _next(client, ann, "one").status_code == 200
    assert json.loads(_cli(workspace, "revoke", "ann").stdout)["revoked"] == 3
    for headers in (ann, second):
        assert _next(client, headers, "one").status_code == 401
    assert client.get(f"/w/{code}").status_code == 401


def test_the_admin_page_blocks_and_unblocks_with_its_csrf_token(portal):
    client, db, ann, admin, _ = portal
    client.post(_next(client, ann, "one").json()["submit_url"], json=EMPTY, headers=ann)
    client.get(f"/a/{admin}")
    page = client.get("/admin/jobs/one").text
    form = dict(
        re.findall(
            r'name="(csrf|worker|action)" value="([^"]*)"', page.split("/block")[1].split("</form>")[0]
        )
    )
    assert form["worker"] == "ann" and form["action"] == "block"
    assert client.post("/admin/jobs/one/block", data={**form, "csrf": "x"}).status_code == 403
    assert _next(client, ann, "one").status_code == 200
    assert client.post("/admin/jobs/one/block", data=form).status_code == 303
    assert _next(client, ann, "one").status_code == 204
    page = client.get("/admin/jobs/one").text
    assert 'name="action" value="unblock"' in page
    assert client.post("/admin/jobs/one/block", data={**form, "action": "unblock"}).status_code == 303
    assert _next(client, ann, "one").status_code == 200
    # "Block and drop answers": blocked again, and its answer in the job is gone.
    assert client.post("/admin/jobs/one/block", data={**form, "action": "drop"}).status_code == 303
    assert _next(client, ann, "one").status_code == 204
    with db.read() as session:
        assert session.scalar(select(func.count(Answer.id))) == 0


# ----------------------------------------------------------------- skipping and reporting an image


def _worker(db, public_id: str) -> dict:
    with db.write() as session:
        worker = Worker(public_id=public_id, name=public_id, source="invite", created_at=0)
        session.add(worker)
        session.flush()
        return {"Authorization": f"Bearer {issue_token(session, 'worker', worker.id)}"}


def _skip(client, headers, lease: dict, reason: str):
    return client.post(f"/api/leases/{lease['lease_id']}/skip", json={"reason": reason}, headers=headers)


def test_a_skipped_image_goes_to_others_and_never_back_to_the_worker(portal):
    client, db, ann, _, _ = portal
    first = _next(client, ann, "one").json()
    assert _skip(client, ann, first, "skip").json()["status"] == "set_down"
    second = _next(client, ann, "one").json()
    assert second["object_id"] != first["object_id"]
    client.post(second["submit_url"], json=EMPTY, headers=ann)
    assert _next(client, ann, "one").status_code == 204  # the skipped one is never offered again
    bo = _worker(db, "bo")
    assert _next(client, bo, "one").json()["object_id"] == first["object_id"]


def test_an_image_reported_broken_twice_is_set_aside_and_listed_for_the_lead(portal):
    client, db, ann, admin, _ = portal
    bo, cy = _worker(db, "bo"), _worker(db, "cy")
    broken = _next(client, ann, "one").json()
    assert _skip(client, ann, broken, "not_loading").status_code == 200
    assert _next(client, bo, "one").json()["object_id"] == broken["object_id"]  # one report: still offered
    assert _skip(client, bo, _next(client, bo, "one").json(), "not_an_image").status_code == 200
    offered = {_next(client, cy, "one").json()["object_id"]}
    assert broken["object_id"] not in offered
    page = client.get("/admin/jobs/one", headers={"Authorization": f"Bearer {admin}"}).text
    assert "Set aside" in page and broken["source_ref"] in page


def test_skip_is_refused_for_a_bad_reason_a_strangers_lease_or_an_answered_one(portal):
    client, db, ann, _, _ = portal
    lease = _next(client, ann, "one").json()
    assert _skip(client, ann, lease, "bored").status_code == 400
    stranger = _worker(db, "bo")
    assert _skip(client, stranger, lease, "skip").json()["error"] == "unknown_lease"
    client.post(lease["submit_url"], json=EMPTY, headers=ann)
    assert _skip(client, ann, lease, "skip").json()["error"] == "unknown_lease"


def test_the_task_page_shows_the_time_left_and_the_skip_buttons(portal):
    client, db, _, _, _ = portal
    with db.write() as session:
        worker = session.scalar(select(Worker.id))
        client.cookies.set("labeljob_worker", issue_token(session, "worker", worker))
    page = client.get("/task").text
    assert re.search(r"held for you for [45] more minutes", page)  # the default 300 s time limit
    skip = re.search(r'<form method="post" action="(/task/\d+/skip)">', page).group(1)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    lease = skip.split("/")[2]
    done = client.post(skip, data={"csrf": csrf, "reason": "not_loading"})
    assert done.status_code == 303 and done.headers["location"] == "/task"
    assert f"/task/{lease}/skip" not in client.get("/task").text


def test_the_admin_invite_form_makes_a_one_time_link_and_revoke_ends_a_worker(portal):
    client, _, ann, admin, _ = portal
    client.post(_next(client, ann, "one").json()["submit_url"], json=EMPTY, headers=ann)
    client.get(f"/a/{admin}")
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/admin").text).group(1)
    assert client.post("/admin/invite", data={"csrf": "x", "name": "Bo"}).status_code == 403
    made = client.post("/admin/invite", data={"csrf": csrf, "name": "Bo", "job": "two"})
    link = re.search(r"<code>http://testserver(/w/[^<]+)</code>", made.text).group(1)
    browser = TestClient(client.app, follow_redirects=False)
    assert browser.post(link).status_code == 303 and browser.post(link).status_code == 401
    assert browser.post("/api/tasks/next", params={"job": "one"}).status_code == 401  # cookie, not bearer
    assert browser.get("/task").status_code == 200  # a task of job "two", the invite's job
    assert client.post("/admin/revoke", data={"csrf": "x", "worker": "ann"}).status_code == 403
    assert client.post("/admin/revoke", data={"csrf": csrf, "worker": "ann"}).status_code == 303
    assert _next(client, ann, "one").status_code == 401


# -------------------------------------------------------------------- dropping a worker's answers


def _answer(client, headers, job: str, box: dict | None = None) -> bool:
    """Take the worker's next task of `job` and answer it (one box, or none); False if none is left."""
    task = _next(client, headers, job)
    if task.status_code != 200:
        return False
    answer = {"annotatedResult": {"boundingBoxes": [box] if box else []}}
    return client.post(task.json()["submit_url"], json=answer, headers=headers).status_code == 200


def test_block_with_drop_answers_takes_a_spammers_answers_out_of_the_outputs(portal_spec, portal_db_url):
    keys = [f"images/img_000{i}.jpg" for i in range(3)]
    spec, jobs, backend = portal_spec("street", keys, task={"workers_per_object": 2})
    launch_job(spec, backend, jobs, read_items(spec))
    client = TestClient(create_app(backend.database().url, jobs.workspace), follow_redirects=False)
    spam, good, late = (_worker(backend.database(), name) for name in ("spam", "good", "late"))
    junk = {"label": "sign", "left": 0, "top": 0, "width": 5, "height": 5}
    while _answer(client, spam, "street", junk):
        pass
    assert _answer(client, good, "street") and _answer(client, good, "street")

    def finish(spec_, record):
        return finish_job(spec_, record, jobs)

    record = poll_job(spec.name, backend, jobs, finish=finish)  # two objects complete, with spam's answers
    assert record.counters.labeled == 2
    responses = Path(spec.output) / spec.name / "annotations" / "worker-response"
    assert "spam" in {
        a["workerId"] for f in responses.rglob("*.json") for a in json.loads(f.read_text())["answers"]
    }

    blocked = _cli(jobs.workspace.root, "block", "spam", "--job", "street", "--drop-answers")
    assert blocked.exit_code == 0, blocked.output
    assert json.loads(blocked.stdout)["answers_dropped"] == 3
    with backend.database().read() as session:
        assert session.scalar(select(func.count(Answer.id))) == 2  # good's two answers stay
    # The tasks are offered again: late takes all three, good the one it had not answered.
    assert [_answer(client, late, "street") for _ in range(4)] == [True, True, True, False]
    assert _answer(client, good, "street") and not _answer(client, spam, "street")
    record = poll_job(spec.name, backend, jobs, finish=finish)
    assert record.status == "completed" and record.counters.labeled == 3
    # An object answered again keeps its earlier file too (named by the latest submission time).
    workers = {
        folder.name: {a["workerId"] for f in folder.iterdir() for a in json.loads(f.read_text())["answers"]}
        for folder in (responses / "iteration-1").iterdir()
    }
    assert workers == {str(i): {"good", "late"} for i in range(3)}
    output = Path(spec.output) / spec.name / "manifests" / "output" / "output.manifest"
    assert '"sign"' not in output.read_text()
    report = Path(spec.output) / spec.name / "reports" / "workers.csv"
    assert "spam" not in report.read_text()

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
from orchestrator.jobs import ManifestItem
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
    client, _, ann, admin, _ = portal
    client.post(_next(client, ann, "one").json()["submit_url"], json=EMPTY, headers=ann)
    client.get(f"/a/{admin}")
    page = client.get("/admin/jobs/one").text
    form = dict(re.findall(r'name="(csrf|worker|action)" value="([^"]*)"', page.split("/block")[1]))
    assert form["worker"] == "ann" and form["action"] == "block"
    assert client.post("/admin/jobs/one/block", data={**form, "csrf": "x"}).status_code == 403
    assert _next(client, ann, "one").status_code == 200
    assert client.post("/admin/jobs/one/block", data=form).status_code == 303
    assert _next(client, ann, "one").status_code == 204
    page = client.get("/admin/jobs/one").text
    assert 'name="action" value="unblock"' in page
    assert client.post("/admin/jobs/one/block", data={**form, "action": "unblock"}).status_code == 303
    assert _next(client, ann, "one").status_code == 200

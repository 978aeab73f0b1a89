"""Portal HTTP API and pages: tokens, CSRF, image keys, HTML escaping, marketplace entry points."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orchestrator.backends.portal import catalog, marketplace
from orchestrator.backends.portal.app import create_app
from orchestrator.backends.portal.db import (
    Answer,
    Invite,
    Job,
    Lease,
    Worker,
    default_db_url,
    open_database,
)
from orchestrator.backends.portal.server import ServerThread
from orchestrator.backends.portal.tokens import (
    find_invite,
    hash_token,
    issue_invite,
    issue_token,
    load_signing_key,
    sign,
)
from orchestrator.jobs import ManifestItem
from orchestrator.spec import parse_spec
from orchestrator.storage import open_store

REPO = Path(__file__).resolve().parent.parent
SAMPLE_BUCKET = REPO / "manifests" / "examples" / "bucket"
EVIL = "<img src=x onerror=alert(1)>"
ANSWER = {
    "annotatedResult": {"boundingBoxes": [{"label": "car", "left": 5, "top": 6, "width": 20, "height": 10}]}
}


@pytest.fixture
def portal(tmp_path, portal_db_url):
    """An app over a fresh database with one job (3 objects), a worker token and an admin token."""
    instructions = tmp_path / "instructions.md"
    instructions.write_text(f"Box every car.\n\n{EVIL} and <script>alert(2)</script>\n", encoding="utf-8")
    spec = parse_spec(
        {
            "name": "street",
            "labels": ["car", EVIL],
            "input_manifest": str(tmp_path / "in.manifest"),
            "output": str(tmp_path / "out"),
            "task": {"workers_per_object": 2, "instructions": str(instructions), "title": f"Title {EVIL}"},
        }
    )
    images = sorted((SAMPLE_BUCKET / "images").glob("img_000*.jpg"))[:3]
    items = [ManifestItem(str(i), path.as_uri(), {}) for i, path in enumerate(images)]
    db = open_database(portal_db_url)
    with db.write() as session:
        catalog.load_job(session, spec, items, time.time())
        worker = Worker(public_id="alice-1", name=f"Alice {EVIL}", source="invite", created_at=0)
        session.add(worker)
        session.flush()
        worker_token = issue_token(session, "worker", worker.id)
        admin_token = issue_token(session, "admin")
    client = TestClient(create_app(portal_db_url, None), follow_redirects=False)
    return client, db, worker_token, admin_token


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name}"
    return match.group(1)


def test_tokens_missing_wrong_and_of_the_wrong_kind(portal):
    client, _, worker, admin = portal
    assert client.post("/api/tasks/next").status_code == 401
    assert client.post("/api/tasks/next", headers=_bearer("not-a-token")).status_code == 401
    assert client.post("/api/tasks/next", headers=_bearer(admin)).status_code == 403
    assert client.post("/api/tasks/next", headers=_bearer(worker)).status_code == 200
    assert client.get("/api/admin/jobs").status_code == 401
    assert client.get("/api/admin/jobs", headers=_bearer(worker)).status_code == 403
    jobs = client.get("/api/admin/jobs", headers=_bearer(admin)).json()
    assert [(j["name"], j["objects"], j["live_leases"]) for j in jobs] == [("street", 3, 1)]
    assert client.get("/admin", headers=_bearer(worker)).status_code == 403
    assert client.get("/w/wrong-token").status_code == 401
    assert client.get(f"/w/{admin}").status_code == 401 and client.get(f"/w/{worker}").status_code == 401
    assert client.get("/task").status_code == 401


def test_invite_link_is_one_time_and_the_form_needs_its_csrf_token(portal):
    client, db, _, _ = portal
    with db.write() as session:
        code = issue_invite(session, session.scalar(select(Worker.id)), time.time())
    landing = client.get(f"/w/{code}")
    assert landing.status_code == 200 and 'method="post" action="/w/' in landing.text
    assert "set-cookie" not in landing.headers  # a GET signs nobody in
    for forged in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        assert client.post(f"/w/{code}", headers=forged).status_code == 403  # login CSRF
    entered = client.post(f"/w/{code}", headers={"Sec-Fetch-Site": "same-origin"})
    assert entered.status_code == 303 and entered.headers["location"] == "/task"
    assert "httponly" in entered.headers["set-cookie"].lower()
    assert TestClient(client.app).post(f"/w/{code}").status_code == 401  # spent
    assert client.get(f"/w/{code}").status_code == 401
    page = client.get("/task")
    assert page.status_code == 200 and "<crowd-bounding-box" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    action = re.search(r'<crowd-form action="([^"]+)"', page.text).group(1)
    csrf = _hidden(page.text, "csrf")
    answer = '[{"annotatedResult": {"boundingBoxes": []}}]'

    assert client.post(action, data={"taskAnswers": answer}).status_code == 403
    assert client.post(action, data={"taskAnswers": answer, "csrf": "0" * 64}).status_code == 403
    done = client.post(action, data={"taskAnswers": answer, "csrf": csrf})
    assert done.status_code == 303 and done.headers["location"] == "/task?stored=1"
    assert "Answer stored. Images done in this session: 1." in client.get(done.headers["location"]).text
    with db.read() as session:
        assert session.scalars(select(Answer.content)).all() == ['{"annotatedResult":{"boundingBoxes":[]}}']
    client.cookies.clear()
    assert client.post(action, data={"taskAnswers": answer, "csrf": csrf}).status_code == 401


def test_admin_pages_need_the_admin_token_and_forms_their_csrf_token(portal):
    client, db, worker, admin = portal
    assert client.get(f"/a/{worker}").status_code == 403
    assert client.get(f"/a/{admin}").status_code == 303
    listing = client.get("/admin")
    assert listing.status_code == 200 and "street" in listing.text
    page = client.get("/admin/jobs/street")
    csrf = _hidden(page.text, "csrf")
    assert client.post("/admin/jobs/street/stop", data={}).status_code == 403
    assert client.post("/admin/jobs/street/stop", data={"csrf": "x"}).status_code == 403
    client.cookies.clear()
    assert client.post("/admin/jobs/street/stop", data={"csrf": csrf}).status_code == 401
    stopped = client.post("/admin/jobs/street/stop", data={"csrf": csrf}, headers=_bearer(admin))
    assert stopped.status_code == 303
    with db.read() as session:
        assert session.scalar(select(Job.status)) == "stopped"


def test_image_keys_outside_the_job_are_refused(portal):
    client, db, worker, _ = portal
    task = client.post("/api/tasks/next", headers=_bearer(worker)).json()
    image = client.get(task["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content == (SAMPLE_BUCKET / "images" / unquote(task["image_key"])).read_bytes()
    assert image.headers["x-content-type-options"] == "nosniff"

    key = load_signing_key(db)
    expires = int(time.time()) + 60

    def signed(job_id: int, path: str, exp: int = expires) -> str:
        signature = sign(key, "\n".join([str(job_id), unquote(path), str(exp)]))
        return f"/img/{job_id}/{path}?exp={exp}&sig={signature}"

    job_id = int(task["image_url"].split("/")[2])
    # Raw paths over a real socket: an HTTP client library would normalise the dot segments away.
    traversals = (
        "../truth.jsonl",
        "..%2Ftruth.jsonl",
        "%2e%2e/truth.jsonl",
        "img_0001.jpg/../../truth.jsonl",
    )
    with ServerThread(client.app) as server:
        for path in traversals:
            connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
            connection.request("GET", signed(job_id, path))
            response = connection.getresponse()
            assert response.status == 400, path
            assert b"not a plain key" in response.read()
            connection.close()
    not_in_job = signed(job_id, "corrupt_0001.jpg")
    assert client.get(not_in_job).status_code == 404
    assert client.get(f"/img/{job_id}/{task['image_key']}").status_code == 403  # unsigned
    forged = task["image_url"].replace(task["image_key"], "img_0009.jpg")
    assert client.get(forged).status_code == 403
    assert client.get(signed(job_id, task["image_key"], exp=1)).status_code == 403  # expired


def test_html_in_labels_instructions_and_names_renders_as_text(portal):
    client, _, worker, admin = portal
    client.cookies.set("labeljob_worker", worker)
    page = client.get("/task").text
    assert EVIL not in page and "<script>alert" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    task = client.post("/api/tasks/next", headers=_bearer(worker)).json()
    client.post(task["submit_url"], json={"taskAnswers": [ANSWER]}, headers=_bearer(worker))
    client.get(f"/a/{admin}")
    for path in ("/admin", "/admin/jobs/street"):
        html = client.get(path).text
        assert EVIL not in html
    assert "Alice &lt;img src=x onerror=alert(1)&gt;" in client.get("/admin/jobs/street").text


def test_answer_formats(portal):
    client, _, worker, _ = portal
    headers = _bearer(worker)
    bodies = [
        {"taskAnswers": [ANSWER]},  # MTurk-style
        [ANSWER],  # a bare array
        ANSWER,  # one object
    ]
    for body in bodies:
        task = client.post("/api/tasks/next", headers=headers).json()
        assert client.post(task["submit_url"], json=body, headers=headers).json()["status"] == "accepted"
    task = client.post("/api/tasks/next", headers=_bearer(worker))
    assert task.status_code == 204  # 3 objects, each answered once by this worker
    for bad in ("[1, 2]", '{"taskAnswers": [{}, {}]}', '"text"', "not json"):
        response = client.post("/api/leases/1/answer", content=bad, headers=headers)
        assert response.status_code == 422, bad


def test_mturk_external_question(portal):
    client, db, _, _ = portal
    with db.write() as session:
        link = marketplace.turn_on(session, catalog.job_by_name(session, "street"), "mturk", time.time())
    preview = client.get(
        "/external",
        params={
            "job": "street",
            "k": link.secret,
            "assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE",
            "hitId": "H",
        },
    )
    assert preview.status_code == 200 and "Preview" in preview.text and "<crowd-form" not in preview.text
    params = {
        "job": "street",
        "k": link.secret,
        "assignmentId": "A1",
        "workerId": "WORKER1",
        "hitId": "H",
        "turkSubmitTo": "https://workersandbox.mturk.com",
    }
    assert (
        client.get("/external", params={**params, "turkSubmitTo": "https://evil.example"}).status_code == 400
    )
    page = client.get("/external", params=params)
    assert page.status_code == 200 and "/skip" not in page.text  # MTurk workers return the HIT instead
    action = re.search(r'<crowd-form action="([^"]+)"', page.text).group(1)
    form = {name: _hidden(page.text, name) for name in ("csrf", "session", "assignmentId", "turkSubmitTo")}
    answer = '[{"annotatedResult": {"boundingBoxes": []}}]'
    assert client.post(action, data={**form, "csrf": "bad", "taskAnswers": answer}).status_code == 403
    done = client.post(action, data={**form, "taskAnswers": answer})
    assert done.status_code == 200
    assert 'action="https://workersandbox.mturk.com/mturk/externalSubmit"' in done.text
    assert 'name="assignmentId" value="A1"' in done.text
    nonce = re.search(r"'nonce-([^']+)'", done.headers["content-security-policy"]).group(1)
    assert f'<script nonce="{nonce}">' in done.text
    with db.read() as session:
        assert session.scalars(select(Worker.public_id).where(Worker.source == "mturk")).all() == [
            "mturk:WORKER1"
        ]


def test_s3_images_redirect_to_a_short_lived_presigned_url(s3, portal_db_url):
    s3.client("s3").create_bucket(Bucket="photos")
    s3.client("s3").put_object(Bucket="photos", Key="set/a.jpg", Body=b"jpeg bytes")
    spec = parse_spec(
        {
            "name": "on-s3",
            "labels": ["car"],
            "input_manifest": "s3://photos/m.manifest",
            "output": "s3://photos/out/",
        }
    )
    db = open_database(portal_db_url)
    with db.write() as session:
        catalog.load_job(session, spec, [ManifestItem("0", "s3://photos/set/a.jpg", {})], time.time())
        worker = Worker(public_id="w", name="w", source="invite", created_at=0)
        session.add(worker)
        session.flush()
        token = issue_token(session, "worker", worker.id)
    client = TestClient(create_app(portal_db_url, None, boto3_session=s3), follow_redirects=False)
    task = client.post("/api/tasks/next", headers=_bearer(token)).json()
    assert task["image_key"] == "a.jpg"
    redirect = client.get(task["image_url"])
    assert redirect.status_code == 307
    location = redirect.headers["location"]
    assert "photos" in location and "set/a.jpg" in location and "Expires=" in location


def test_cli_invite_prints_a_link_whose_token_is_stored_only_as_a_hash(tmp_path, portal_db_url):
    from typer.testing import CliRunner

    from orchestrator.cli.app import app

    workspace = tmp_path / "ws"
    result = CliRunner().invoke(
        app,
        ["--workspace", str(workspace), "--format", "json", "portal", "invite", "Ann", "--url", "http://h:1"],
    )
    assert result.exit_code == 0, result.output
    link = json.loads(result.stdout)["link"]
    assert link.startswith("http://h:1/w/")
    token = link.rsplit("/", 1)[1]
    db = open_database(default_db_url(open_store(workspace)))
    with db.read() as session:
        stored = session.scalars(select(Invite.code_hash)).all()
        assert token not in stored and hash_token(token) in stored
        assert find_invite(session, token, time.time()) is not None
    unknown_job = CliRunner().invoke(
        app, ["--workspace", str(workspace), "portal", "invite", "Bo", "--job", "nope"]
    )
    assert unknown_job.exit_code == 1 and "no job 'nope'" in unknown_job.output


def _cli(*args: str):
    from typer.testing import CliRunner

    from orchestrator.cli.app import app

    return CliRunner().invoke(app, list(args))


def test_serve_refuses_a_bad_or_busy_port_in_one_line(tmp_path, portal_db_url):
    bad = _cli("--workspace", str(tmp_path / "ws"), "portal", "serve", "--port", "80808")
    assert bad.exit_code == 1
    assert bad.stderr.splitlines() == [
        "Error: --port 80808 is not a TCP port",
        "Hint: give a port from 1 to 65535, e.g. --port 8080",
    ]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = _cli("--workspace", str(tmp_path / "ws"), "portal", "serve", "--port", str(port))
    assert busy.exit_code == 1 and busy.stdout == ""
    assert busy.stderr.splitlines() == [
        f"Error: port {port} on 127.0.0.1 is already in use",
        "Hint: stop what listens there, or pass another port with --port",
    ]


def test_invite_takes_the_servers_address_and_warns_about_a_namesake(tmp_path, portal_db_url):
    db = open_database(portal_db_url)
    catalog.record_server_url(db, "http://127.0.0.1:9123")  # as `portal serve --port 9123` does
    first = _cli("--format", "json", "portal", "invite", "Ann", "--db", portal_db_url)
    assert first.exit_code == 0 and first.stderr == ""
    assert json.loads(first.stdout)["link"].startswith("http://127.0.0.1:9123/w/")
    again = _cli("--format", "json", "portal", "invite", "Ann", "--db", portal_db_url)
    assert again.exit_code == 0
    first_id, second_id = json.loads(first.stdout)["worker_id"], json.loads(again.stdout)["worker_id"]
    assert again.stderr.startswith(f"Warning: a worker named 'Ann' exists already ({first_id})")
    assert second_id in again.stderr


def test_simulate_checks_the_truths_labels_before_leasing_anything(portal, portal_db_url):
    _, db, _, _ = portal  # the job's labels are car and an HTML string; the truth has more
    result = _cli(
        "portal", "simulate", "--job", "street", "--db", portal_db_url, "--url", "http://127.0.0.1:9"
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: the truth has labels the job lacks: pedestrian, sign")
    with db.read() as session:
        assert session.scalar(select(func.count(Lease.id))) == 0


def test_simulate_gives_back_its_leases_when_it_fails(tmp_path, portal_db_url):
    spec = parse_spec(
        {
            "name": "partial",
            "labels": ["car", "pedestrian", "sign"],
            "input_manifest": str(tmp_path / "in.manifest"),
            "output": str(tmp_path / "out"),
        }
    )
    truth_lines = (SAMPLE_BUCKET / "truth.jsonl").read_text().splitlines()
    keys = [json.loads(line)["key"] for line in truth_lines if "/img_" in line][:4]
    db = open_database(portal_db_url)
    with db.write() as session:
        items = [ManifestItem(str(i), (SAMPLE_BUCKET / key).as_uri(), {}) for i, key in enumerate(keys)]
        catalog.load_job(session, spec, items, time.time())
    truth = tmp_path / "truth.jsonl"  # the truth of one image: a worker given another one fails
    truth.write_text(next(line for line in truth_lines if json.loads(line)["key"] == keys[0]) + "\n")
    with ServerThread(create_app(portal_db_url, None)) as server:
        result = _cli(
            "portal", "simulate", "--job", "partial", "--workers", "3", "--truth", str(truth),
            "--db", portal_db_url, "--url", server.url,
        )  # fmt: skip
    assert result.exit_code == 1 and "no truth for" in result.stderr
    now = time.time()
    with db.read() as session:
        leased = session.scalar(
            select(func.count(Lease.id)).where(Lease.submitted_at.is_(None), Lease.expires_at > now)
        )
    assert leased == 0


def test_ctrl_c_stops_simulate_at_once_and_gives_its_leases_back(tmp_path, portal_db_url):
    spec = parse_spec(
        {
            "name": "long",
            "labels": ["car", "pedestrian", "sign"],
            "input_manifest": str(tmp_path / "in.manifest"),
            "output": str(tmp_path / "out"),
            "task": {"workers_per_object": 3},
        }
    )
    scenes = sorted((SAMPLE_BUCKET / "images").glob("img_*.jpg"))
    db = open_database(portal_db_url)
    with db.write() as session:  # far more than the run below can answer before its Ctrl-C
        items = [ManifestItem(str(i), scenes[i % len(scenes)].as_uri(), {}) for i in range(2000)]
        catalog.load_job(session, spec, items, time.time())
    command = [sys.executable, "-c", "from orchestrator.cli import main; main()", "portal", "simulate"]
    with ServerThread(create_app(portal_db_url, None)) as server:
        command += ["--job", "long", "--workers", "4", "--db", portal_db_url, "--url", server.url]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        answered = 0
        while answered < 8 and process.poll() is None:
            time.sleep(0.05)
            with db.read() as session:
                answered = session.scalar(select(func.count(Answer.id)))
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=60)
        finally:
            process.kill()  # a no-op once it has exited; otherwise the first Ctrl-C was ignored
    assert process.returncode == 130, stderr
    assert stderr.splitlines()[-1] == "Error: interrupted" and "Traceback" not in stderr
    now = time.time()
    with db.read() as session:
        assert session.scalar(select(func.count(Answer.id))) < 2000 * 3
        live = select(func.count(Lease.id)).where(Lease.submitted_at.is_(None), Lease.expires_at > now)
        assert session.scalar(live) == 0

"""Portal findings 2-5 of issue 11, each tried as the attack first: what images are served and how,
which local files a job may name, oversized and slow requests, and the smaller holes."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from orchestrator.backends.portal import app as app_module
from orchestrator.backends.portal import catalog
from orchestrator.backends.portal import server as server_module
from orchestrator.backends.portal.app import create_app
from orchestrator.backends.portal.backend import PortalBackend
from orchestrator.backends.portal.db import Answer, Worker, open_database
from orchestrator.backends.portal.server import ServerThread
from orchestrator.backends.portal.tokens import issue_token
from orchestrator.errors import InputError
from orchestrator.jobs import JobStore, ManifestItem, launch_job
from orchestrator.spec import parse_spec
from orchestrator.storage import LocalStore

SAMPLE_BUCKET = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "bucket"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>fetch("/admin")</script></svg>'


def _images(folder: Path, count: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for path in sorted((SAMPLE_BUCKET / "images").glob("img_00*.jpg"))[:count]:
        paths.append(Path(shutil.copy(path, folder / path.name)))
    return paths


def _spec(tmp_path: Path, **portal):
    return parse_spec(
        {
            "name": "hard",
            "labels": ["car"],
            "input_manifest": str(tmp_path / "in.manifest"),
            "output": str(tmp_path / "out"),
            "portal": portal,
        }
    )


def _launch(tmp_path: Path, paths: list[Path | str], **portal):
    workspace = LocalStore(tmp_path / "ws")
    jobs = JobStore(workspace)
    refs = [p.as_uri() if isinstance(p, Path) else p for p in paths]
    items = [ManifestItem(str(i), ref, {}) for i, ref in enumerate(refs)]
    return launch_job(_spec(tmp_path, **portal), PortalBackend(workspace), jobs, items), jobs


def _worker_client(tmp_path: Path, paths: list[Path]) -> tuple[TestClient, dict]:
    """An app over a job of `paths` (loaded without launch's checks) and a worker's bearer header."""
    db_url = f"sqlite:///{tmp_path / 'portal.db'}"
    db = open_database(db_url)
    with db.write() as session:
        items = [ManifestItem(str(i), p.as_uri(), {}) for i, p in enumerate(paths)]
        catalog.load_job(session, _spec(tmp_path), items, time.time())
        worker = Worker(public_id="w", name="w", source="invite", created_at=0)
        session.add(worker)
        session.flush()
        token = issue_token(session, "worker", worker.id)
    return TestClient(create_app(db_url, None), follow_redirects=False), {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------------ finding 2: image types


def test_an_svg_source_ref_is_refused_at_launch(tmp_path):
    folder = tmp_path / "images"
    paths = _images(folder)
    (folder / "evil.svg").write_bytes(SVG)
    with pytest.raises(InputError, match="not JPEG, PNG, BMP, GIF or WebP.*evil.svg"):
        _launch(tmp_path, [*paths, folder / "evil.svg"], image_folder=str(folder))


def test_a_script_behind_an_image_name_is_not_served_and_images_are_sandboxed(tmp_path):
    folder = tmp_path / "images"
    paths = _images(folder, 1)
    disguised = folder / "img_0009.png"
    disguised.write_bytes(SVG)  # launched as a PNG, its bytes are SVG
    client, bearer = _worker_client(tmp_path, [disguised, *paths])
    task = client.post("/api/tasks/next", headers=bearer).json()
    assert task["image_key"] == "img_0009.png"
    refused = client.get(task["image_url"])
    assert refused.status_code == 415 and b"<script>" not in refused.content
    client.post(task["submit_url"], json={"annotatedResult": {"boundingBoxes": []}}, headers=bearer)
    good = client.get(client.post("/api/tasks/next", headers=bearer).json()["image_url"])
    assert good.status_code == 200 and good.headers["content-type"] == "image/jpeg"
    assert good.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert good.headers["x-content-type-options"] == "nosniff"


# ------------------------------------------------------------------- finding 3: local image folder


def test_local_images_outside_the_declared_image_folder_are_refused_at_launch(tmp_path):
    folder = tmp_path / "images"
    paths = _images(folder)
    secret = tmp_path / "secrets" / "credentials.jpg"
    secret.parent.mkdir()
    secret.write_text("[default]\naws_secret_access_key = not-for-workers\n")
    escape = folder / "escape.jpg"
    escape.symlink_to(secret)  # inside the folder by name, outside once resolved
    for outside in (secret, escape):
        with pytest.raises(InputError, match="outside portal.image_folder"):
            _launch(tmp_path, [*paths, outside], image_folder=str(folder))
    outcome, jobs = _launch(tmp_path, paths, image_folder=str(folder))
    assert outcome.created and jobs.names() == ["hard"]


def test_without_an_image_folder_images_spread_over_the_disk_are_refused(tmp_path):
    paths = _images(tmp_path / "images")
    with pytest.raises(InputError, match="share no folder narrower than /"):
        _launch(tmp_path, [*paths, "file:///etc/ssl/private.jpg"])
    home = Path.home().resolve()
    with pytest.raises(InputError, match=f"narrower than {home}:") as refused:
        _launch(tmp_path, [(home / "photo.jpg").as_uri(), (home / "sub" / "a.jpg").as_uri()])
    assert "portal.image_folder" in refused.value.hint


# --------------------------------------------------------------- finding 4: big and slow requests


def _asgi_post(app, path: str, headers: dict[str, str], chunks, read: list[int]) -> int:
    """POST `chunks` to the ASGI app, counting in `read` how many it pulled; the response status."""

    async def run() -> int:
        source = iter(chunks)
        status = []

        async def receive():
            chunk = next(source, None)
            if chunk is None:
                await asyncio.sleep(5)  # a client that stops sending, then gives up
                return {"type": "http.disconnect"}
            read.append(len(chunk))
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        await app(scope, receive, send)
        return status[0]

    return asyncio.run(run())


def test_a_chunked_body_is_cut_at_the_limit_not_read_whole(tmp_path):
    client, bearer = _worker_client(tmp_path, _images(tmp_path / "images", 1))
    task = client.post("/api/tasks/next", headers=bearer).json()
    read: list[int] = []
    chunk = b"x" * 65536
    status = _asgi_post(client.app, task["submit_url"], bearer, [chunk] * 200, read)  # 13 MB, no length
    assert status == 413
    assert sum(read) <= app_module.MAX_BODY_BYTES + len(chunk)


def test_a_body_that_trickles_in_is_cut_after_its_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(app_module, "BODY_SECONDS", 0.2)
    client, bearer = _worker_client(tmp_path, _images(tmp_path / "images", 1))
    task = client.post("/api/tasks/next", headers=bearer).json()
    assert _asgi_post(client.app, task["submit_url"], bearer, [b"{"], []) == 408


def _raw(server, data: bytes) -> socket.socket:
    connection = socket.create_connection((server.host, server.port), timeout=10)
    connection.sendall(data)
    return connection


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "HEAD_SECONDS", 1)
    client, _ = _worker_client(tmp_path, _images(tmp_path / "images", 1))
    with ServerThread(client.app) as server:
        slow = _raw(server, b"GET /healthz HTTP/1.1\r\n")
        for _ in range(3):  # each byte before the deadline, the head never complete
            time.sleep(0.4)
            try:
                slow.sendall(b"X")
            except OSError:
                break
        assert slow.recv(1024) == b""  # closed by the server, with no response
        slow.close()
        healthy = _raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert healthy.recv(1024).startswith(b"HTTP/1.1 200")
        healthy.close()


def test_connections_beyond_the_concurrency_limit_get_503(tmp_path, monkeypatch):
    monkeypatch.setattr(server_module, "LIMIT_CONCURRENCY", 2)
    client, _ = _worker_client(tmp_path, _images(tmp_path / "images", 1))
    with ServerThread(client.app) as server:
        held = [_raw(server, b"GET /healthz HTTP/1.1\r\n") for _ in range(2)]
        time.sleep(0.2)  # let the server accept both
        third = _raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert third.recv(1024).startswith(b"HTTP/1.1 503")
        for connection in [*held, third]:
            connection.close()


def test_forms_have_field_limits_and_only_urlencoded_is_taken(tmp_path):
    client, _ = _worker_client(tmp_path, _images(tmp_path / "images", 1))
    many = "&".join(f"f{i}=1" for i in range(100))
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert client.post("/go/1", content=many, headers=headers).status_code == 413
    long_field = {"session": "x" * 5000, "csrf": "y"}
    assert client.post("/go/1", data=long_field).status_code == 413
    multipart = client.post("/go/1", files={"taskAnswers": ("a", b"[]")})
    assert multipart.status_code == 415


# ------------------------------------------------------------------------- finding 5: answers


def test_answers_nested_too_deeply_oversized_or_padded_are_refused_or_trimmed(tmp_path):
    client, bearer = _worker_client(tmp_path, _images(tmp_path / "images", 2))
    task = client.post("/api/tasks/next", headers=bearer).json()
    nested = "[" * 100_000 + "]" * 100_000
    deep = client.post(task["submit_url"], json={"taskAnswers": nested}, headers=bearer)
    assert deep.status_code == 422
    box = {"label": "car", "left": 1, "top": 1, "width": 5, "height": 5}
    many = {"annotatedResult": {"boundingBoxes": [box] * 2000}}
    assert client.post(task["submit_url"], json=many, headers=bearer).status_code == 422
    padded = {"annotatedResult": {"boundingBoxes": [box], "junk": "x" * 1_500_000}, "more": "y" * 1000}
    assert client.post(task["submit_url"], json=padded, headers=bearer).json()["status"] == "accepted"
    db = client.app.state.portal.db
    with db.read() as session:
        (stored,) = session.scalars(select(Answer.content)).all()
    assert json.loads(stored) == {"annotatedResult": {"boundingBoxes": [box]}}
    assert '"left":1,' in stored  # whole pixels stay integers


def test_a_deeply_nested_form_answer_is_a_422_not_a_500(tmp_path):
    client, _ = _worker_client(tmp_path, _images(tmp_path / "images", 1))
    db = client.app.state.portal.db
    with db.write() as session:
        worker = session.scalar(select(Worker.id))
        token = issue_token(session, "worker", worker)
    client.cookies.set("labeljob_worker", token)
    page = client.get("/task").text
    action = re.search(r'<crowd-form action="([^"]+)"', page).group(1)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    nested = "[" * 100_000 + "]" * 100_000
    assert client.post(action, data={"csrf": csrf, "taskAnswers": nested}).status_code == 422


def test_the_owner_of_a_lease_is_checked_before_its_answer(tmp_path):
    client, bearer = _worker_client(tmp_path, _images(tmp_path / "images", 1))
    task = client.post("/api/tasks/next", headers=bearer).json()
    db = client.app.state.portal.db
    with db.write() as session:
        other = Worker(public_id="o", name="o", source="invite", created_at=0)
        session.add(other)
        session.flush()
        stranger = {"Authorization": f"Bearer {issue_token(session, 'worker', other.id)}"}
    wrong_label = {
        "annotatedResult": {
            "boundingBoxes": [{"label": "zebra", "left": 1, "top": 1, "width": 2, "height": 2}]
        }
    }
    for body in (wrong_label, {"not": "an answer"}):
        refused = client.post(task["submit_url"], json=body, headers=stranger)
        assert refused.status_code == 409 and refused.json()["error"] == "unknown_lease"


def test_admin_pages_cannot_be_framed_but_task_pages_can(tmp_path):
    client, bearer = _worker_client(tmp_path, _images(tmp_path / "images", 1))
    db = client.app.state.portal.db
    with db.write() as session:
        admin = {"Authorization": f"Bearer {issue_token(session, 'admin')}"}
        worker = session.scalar(select(Worker.id))
        cookie = issue_token(session, "worker", worker)
    for path in ("/admin", "/admin/jobs/hard"):
        page = client.get(path, headers=admin)
        assert page.status_code == 200, path
        assert page.headers["content-security-policy"].endswith("; frame-ancestors 'none'"), path
        assert page.headers["x-frame-options"] == "DENY"
    assert client.get("/api/admin/jobs", headers=admin).headers["x-frame-options"] == "DENY"
    client.cookies.set("labeljob_worker", cookie)
    task = client.get("/task")
    assert "<crowd-form" in task.text and "frame-ancestors" not in task.headers["content-security-policy"]
    assert "x-frame-options" not in task.headers


def test_the_database_is_owner_only_even_when_an_older_one_was_not(tmp_path):
    fresh = tmp_path / "new-workspace" / "portal.db"
    open_database(f"sqlite:///{fresh}").dispose()
    assert fresh.stat().st_mode & 0o777 == 0o600
    assert fresh.parent.stat().st_mode & 0o777 == 0o700
    old = tmp_path / "old.db"
    old.touch(mode=0o644)
    old.chmod(0o644)
    db = open_database(f"sqlite:///{old}")
    with db.write() as session:
        issue_token(session, "admin")  # writes the WAL
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.glob("old.db*")} == {
        name: 0o600 for name in ("old.db", "old.db-wal", "old.db-shm")
    }


def test_locks_live_in_a_private_per_user_folder_that_is_never_a_planted_link(tmp_path, monkeypatch):
    import os

    from orchestrator.errors import StorageError

    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    store = LocalStore(tmp_path / "ws")
    folder = tmp_path / f"labeljob-locks-{os.getuid()}"
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    folder.symlink_to(elsewhere, target_is_directory=True)  # planted before labeljob ran
    with pytest.raises(StorageError, match="not this user's private lock folder"):
        store.put_if_absent("a.json", b"{}")
    assert list(elsewhere.iterdir()) == []
    folder.unlink()
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)  # a folder others may write to
    with pytest.raises(StorageError, match="not this user's private lock folder"):
        store.put_if_absent("a.json", b"{}")
    folder.rmdir()
    store.put_if_absent("a.json", b"{}")
    assert folder.stat().st_mode & 0o777 == 0o700 and len(list(folder.iterdir())) == 1


def test_worker_tokens_expire(tmp_path):
    from orchestrator.backends.portal.tokens import WORKER_SECONDS

    _images(tmp_path / "images", 1)
    now = [time.time()]
    db_url = f"sqlite:///{tmp_path / 'portal.db'}"
    db = open_database(db_url)
    with db.write() as session:
        worker = Worker(public_id="w", name="w", source="invite", created_at=0)
        session.add(worker)
        session.flush()
        bearer = {"Authorization": f"Bearer {issue_token(session, 'worker', worker.id, now[0])}"}
    client = TestClient(create_app(db_url, None, clock=lambda: now[0]))
    assert client.post("/api/tasks/next", headers=bearer).status_code == 204  # valid, no job
    now[0] += WORKER_SECONDS + 1
    assert client.post("/api/tasks/next", headers=bearer).status_code == 401


def test_a_database_an_older_labeljob_made_gains_the_new_columns(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.executescript(
            "CREATE TABLE tokens (id INTEGER PRIMARY KEY, token_hash VARCHAR(64) UNIQUE, kind VARCHAR(16),"
            " worker_id INTEGER, created_at FLOAT, revoked_at FLOAT);"
            "CREATE TABLE leases (id INTEGER PRIMARY KEY, task_id INTEGER, worker_id INTEGER,"
            " started_at FLOAT, expires_at FLOAT, submitted_at FLOAT);"
        )
    db = open_database(f"sqlite:///{path}")
    with sqlite3.connect(path) as upgraded:
        columns = {
            table: {row[1] for row in upgraded.execute(f"PRAGMA table_info({table})")}
            for table in ("tokens", "leases")
        }
    assert {"job_id", "expires_at"} <= columns["tokens"] and "token_id" in columns["leases"]
    with db.write() as session:
        worker = Worker(public_id="w", name="w", source="invite", created_at=0)
        session.add(worker)
        session.flush()
        issue_token(session, "worker", worker.id)  # writes expires_at

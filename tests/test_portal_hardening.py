"""Portal findings 2-5 of issue 11, each tried as the attack first: what images are served and how,
which local files a job may name, oversized and slow requests, and the smaller holes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from orchestrator.backends.portal import catalog
from orchestrator.backends.portal.app import create_app
from orchestrator.backends.portal.backend import PortalBackend
from orchestrator.backends.portal.db import Worker, open_database
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

"""`labeljob doctor` on a portal job: images, public URL and marketplace entry, no AWS at all."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from typer.testing import CliRunner

from orchestrator.cli.app import app

SAMPLE_BUCKET = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "bucket"
IMAGES = sorted(p for p in (SAMPLE_BUCKET / "images").rglob("img_*.jpg"))[:3]


def write_job(tmp_path: Path, refs: list[str], **portal) -> Path:
    manifest = tmp_path / "in.manifest"
    manifest.write_text("".join(json.dumps({"source-ref": ref}) + "\n" for ref in refs))
    lines = [
        'name = "doctor-portal"',
        'backend = "portal"',
        'labels = ["car", "pedestrian", "sign"]',
        f'input_manifest = "{manifest}"',
        f'output = "{tmp_path / "out"}"',
        "[portal]",
        *(f'{key} = "{value}"' for key, value in portal.items()),
    ]
    spec = tmp_path / "job.toml"
    spec.write_text("\n".join(lines) + "\n")
    return spec


def doctor(tmp_path: Path, spec: Path) -> tuple[int, dict[str, dict]]:
    result = CliRunner().invoke(
        app, ["--workspace", str(tmp_path / "ws"), "--format", "json", "doctor", str(spec)]
    )
    return result.exit_code, {check["name"]: check for check in json.loads(result.stdout)}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_image_outside_the_image_folder_fails(tmp_path):
    outside = tmp_path / "elsewhere" / "a.jpg"
    outside.parent.mkdir()
    outside.write_bytes(IMAGES[0].read_bytes())
    spec = write_job(tmp_path, [IMAGES[1].as_uri(), outside.as_uri()], image_folder=str(SAMPLE_BUCKET))
    code, checks = doctor(tmp_path, spec)
    assert code == 1 and checks["images"]["status"] == "fail", checks["images"]


def test_a_jpg_that_is_not_an_image_fails_on_its_first_bytes(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "real.jpg").write_bytes(IMAGES[0].read_bytes())
    (folder / "fake.jpg").write_bytes(b"<svg onload=alert(1)></svg>")
    spec = write_job(tmp_path, [(folder / "real.jpg").as_uri(), (folder / "fake.jpg").as_uri()])
    code, checks = doctor(tmp_path, spec)
    assert code == 1 and checks["images"]["status"] == "fail"
    assert "fake.jpg: not a JPEG" in checks["images"]["detail"]


def test_a_public_url_where_no_portal_answers_fails(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    spec = write_job(tmp_path, [p.as_uri() for p in IMAGES], public_url=url)
    code, checks = doctor(tmp_path, spec)
    assert code == 1 and checks["public url"]["status"] == "fail"
    assert url in checks["public url"]["detail"]


def test_a_good_job_passes_and_reports_the_marketplace_entry(tmp_path):
    from orchestrator.backends.portal import catalog, marketplace
    from orchestrator.backends.portal.app import create_app
    from orchestrator.backends.portal.db import default_db_url, open_database
    from orchestrator.backends.portal.server import ServerThread
    from orchestrator.storage import open_store

    workspace = open_store(tmp_path / "ws")
    database = open_database(default_db_url(workspace, None))
    with ServerThread(create_app(database.url, workspace)) as server:
        spec = write_job(tmp_path, [p.as_uri() for p in IMAGES], public_url=server.url)
        code, checks = doctor(tmp_path, spec)
        assert code == 0, checks
        assert {name: c["status"] for name, c in checks.items()} == {
            "spec": "ok",
            "manifest": "ok",
            "images": "ok",
            "public url": "ok",
            "marketplace": "ok",
        }
        assert "not launched" in checks["marketplace"]["detail"]

        launched = CliRunner().invoke(
            app, ["--workspace", str(tmp_path / "ws"), "launch", str(spec), "--yes"]
        )
        assert launched.exit_code == 0, launched.output
        _, checks = doctor(tmp_path, spec)
        assert checks["marketplace"]["detail"].startswith("entry off")

        with database.write() as session:
            marketplace.turn_on(
                session, catalog.job_by_name(session, "doctor-portal"), "prolific", time.time()
            )
        _, checks = doctor(tmp_path, spec)
        assert checks["marketplace"]["detail"].startswith("entry on from prolific")


def test_no_public_url_is_a_warning_not_a_failure(tmp_path):
    spec = write_job(tmp_path, [p.as_uri() for p in IMAGES])
    code, checks = doctor(tmp_path, spec)
    assert code == 0 and checks["public url"]["status"] == "warn", checks

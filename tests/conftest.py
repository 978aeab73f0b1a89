"""Fixtures shared by every test: no test may reach real AWS or a real AWS profile."""

from __future__ import annotations

from pathlib import Path

import pytest

# Fixture modules, registered once here instead of imported into each test module.
pytest_plugins = ["tests.fakes.aws", "tests.fakes.groundtruth", "tests.fakes.mturk", "tests.postgres"]

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_BUCKET = REPO / "manifests" / "examples" / "bucket"


@pytest.fixture(autouse=True)
def _isolated_aws(monkeypatch, tmp_path):
    """Fake credentials, no profile, no endpoint overrides, no labeljob.toml from the developer."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    import os

    for name in list(os.environ):
        if name.startswith(("AWS_ENDPOINT_URL", "LABELJOB_")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    empty_config = tmp_path / "empty-labeljob.toml"
    empty_config.write_text("")
    monkeypatch.setenv("LABELJOB_CONFIG", str(empty_config))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 in-process; yields a boto3 session whose clients reach it."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        yield boto3.Session(region_name="us-east-1")


@pytest.fixture
def portal_spec(tmp_path):
    """A factory of portal jobs over sample images: (name, truth keys, extra spec keys) -> (spec,
    the job layer's store, the portal backend); labels car, pedestrian, sign, 3 answers per image."""
    import json

    from orchestrator.backends import get_backend
    from orchestrator.jobs import JobStore
    from orchestrator.spec import parse_spec
    from orchestrator.storage import open_store

    def make(name: str, keys: list[str], **extra):
        manifest = tmp_path / f"{name}.manifest"
        manifest.write_text(
            "".join(json.dumps({"source-ref": (SAMPLE_BUCKET / k).as_uri()}) + "\n" for k in keys)
        )
        spec = parse_spec(
            {
                "name": name,
                "labels": ["car", "pedestrian", "sign"],
                "input_manifest": str(manifest),
                "output": str(tmp_path / "labeling"),
                "task": {"workers_per_object": 3},
                **extra,
            }
        )
        workspace = open_store(tmp_path / "workspace")
        return spec, JobStore(workspace), get_backend("portal", workspace=workspace)

    return make

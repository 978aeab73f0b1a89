"""Security: no secret leaves labeljob, presigned URLs are short and narrow, pages escape what
people typed, stores keep to their roots, and the portal's tokens are hashed, timing-safe,
separate by kind and guarded by CSRF on every form.

Secret scans run with known fake AWS keys in the environment and look for each secret, raw and
URL-encoded, in stdout, stderr, job records and every file or object the commands wrote.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import logging
import re
import shutil
import sqlite3
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import boto3
import liquid
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from orchestrator.backends.groundtruth.backend import GroundTruthBackend, render_template
from orchestrator.backends.mturk.question import (
    MAX_PRESIGN_SECONDS,
    ImageLinks,
    Questions,
    image_url_lifetime,
)
from orchestrator.backends.portal import catalog, marketplace
from orchestrator.backends.portal import tokens as portal_tokens
from orchestrator.backends.portal.app import IMAGE_URL_SECONDS, create_app
from orchestrator.backends.portal.backend import PortalBackend
from orchestrator.backends.portal.db import Report, Worker, open_database
from orchestrator.backends.portal.media import PRESIGN_SECONDS
from orchestrator.cli.app import app
from orchestrator.doctor import check_sources
from orchestrator.errors import InputError, StorageError
from orchestrator.jobs import JobStore, ManifestItem, finish_job, launch_job, poll_job, read_items
from orchestrator.redact import (
    MASK,
    RedactingFilter,
    ShownOnce,
    install_log_redaction,
    redact,
    redact_text,
    secret_paths,
)
from orchestrator.spec import parse_spec
from orchestrator.storage import LocalStore, open_store
from tests.fakes.mturk import IMAGE_BUCKET, MTurkJob
from tests.reliability.crowd import answer_all

SAMPLE_BUCKET = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "bucket"
LABELS_FILE = SAMPLE_BUCKET.parent / "labels.json"
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLE//////////wEaDEXAMPLEsessionTOKEN+0123456789abcdef/ghijklmn=="
SECRETS = (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN)
EVIL = "<img src=x onerror=alert(1)>"
CDATA_BREAKER = "]]><script>alert(4)</script>"


def leak_forms(secret: str) -> set[str]:
    """The ways a secret can show up in text: raw, URL-encoded (path or form style)."""
    return {secret, quote(secret, safe=""), quote_plus(secret)}


FORMS = sorted({form for secret in SECRETS for form in leak_forms(secret)})


def assert_no_secret(text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for form in FORMS:
        assert form.encode() not in data, f"{where} holds a secret ({form[:8]}...)"


def assert_tree_clean(root: Path) -> list[Path]:
    """Every file under `root` (SQLite databases and their WAL included) holds no secret."""
    files = [p for p in root.rglob("*") if p.is_file()]
    for path in files:
        assert_no_secret(path.read_bytes(), str(path))
    return files


def assert_bucket_clean(client) -> int:
    count = 0
    for bucket in client.list_buckets()["Buckets"]:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            for obj in page.get("Contents", ()):
                body = client.get_object(Bucket=bucket["Name"], Key=obj["Key"])["Body"].read()
                assert_no_secret(body, f"s3://{bucket['Name']}/{obj['Key']}")
                count += 1
    return count


def assert_records_clean(jobs: JobStore) -> None:
    for name in jobs.names():
        record = jobs.load(name)[0]
        assert secret_paths(record.model_dump(mode="json")) == [], name


@pytest.fixture
def fake_keys(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)


class Cli:
    """Runs `labeljob` in one format and checks that its stdout and stderr hold no secret."""

    def __init__(self, workspace: str, fmt: str) -> None:
        self.workspace, self.fmt = workspace, fmt
        self.outputs: list[str] = []

    def __call__(self, *args: str, exit_code: int = 0):
        result = CliRunner().invoke(app, ["--workspace", self.workspace, "--format", self.fmt, *args])
        assert result.exit_code == exit_code, result.output
        assert_no_secret(result.stdout, f"stdout of {args[:2]}")
        assert_no_secret(result.stderr, f"stderr of {args[:2]}")
        self.outputs.append(result.stdout + result.stderr)
        return result


def copy_images(folder: Path, count: int = 3) -> Path:
    images = folder / "images"
    images.mkdir(parents=True)
    for path in sorted((SAMPLE_BUCKET / "images").glob("img_00*.jpg"))[:count]:
        shutil.copy(path, images / path.name)
    return images


def portal_spec(path: Path, manifest: str, output: str, name: str = "secure-job") -> Path:
    path.write_text(
        f'name = "{name}"\nbackend = "portal"\nlabels = ["car", "pedestrian", "sign"]\n'
        f'input_manifest = "{manifest}"\noutput = "{output}"\n[task]\nworkers_per_object = 2\n',
        encoding="utf-8",
    )
    return path


# ------------------------------------------------------------------------------ redaction


def test_redaction_masks_every_kind_of_secret_and_keeps_the_rest(fake_keys):
    presigned = (
        f"https://b.s3.amazonaws.com/a.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={ACCESS_KEY_ID}"
        f"%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Expires=300&X-Amz-SignedHeaders=host"
        f"&X-Amz-Security-Token={quote(SESSION_TOKEN, safe='')}&X-Amz-Signature=0123abcd"
    )
    cases = {
        presigned: "X-Amz-Credential=***&X-Amz-Expires=300",
        f"key {ACCESS_KEY_ID} used": "key *** used",
        f"aws_secret_access_key = {SECRET_ACCESS_KEY}": "aws_secret_access_key = ***",
        f'{{"SecretAccessKey": "{SECRET_ACCESS_KEY}"}}': '{"SecretAccessKey": "***"}',
        f"copied {SECRET_ACCESS_KEY} alone": "copied *** alone",  # known from the environment
        f"token {SESSION_TOKEN}": "token ***",
        "Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123": "Authorization: Bearer ***",
        "http://h:8080/w/" + "x" * 43: "http://h:8080/w/***",
        "http://h:8080/a/" + "Ab_-" * 10 + "xyz.": "http://h:8080/a/***.",
        "postgresql+psycopg://app:hunter2@db:5432/portal": "postgresql+psycopg://app:***@db:5432/portal",
    }
    for text, expected in cases.items():
        masked = redact_text(text)
        assert expected in masked, (text, masked)
        assert_no_secret(masked, text[:30])
        assert redact_text(masked) == masked  # idempotent
    harmless = (
        "s3://bucket/images/img_0001.jpg arn:aws:iam::123456789012:role/GroundTruth "
        "0123456789abcdef0123456789abcdef01234567 http://127.0.0.1:8080/w/short /a/readme.md "
        "postgresql+psycopg://app@db/portal UniqueRequestToken"
    )
    assert redact_text(harmless) == harmless
    data = {"password": "x", "token": "abc", "UniqueRequestToken": "t", "rows": [{"url": presigned}], "n": 3}
    assert redact(data) == {
        "password": MASK,
        "token": MASK,
        "UniqueRequestToken": "t",
        "rows": [{"url": redact_text(presigned)}],
        "n": 3,
    }
    assert secret_paths(data) == ["$.password", "$.token", "$.rows[0].url"]
    link = ShownOnce("http://h/w/" + "y" * 43)
    assert redact({"link": link}) == {"link": link}  # the one documented exception


def test_log_records_are_masked_by_the_installed_filter(fake_keys):
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    try:
        install_log_redaction()
        install_log_redaction()  # idempotent
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
        log = logging.getLogger("orchestrator.some.module")
        log.warning("calling with %s and %s", ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        try:
            raise RuntimeError(f"X-Amz-Security-Token={SESSION_TOKEN}")
        except RuntimeError:
            log.exception("failed")
    finally:
        root.removeHandler(handler)
    text = stream.getvalue()
    assert "calling with *** and ***" in text and "X-Amz-Security-Token=***" in text
    assert_no_secret(text, "log output")


def test_the_lambda_module_installs_the_log_filter():
    import orchestrator.lambdas  # noqa: F401 (importing it installs the filter)

    assert all(any(isinstance(f, RedactingFilter) for f in h.filters) for h in logging.getLogger().handlers)


def test_a_record_never_stores_a_secret_even_when_given_one(tmp_path, caplog):
    """A spec URL carrying a password is masked in the stored record, with a warning naming where."""
    spec = parse_spec(
        {
            "name": "leaky",
            "labels": ["car"],
            "input_manifest": str(tmp_path / "in.manifest"),
            "output": str(tmp_path / "out"),
            "portal": {"public_url": "https://admin:hunter2@portal.example.com"},
        }
    )
    from orchestrator.jobs import new_record

    jobs = JobStore(LocalStore(tmp_path / "ws"))
    with caplog.at_level(logging.WARNING, logger="orchestrator.jobs"):
        jobs.create(new_record(spec, 1))
    stored = (tmp_path / "ws" / "jobs" / "leaky" / "job.json").read_text()
    assert "hunter2" not in stored and "https://admin:***@portal.example.com" in stored
    assert "$.spec.portal.public_url" in caplog.text


# ------------------------------------------------------------------- the CLI, every backend


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_portal_flow_commands_print_and_store_no_secret(tmp_path, fake_keys, caplog, fmt):
    bucket = tmp_path / "bucket"
    copy_images(bucket)
    workspace = tmp_path / "ws"
    cli = Cli(str(workspace), fmt)
    cli("manifest", "build", str(bucket / "images"), "--out", str(workspace / "manifests"), "--probe")
    manifest = workspace / "manifests" / "input.manifest"
    cli("manifest", "check", str(manifest))
    spec = portal_spec(tmp_path / "job.toml", str(manifest), str(workspace / "labeling"))
    cli("launch", str(spec), "--dry-run")
    cli("launch", str(spec), "--yes")
    cli("status")
    cli("poll", "secure-job")
    invite = cli("portal", "invite", "Ann", "--job", "secure-job", "--url", "http://portal.test")
    token = re.search(r"/w/([A-Za-z0-9_-]{32,})", invite.stdout).group(1)  # shown once, on purpose
    db = open_database(f"sqlite:///{workspace / 'portal.db'}")
    answer_all(db, "secure-job", ["car", "pedestrian", "sign"], count=2)
    db.dispose()
    cli("poll", "secure-job")
    cli("status", "secure-job")
    job_folder = workspace / "labeling" / "secure-job"
    cli(
        "consolidate",
        str(job_folder),
        "--out",
        str(tmp_path / "again.manifest"),
        "--labels",
        str(LABELS_FILE),
        "--input-manifest",
        str(manifest),
    )
    cli("export", str(tmp_path / "again.manifest"), "--format", "yolo", "--out", str(tmp_path / "yolo"))
    cli("stop", "secure-job")

    files = assert_tree_clean(tmp_path)
    assert any(path.name == "output.manifest" for path in files)
    for path in files:  # the invite token is printed once and stored nowhere
        with contextlib.suppress(FileNotFoundError):  # SQLite may fold its -wal file away meanwhile
            assert token.encode() not in path.read_bytes(), path
    assert all(token not in out for out in cli.outputs if "portal.test/w/" not in out)
    assert_records_clean(JobStore(LocalStore(workspace)))
    assert "looks like a secret" not in caplog.text


def test_an_error_carrying_a_secret_is_printed_masked(tmp_path, fake_keys, monkeypatch):
    from orchestrator.cli import job as job_cmd
    from orchestrator.errors import StorageError

    def denied(*_args, **_kwargs):
        raise StorageError(
            f"https://b.s3.amazonaws.com/m?X-Amz-Credential={ACCESS_KEY_ID}%2Fx&X-Amz-Signature=ab12: "
            f"denied for aws_secret_access_key={SECRET_ACCESS_KEY}",
            hint=f"Authorization: Bearer {SESSION_TOKEN}",
        )

    monkeypatch.setattr(job_cmd, "read_items", denied)
    spec = portal_spec(tmp_path / "job.toml", str(tmp_path / "in.manifest"), str(tmp_path / "out"))
    for fmt in ("json", "table"):
        result = Cli(str(tmp_path / "ws"), fmt)("launch", str(spec), exit_code=1)
        assert "X-Amz-Credential=***" in result.stderr and "Bearer ***" in result.stderr


def test_s3_commands_print_and_store_no_secret(tmp_path, fake_keys, s3, monkeypatch):
    client = s3.client("s3")
    client.create_bucket(Bucket="photos")
    for path in sorted((SAMPLE_BUCKET / "images").glob("img_00*.jpg"))[:3]:
        client.put_object(Bucket="photos", Key=f"images/{path.name}", Body=path.read_bytes())
    monkeypatch.setenv("LABELJOB_PORTAL_DB", f"sqlite:///{tmp_path / 'portal.db'}")
    for fmt in ("json", "table"):
        cli = Cli(f"s3://photos/ws-{fmt}", fmt)
        cli("manifest", "build", "s3://photos/images", "--out", f"s3://photos/manifests-{fmt}/")
        manifest = f"s3://photos/manifests-{fmt}/input.manifest"
        cli("manifest", "check", manifest, "--verify-objects")
        name = f"s3-job-{fmt}"
        spec = portal_spec(tmp_path / f"{fmt}.toml", manifest, f"s3://photos/labeling-{fmt}/", name)
        cli("launch", str(spec), "--dry-run")
        cli("launch", str(spec), "--yes")
        db = open_database(f"sqlite:///{tmp_path / 'portal.db'}")
        answer_all(db, name, ["car", "pedestrian", "sign"], count=2)
        db.dispose()
        cli("poll", name)
        cli("status")
        output = f"s3://photos/labeling-{fmt}/{name}/manifests/output/output.manifest"
        cli("export", output, "--format", "coco", "--out", f"s3://photos/coco-{fmt}/")
        assert_records_clean(JobStore(open_store(f"s3://photos/ws-{fmt}", s3)))
    assert assert_bucket_clean(client) > 20
    assert_tree_clean(tmp_path)


def write_dry_run_specs(tmp_path: Path) -> dict[str, Path]:
    manifest = tmp_path / "s3-images.manifest"
    manifest.write_text(
        "".join(json.dumps({"source-ref": f"s3://{IMAGE_BUCKET}/ped/img{i}.jpg"}) + "\n" for i in range(3)),
        encoding="utf-8",
    )
    common = f'labels = ["pedestrian"]\ninput_manifest = "{manifest}"\noutput = "s3://out-bucket/labels/"\n'
    specs = {
        "mturk": 'name = "turk-job"\nbackend = "mturk"\n' + common + '[workforce]\ntype = "public"\n',
        "groundtruth": 'name = "gt-job"\nbackend = "groundtruth"\n'
        + common.replace(str(manifest), "s3://in-bucket/in.manifest")
        + '[workforce]\ntype = "private"\nteam = "crew"\n'
        '[groundtruth]\nrole_arn = "arn:aws:iam::123456789012:role/GT"\n',
    }
    paths = {}
    for backend, text in specs.items():
        paths[backend] = tmp_path / f"{backend}.toml"
        paths[backend].write_text(text, encoding="utf-8")
    return paths


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_dry_runs_of_aws_backends_mask_their_presigned_urls(tmp_path, fake_keys, fmt):
    specs = write_dry_run_specs(tmp_path)
    cli = Cli(str(tmp_path / "ws"), fmt)
    turk = cli("launch", str(specs["mturk"]), "--dry-run")
    # The MTurk questions hold presigned image URLs: shown, with their credentials masked.
    assert "X-Amz-Credential=***" in turk.stdout and "X-Amz-Security-Token=***" in turk.stdout
    assert "X-Amz-Expires=" in turk.stdout
    cli("launch", str(specs["groundtruth"]), "--dry-run")
    cli("estimate", str(specs["mturk"]))
    assert not (tmp_path / "ws").exists()


def test_demo_prints_no_aws_secret_and_its_admin_link_once(tmp_path, fake_keys):
    result = Cli(str(tmp_path / "ws"), "json")("demo", "--dir", str(tmp_path / "demo"), "--workers", "3")
    summary = json.loads(result.stdout)
    token = summary["admin_url"].rsplit("/a/", 1)[1]
    assert len(token) >= 32  # the documented exception: the admin link the demo just created
    files = assert_tree_clean(tmp_path / "demo")
    assert all(token.encode() not in path.read_bytes() for path in files)
    assert_records_clean(JobStore(LocalStore(tmp_path / "demo" / "workspace")))


def test_groundtruth_records_and_bucket_hold_no_secret(tmp_path, fake_keys, groundtruth, caplog):
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="gt-data")
    lines = []
    for i, path in enumerate(sorted((SAMPLE_BUCKET / "images").glob("img_00*.jpg"))[:3]):
        client.put_object(Bucket="gt-data", Key=f"images/{i}.jpg", Body=path.read_bytes())
        lines.append(json.dumps({"source-ref": f"s3://gt-data/images/{i}.jpg"}))
    client.put_object(Bucket="gt-data", Key="in.manifest", Body="\n".join(lines).encode())
    spec = parse_spec(
        {
            "name": "gt-secure",
            "backend": "groundtruth",
            "labels": ["pedestrian"],
            "input_manifest": "s3://gt-data/in.manifest",
            "output": "s3://gt-data/labeling/",
            "workforce": {"type": "private", "team": "crew"},
            "groundtruth": {"role_arn": "arn:aws:iam::123456789012:role/GT"},
        }
    )
    session = boto3.Session(region_name="us-east-1")
    jobs = JobStore(open_store("s3://gt-data/ws", session))
    backend = GroundTruthBackend(session, jobs.workspace)
    launch_job(spec, backend, jobs, read_items(spec, session))
    groundtruth.advance(3600)
    record = poll_job(
        spec.name, backend, jobs, finish=lambda s, r: finish_job(s, r, jobs, boto3_session=session)
    )
    assert record.status == "completed" and record.outputs
    assert_records_clean(jobs)
    assert assert_bucket_clean(client) > 5
    assert "looks like a secret" not in caplog.text


def test_mturk_records_and_outputs_hold_no_secret(tmp_path, fake_keys, fake_mturk, caplog):
    job = MTurkJob(fake_mturk, tmp_path, count=3, task={"workers_per_object": 2})
    job.launch()
    fake_mturk.work()
    record = job.poll()
    assert record.status == "completed"
    # The questions MTurk received do carry presigned URLs: that is what workers need ...
    assert any("X-Amz-Signature=" in hit.question for hit in fake_mturk.live_hits())
    # ... but nothing labeljob kept does.
    assert_records_clean(job.jobs)
    assert_tree_clean(tmp_path)
    assert "looks like a secret" not in caplog.text


# ------------------------------------------------------------------------- presigned URLs


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _element_src(question: str) -> str:
    html_content = ET.fromstring(question).find(
        "{http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/HTMLQuestion.xsd}"
        "HTMLContent"
    )
    return _Elements(html_content.text).first("crowd-bounding-box")["src"]


def test_mturk_image_urls_last_no_longer_than_needed_and_name_one_object(tmp_path, fake_mturk):
    job = MTurkJob(fake_mturk, tmp_path, count=3, task={"lifetime": "1h"}, mturk={"auto_approve_after": "1d"})
    job.launch()
    needed = image_url_lifetime(job.spec)
    assert needed.seconds == 3600 + 300 + 86400 <= MAX_PRESIGN_SECONDS
    by_object = {}
    for hit in fake_mturk.live_hits():
        url = _element_src(hit.question)
        query = _query(url)
        assert int(query["X-Amz-Expires"]) == needed.seconds
        assert query["X-Amz-SignedHeaders"] == "host"  # the signature covers this one GET only
        parts = urlsplit(url)
        assert parts.scheme == "https" and parts.hostname.startswith(f"{IMAGE_BUCKET}.s3.")
        by_object[hit.annotation.rsplit("object=", 1)[1]] = parts.path
    expected = {item.object_id: "/" + item.source_ref.split("/", 3)[3] for item in job.items}
    assert by_object == expected  # each HIT's URL opens its own image and nothing else

    long = parse_spec({**job.spec.model_dump(), "task": {"lifetime": "20d"}})
    assert image_url_lifetime(long).seconds == MAX_PRESIGN_SECONDS  # capped at SigV4's 7 days


def test_portal_s3_redirects_are_short_lived_and_name_one_object(tmp_path, s3):
    client = s3.client("s3")
    client.create_bucket(Bucket="photos")
    for key in ("set/a.jpg", "set/b.jpg"):
        client.put_object(Bucket="photos", Key=key, Body=b"jpeg")
    spec = parse_spec(
        {"name": "on-s3", "labels": ["car"], "input_manifest": "s3://photos/m", "output": "s3://photos/out/"}
    )
    db_url = f"sqlite:///{tmp_path / 'portal.db'}"
    db = open_database(db_url)
    items = [ManifestItem(str(i), f"s3://photos/set/{n}.jpg", {}) for i, n in enumerate("ab")]
    with db.write() as session:
        catalog.load_job(session, spec, items, time.time())
        worker = Worker(public_id="w", name="w", source="invite", created_at=0)
        session.add(worker)
        session.flush()
        token = portal_tokens.issue_token(session, "worker", worker.id)
    portal = TestClient(create_app(db_url, None, boto3_session=s3), follow_redirects=False)
    headers = {"Authorization": f"Bearer {token}"}
    task = portal.post("/api/tasks/next", headers=headers).json()
    own_url = task["image_url"]
    exp = int(_query(own_url)["exp"])
    assert 0 < exp - time.time() <= IMAGE_URL_SECONDS
    location = portal.get(own_url).headers["location"]
    assert int(_query(location)["X-Amz-Expires"]) <= PRESIGN_SECONDS == 300
    assert urlsplit(location).path.endswith(f"/set/{task['image_key']}")
    # The portal's own signed link is bound to its job, key and expiry.
    other = "b.jpg" if task["image_key"] == "a.jpg" else "a.jpg"
    assert portal.get(own_url.replace(task["image_key"], other)).status_code == 403
    assert portal.get(own_url.replace(f"exp={exp}", f"exp={exp + 1}")).status_code == 403


# ------------------------------------------------------------------------------- escaping


class _Elements(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))

    def first(self, tag: str) -> dict:
        return next(attrs for name, attrs in self.tags if name == tag)

    def names(self) -> set[str]:
        return {name for name, _ in self.tags}


TASK_PAGE_TAGS = {"meta", "title", "script", "crowd-form", "crowd-bounding-box", "input"}
TASK_PAGE_TAGS |= {"full-instructions", "short-instructions", "p", "ul", "li", "strong"}


def evil_spec(tmp_path: Path, **extra) -> dict:
    instructions = tmp_path / "evil.md"
    instructions.write_text(f"Box it.\n\n{EVIL} {CDATA_BREAKER} {{{{ 7*7 }}}}\n", encoding="utf-8")
    return {
        "name": "evil-job",
        "labels": ["car", EVIL, CDATA_BREAKER, "{{ task.input }}"],
        "input_manifest": str(tmp_path / "in.manifest"),
        "output": str(tmp_path / "out"),
        "task": {"title": f"Title {EVIL}", "instructions": str(instructions), "workers_per_object": 1},
        **extra,
    }


def assert_inert(page: str) -> None:
    assert EVIL not in page and "<script>alert" not in page
    assert TASK_PAGE_TAGS >= _Elements(page).names()
    labels = json.loads(_Elements(page).first("crowd-bounding-box")["labels"])
    assert labels == ["car", EVIL, CDATA_BREAKER, "{{ task.input }}"]  # text, exactly as typed


def test_groundtruth_page_stays_inert_after_ground_truths_own_liquid_pass(tmp_path):
    spec = parse_spec(
        evil_spec(tmp_path, backend="groundtruth", groundtruth={"role_arn": "arn:aws:iam::1:role/R"})
    )
    uploaded = render_template(spec).decode()
    env = liquid.Environment(undefined=liquid.StrictUndefined)
    env.filters["grant_read_access"] = lambda uri: "https://signed.example/" + uri.rsplit("/", 1)[1]
    page = env.from_string(uploaded).render(
        task={"input": {"taskObject": "s3://b/a.jpg", "labels": spec.labels, "manifestLine": {}}}
    )
    assert "49" not in page  # {{ 7*7 }} in the instructions was not evaluated
    assert_inert(page)


def test_mturk_question_survives_a_cdata_terminator_in_labels(tmp_path, fake_keys):
    spec = parse_spec(evil_spec(tmp_path, backend="mturk", mturk={}))
    question = Questions(spec, boto3.Session(region_name="us-east-1")).question("0", "s3://b/ped/a.jpg")
    html_content = ET.fromstring(question)[0].text  # well-formed XML despite "]]>" in the labels
    assert_inert(html_content)


def test_an_html_source_ref_reaches_the_mturk_question_only_url_encoded(tmp_path, fake_keys):
    spec = parse_spec(evil_spec(tmp_path, backend="mturk", mturk={}))
    question = Questions(spec, boto3.Session(region_name="us-east-1")).question(
        "0", f's3://b/ped/"{EVIL}.jpg'
    )
    page = ET.fromstring(question)[0].text
    assert_inert(page)
    src = _Elements(page).first("crowd-bounding-box")["src"]
    assert urlsplit(src).path == "/b/ped/" + quote(f'"{EVIL}.jpg')


@pytest.mark.parametrize("key", ["ped/shot #1.jpg", "ped/why?.jpg", "ped/100%25.jpg"])
def test_mturk_image_urls_name_the_raw_key_of_their_source_ref(fake_keys, key):
    """A `#`, `?` or `%` in a key is part of it: the presigned GET is for exactly that object."""
    url = urlsplit(ImageLinks(boto3.Session(region_name="us-east-1"), 300).url(f"s3://labeljob-img/{key}"))
    assert (url.hostname.split(".")[0], url.path) == ("labeljob-img", "/" + quote(key, safe="/~"))


def test_portal_preview_and_review_pages_escape_labels(tmp_path):
    images = copy_images(tmp_path / "bucket", count=2)
    manifest = tmp_path / "in.manifest"
    manifest.write_text(
        "".join(json.dumps({"source-ref": p.as_uri()}) + "\n" for p in sorted(images.iterdir())),
        encoding="utf-8",
    )
    spec = parse_spec({**evil_spec(tmp_path), "input_manifest": str(manifest)})
    workspace = LocalStore(tmp_path / "ws")
    jobs, backend = JobStore(workspace), PortalBackend(workspace)
    launch_job(spec, backend, jobs, read_items(spec))
    db_url = f"sqlite:///{workspace.root / 'portal.db'}"
    db = open_database(db_url)
    answer_all(db, spec.name, [EVIL, CDATA_BREAKER], count=1)
    poll_job(spec.name, backend, jobs, finish=lambda s, r: finish_job(s, r, jobs))
    with db.write() as session:
        admin = portal_tokens.issue_token(session, "admin")
        job = catalog.job_by_name(session, spec.name)
        secret = marketplace.turn_on(session, job, "mturk", time.time()).secret
    portal = TestClient(create_app(db_url, workspace), follow_redirects=False)
    preview = portal.get(
        "/external", params={"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE", "job": spec.name, "k": secret}
    )
    assert preview.status_code == 200 and EVIL not in preview.text
    headers = {"Authorization": f"Bearer {admin}"}
    review = portal.get(f"/review/{spec.name}/", headers=headers)
    assert review.status_code == 200 and EVIL not in review.text and "<script>alert" not in review.text
    # The page is static; labels reach it only as JSON data, which its script inserts as text.
    items = portal.get(f"/review/{spec.name}/api/items", headers=headers)
    assert items.headers["content-type"] == "application/json"
    assert EVIL in {box["label"] for item in items.json() for box in item["boxes"]}


# ---------------------------------------------------------------------------- store roots


def test_local_listing_skips_symlinks_that_leave_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside.jpg"
    root.mkdir()
    outside.write_bytes(b"not yours")
    (root / "in.jpg").write_bytes(b"yours")
    (root / "link.jpg").symlink_to(outside)
    (root / "alias.jpg").symlink_to(root / "in.jpg")  # stays inside: listed, as get() serves it
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "b.jpg").write_bytes(b"not yours either")
    (root / "elsewhere").symlink_to(tmp_path / "outdir", target_is_directory=True)
    store = LocalStore(root)
    assert [info.key for info in store.list()] == ["alias.jpg", "in.jpg"]
    for prefix in ("elsewhere/", "../"):
        with pytest.raises(StorageError, match="outside the store root"):
            list(store.list(prefix))


def test_portal_refuses_an_image_swapped_for_a_symlink_out_of_its_folder(tmp_path):
    images = copy_images(tmp_path / "bucket", count=2)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for workers")
    spec = parse_spec({"name": "j", "labels": ["car"], "input_manifest": "m", "output": str(tmp_path / "o")})
    paths = sorted(images.iterdir())
    db_url = f"sqlite:///{tmp_path / 'portal.db'}"
    db = open_database(db_url)
    with db.write() as session:
        items = [ManifestItem(str(i), p.as_uri(), {}) for i, p in enumerate(paths)]
        catalog.load_job(session, spec, items, time.time())
        worker = Worker(public_id="w", name="w", source="invite", created_at=0)
        session.add(worker)
        session.flush()
        token = portal_tokens.issue_token(session, "worker", worker.id)
    portal = TestClient(create_app(db_url, None), follow_redirects=False)
    task = portal.post("/api/tasks/next", headers={"Authorization": f"Bearer {token}"}).json()
    target = images / task["image_key"]
    target.unlink()
    target.symlink_to(secret)  # someone with access to the image folder swaps an image after launch
    response = portal.get(task["image_url"])
    assert response.status_code in (400, 404) and b"not for workers" not in response.content


# ------------------------------------------------------------------------------ portal tokens


def test_no_raw_token_is_stored_anywhere_in_the_database(tmp_path):
    """Invite, admin, marketplace-session and simulated-worker tokens: the database holds only hashes."""
    workspace = tmp_path / "ws"
    runner = CliRunner()
    invite = runner.invoke(
        app, ["--workspace", str(workspace), "--format", "json", "portal", "invite", "Ann"]
    )
    tokens = [json.loads(invite.stdout)["link"].rsplit("/", 1)[1]]
    db_url = f"sqlite:///{workspace / 'portal.db'}"
    db = open_database(db_url)
    with db.write() as session:
        tokens.append(portal_tokens.issue_token(session, "admin"))
    images = copy_images(tmp_path / "bucket", count=1)
    spec = parse_spec({"name": "j", "labels": ["car"], "input_manifest": "m", "output": str(tmp_path / "o")})
    with db.write() as session:
        items = [ManifestItem("0", next(images.iterdir()).as_uri(), {})]
        job, _ = catalog.load_job(session, spec, items, time.time())
        secret = marketplace.turn_on(session, job, "generic", time.time()).secret
    portal = TestClient(create_app(db_url, None), follow_redirects=False)
    page = portal.get("/go/j", params={"k": secret, "worker": "W1"}).text
    tokens.append(re.search(r'name="session" value="([^"]+)"', page).group(1))
    from orchestrator.backends.portal.simulate import simulated_workers

    tokens += simulated_workers(db, 2)
    db.dispose()
    portal.app.state.portal.db.dispose()
    raw = b"".join(p.read_bytes() for p in workspace.glob("portal.db*"))
    with sqlite3.connect(workspace / "portal.db") as con:
        rows = [
            repr(row)
            for table in ("tokens", "workers", "settings")
            for row in con.execute(f"SELECT * FROM {table}")
        ]
    assert len(tokens) == 5
    for token in tokens:
        assert token.encode() not in raw and all(token not in row for row in rows)
        assert portal_tokens.hash_token(token).encode() in raw


def test_tokens_and_csrf_are_compared_in_constant_time(monkeypatch, tmp_path):
    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(portal_tokens.hmac, "compare_digest", spy)
    db = open_database(f"sqlite:///{tmp_path / 'p.db'}")
    with db.write() as session:
        token = portal_tokens.issue_token(session, "admin")
    with db.read() as session:
        assert portal_tokens.find_token(session, token, ("admin",)) is not None
    assert portal_tokens.csrf_ok(token, portal_tokens.csrf_token(token))
    assert not portal_tokens.csrf_ok(token, "0" * 64)
    assert len(compared) == 3


@pytest.fixture
def portal_app(tmp_path):
    images = copy_images(tmp_path / "bucket", count=2)
    spec = parse_spec({"name": "j", "labels": ["car"], "input_manifest": "m", "output": str(tmp_path / "o")})
    db_url = f"sqlite:///{tmp_path / 'portal.db'}"
    db = open_database(db_url)
    with db.write() as session:
        items = [ManifestItem(str(i), p.as_uri(), {}) for i, p in enumerate(sorted(images.iterdir()))]
        catalog.load_job(session, spec, items, time.time())
        worker = Worker(public_id="w", name="w", source="invite", created_at=0)
        session.add(worker)
        session.flush()
        worker_token = portal_tokens.issue_token(session, "worker", worker.id)
        admin_token = portal_tokens.issue_token(session, "admin")
    return create_app(db_url, None), db, worker_token, admin_token


def _routes(fastapi_app, method: str) -> list[str]:
    return sorted(r.path for r in fastapi_app.routes if method in getattr(r, "methods", ()))


def test_admin_and_worker_tokens_open_only_their_own_routes(portal_app):
    fastapi_app, _, worker, admin = portal_app
    client = TestClient(fastapi_app, follow_redirects=False)
    admin_routes = [p.replace("{name}", "j").replace("{output}", "x") for p in _routes(fastapi_app, "GET")]
    admin_routes = [p for p in admin_routes if "admin" in p]
    assert len(admin_routes) >= 5
    for path in admin_routes:
        assert client.get(path, headers={"Authorization": f"Bearer {worker}"}).status_code == 403, path
        assert client.get(path, cookies={"labeljob_admin": worker}).status_code == 403, path
    assert client.post("/api/tasks/next", headers={"Authorization": f"Bearer {admin}"}).status_code == 403
    assert client.get("/task", cookies={"labeljob_worker": admin}).status_code == 403
    assert client.get(f"/w/{admin}").status_code == 401 and client.get(f"/a/{worker}").status_code == 403


def test_every_state_changing_form_needs_its_csrf_token(portal_app):
    """Every POST route outside the bearer-token JSON API is a form, and each refuses a missing or
    foreign CSRF token before changing anything; the invite form, which has no session yet, refuses
    a post from another site."""
    fastapi_app, db, worker, admin = portal_app
    forms = [path for path in _routes(fastapi_app, "POST") if not path.startswith("/api/")]
    assert forms == [
        "/admin/invite",
        "/admin/jobs/{name}/block",
        "/admin/jobs/{name}/stop",
        "/admin/revoke",
        "/external/{lease_id}",
        "/go/next",
        "/go/{lease_id}",
        "/go/{lease_id}/skip",
        "/task/{lease_id}",
        "/task/{lease_id}/skip",
        "/w/{code}",
    ]
    client = TestClient(fastapi_app, follow_redirects=False)
    with db.write() as session:
        code = portal_tokens.issue_invite(session, session.scalar(select(Worker.id)), time.time())
    assert client.post(f"/w/{code}", headers={"Origin": "https://elsewhere.example"}).status_code == 403
    assert client.post(f"/w/{code}", headers={"Origin": "http://testserver"}).status_code == 303
    page = client.get("/task").text
    lease = re.search(r'action="/task/(\d+)"', page).group(1)
    answer = json.dumps([{"annotatedResult": {"boundingBoxes": []}}])
    for csrf in (None, "0" * 64, portal_tokens.csrf_token(admin)):
        form = {"taskAnswers": answer, "reason": "skip", **({"csrf": csrf} if csrf else {})}
        assert client.post(f"/task/{lease}", data=form).status_code == 403
        assert client.post(f"/task/{lease}/skip", data=form).status_code == 403
    market = TestClient(fastapi_app, follow_redirects=False)
    for path, kind, params in (
        ("/go/j", "generic", {"worker": "W9"}),
        ("/external", "mturk", {"job": "j", "workerId": "W8", "assignmentId": "A1", "hitId": "H",
                                "turkSubmitTo": "https://www.mturk.com"}),
    ):  # fmt: skip
        with db.write() as session:
            secret = marketplace.turn_on(session, catalog.job_by_name(session, "j"), kind, time.time()).secret
        market.cookies.clear()
        page = market.get(path, params={**params, "k": secret}).text
        action = re.search(r'action="(/(?:go|external)/\d+)"', page).group(1)
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
        for csrf in ("", portal_tokens.csrf_token(worker)):
            response = market.post(action, data={**fields, "csrf": csrf, "taskAnswers": answer})
            assert response.status_code == 403, (path, csrf)
        if path == "/go/j":
            next_form = {"session": fields["session"], "csrf": portal_tokens.csrf_token(worker)}
            assert market.post("/go/next", data=next_form).status_code == 403
            assert market.post(f"{action}/skip", data={**next_form, "reason": "skip"}).status_code == 403
    admin_client = TestClient(fastapi_app, follow_redirects=False)
    admin_client.get(f"/a/{admin}")
    for csrf in ("", portal_tokens.csrf_token(worker)):
        assert admin_client.post("/admin/jobs/j/stop", data={"csrf": csrf}).status_code == 403
        for path in ("/admin/jobs/j/block", "/admin/revoke", "/admin/invite"):
            assert admin_client.post(path, data={"csrf": csrf, "worker": "w", "name": "x"}).status_code == 403
    with db.read() as session:
        assert catalog.job_by_name(session, "j").status == "open"
        assert catalog.progress(session, catalog.job_by_name(session, "j"), time.time())["answers"] == 0
        assert session.scalars(select(Report.id)).all() == []


# ------------------------------------------------------------------------------ Ground Truth


def groundtruth_spec(output: str = "s3://job-bucket/labeling/"):
    return parse_spec(
        {
            "name": "gt-foreign",
            "backend": "groundtruth",
            "labels": ["car"],
            "input_manifest": "s3://job-bucket/in.manifest",
            "output": output,
            "workforce": {"type": "private", "team": "crew"},
            "groundtruth": {"role_arn": "arn:aws:iam::123456789012:role/GT"},
        }
    )


def test_groundtruth_refuses_source_refs_outside_the_jobs_bucket(tmp_path, groundtruth):
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="job-bucket")
    spec = groundtruth_spec()
    session = boto3.Session(region_name="us-east-1")
    jobs = JobStore(open_store("s3://job-bucket/ws", session))
    backend = GroundTruthBackend(session, jobs.workspace)
    inside = ManifestItem("0", "s3://job-bucket/images/a.jpg", {})
    for ref in ("s3://someone-elses-bucket/private/a.jpg", "s3://job-bucket-lookalike/a.jpg", "/etc/passwd"):
        with pytest.raises(InputError, match="1 source-ref.s. outside the job's bucket.s. job-bucket"):
            launch_job(spec, backend, jobs, [inside, ManifestItem("1", ref, {})])
    assert groundtruth.calls("CreateLabelingJob") == [] and jobs.names() == []  # no record left behind
    launch_job(spec, backend, jobs, [inside])
    assert len(groundtruth.calls("CreateLabelingJob")) == 1


def test_doctor_fails_sampled_images_outside_the_jobs_buckets():
    spec = groundtruth_spec(output="s3://out-bucket/labeling/")
    inside = [{"source-ref": "s3://job-bucket/a.jpg"}, {"source-ref": "s3://out-bucket/b.jpg"}]
    assert check_sources(spec, inside).status == "ok"
    check = check_sources(spec, [*inside, {"source-ref": "s3://other-bucket/c.jpg"}])
    assert check.status == "fail" and check.detail.endswith(": s3://other-bucket/c.jpg")

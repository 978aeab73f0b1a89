"""The offline demo behind `make demo`: one whole labeling job on the sample bucket, no AWS, no network.

It runs the real path end to end: a manifest built from a local folder, a job launched on the
self-hosted portal, a simulated crowd answering through the portal's HTTP API on loopback, the
job polled to completion, consolidated by IoU voting and written out.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from orchestrator.backends.portal.app import create_app
from orchestrator.backends.portal.backend import PortalBackend
from orchestrator.backends.portal.db import default_db_url, open_database
from orchestrator.backends.portal.server import ServerThread
from orchestrator.backends.portal.simulate import load_truth, simulate, simulated_workers
from orchestrator.backends.portal.tokens import issue_token
from orchestrator.errors import BackendError, NotFound, UsageError
from orchestrator.jobs import JobStore, finish_job, launch_job, poll_job, read_items
from orchestrator.manifest import BuildOptions, build_manifest, plan_destination
from orchestrator.outputs import parse_label_categories
from orchestrator.spec import load_spec
from orchestrator.storage import LocalStore
from orchestrator.training import ALGORITHM, DEFAULT_INSTANCE_TYPE

JOB_NAME = "demo-street-objects"
# Placeholders for the printed training command: the demo has no bucket and no account.
TRAINING_REGION = "us-east-1"
TRAINING_OUTPUT = "s3://YOUR-BUCKET/labeljob-training/"
TRAINING_ROLE = "arn:aws:iam::123456789012:role/YourSageMakerRole"
# Marks a folder the demo made, so a re-run may clear it and nothing else is ever deleted.
MARKER = ".labeljob-demo"


def sample_bucket() -> Path:
    """The folder holding the sample bucket: in the installed package (the wheel force-includes
    `manifests/examples` as `orchestrator/examples`), else in the source tree."""
    packaged = Path(str(resources.files("orchestrator") / "examples"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "manifests" / "examples"


@dataclass
class DemoResult:
    directory: Path
    manifest_report: dict
    job: dict
    outputs: dict[str, str]
    simulated_answers: int
    admin_url_path: str
    workspace: Path


def train_command(workspace: Path, program: str = "labeljob") -> str:
    """The `labeljob train --dry-run` of the demo job, with a bucket and a role to fill in; `program` is
    how to call labeljob."""
    return (
        f"{program} --workspace {shlex.quote(str(workspace))} --region {TRAINING_REGION} train {JOB_NAME} "
        f"--algorithm {ALGORITHM} "
        f"--instance-type {DEFAULT_INSTANCE_TYPE} --output {TRAINING_OUTPUT} --role {TRAINING_ROLE} --dry-run"
    )


def _fresh_directory(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise UsageError(f"{directory} exists and was not made by the demo", hint="pass another --dir")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by `labeljob demo`; removed by the next run\n")


def _job_spec(directory: Path, labels: list[str], workers: int) -> Path:
    label_list = ", ".join(f'"{label}"' for label in labels)
    spec = directory / "job.toml"
    spec.write_text(
        f'''name = "{JOB_NAME}"
backend = "portal"
labels = [{label_list}]
label_attribute = "bbox"
input_manifest = "manifests/input.manifest"
output = "output/"

[task]
title = "Draw a box around every car, pedestrian and sign"
description = "One tight box per object; nothing to box is a valid answer."
workers_per_object = {workers}
time_limit = "2m"

[portal]
public_url = "http://127.0.0.1:8080"
''',
        encoding="utf-8",
    )
    return spec


def run_demo(
    directory: Path,
    *,
    examples: Path | None = None,
    workers: int = 5,
    spammers: float = 0.2,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _: None,
) -> DemoResult:
    """Run the whole job in `directory` and return where everything is."""
    examples = examples or sample_bucket()
    if not (examples / "bucket" / "truth.jsonl").is_file():
        raise NotFound(
            f"{examples}: no sample bucket here",
            hint="reinstall labeljob (its wheel carries the sample bucket), or run `make demo` in a checkout",
        )
    directory = directory.resolve()
    _fresh_directory(directory)
    bucket = directory / "bucket"
    shutil.copytree(examples / "bucket", bucket)
    labels = parse_label_categories((examples / "labels.json").read_bytes(), str(examples / "labels.json"))

    progress("1/4 building the input manifest from the sample bucket")
    options = BuildOptions(probe=True, min_side=128)
    report = build_manifest(
        LocalStore(bucket), plan_destination(str(directory / "manifests/input.manifest")), options
    )

    progress("2/4 launching the job on the self-hosted portal")
    spec = load_spec(_job_spec(directory, labels, workers))
    workspace_dir = directory / "workspace"
    workspace = LocalStore(workspace_dir)
    jobs = JobStore(workspace)
    backend = PortalBackend(workspace)
    launch_job(spec, backend, jobs, read_items(spec))

    progress(f"3/4 {workers} simulated workers drawing boxes through the portal's HTTP API")
    db_url = default_db_url(workspace)
    database = open_database(db_url)
    tokens = simulated_workers(database, workers)
    with database.write() as session:
        admin_token = issue_token(session, "admin")
    with ServerThread(create_app(db_url, workspace)) as server:
        crowd = simulate(
            server.url,
            tokens,
            load_truth(bucket / "truth.jsonl"),
            labels,
            job=JOB_NAME,
            seed=seed,
            spammer_rate=spammers,
        )
    if crowd.errors:
        raise BackendError(f"a simulated worker failed: {crowd.errors[0]}")

    progress("4/4 polling the job, consolidating by IoU voting, writing the outputs")
    record = poll_job(JOB_NAME, backend, jobs, finish=lambda spec_, rec: finish_job(spec_, rec, jobs))
    if record.status != "completed":
        raise BackendError(f"the demo job is {record.status}, not completed: {record.counters}")

    return DemoResult(
        directory=directory,
        manifest_report=report.as_dict(),
        job={
            "name": record.name,
            "status": record.status,
            "labeled": record.counters.labeled,
            "total": record.counters.total,
        },
        outputs=dict(record.outputs),
        simulated_answers=crowd.answers,
        admin_url_path=f"/a/{admin_token}",
        workspace=workspace_dir,
    )

"""Two `labeljob poll` processes at once on one workspace in S3 (a moto server on loopback).

The job is launched and fully answered first; then two real `labeljob poll` processes start
together (tests/reliability/poller.py holds them at a barrier until both have read the job
record, so both see the job unfinished and race to write it back), and, if the job is not
finished after them, single polls follow until it is.

What must hold, and what "no work done twice" means here:
- both processes exit 0, and the record ends valid and complete (status, counters, outputs);
- no answer is lost or stored twice, and no MTurk assignment is approved or rejected twice;
- the finish step (consolidation and outputs) runs once: the poll whose conditional write lost to
  the one that ended the job leaves the finishing to it;
- the outputs equal those of a single poller, apart from `creation-date` and the time in the
  consolidation-response file's name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from orchestrator.backends.mturk.backend import MTurkBackend
from orchestrator.backends.portal.backend import PortalBackend
from orchestrator.backends.portal.db import Answer, Task, Worker, open_database
from orchestrator.jobs import JobStore, ManifestItem, launch_job, read_items
from orchestrator.spec import parse_spec
from orchestrator.storage import S3Store
from tests.fakes.mturk import IMAGE_BUCKET, FakeMTurk, new_session, pedestrian_images
from tests.reliability.crowd import answer_all
from tests.reliability.scenarios import (
    LABELS,
    REPO,
    approved_answers,
    clear,
    differences,
    duplicate_files,
    environment,
    record_problems,
    sample_images,
    snapshot,
    stored_answers,
)

BUCKET = "reliability-concurrency"
POLLERS = 2
PROCESS_TIMEOUT_SECONDS = 120
MAX_FOLLOW_UP_POLLS = 4


@dataclass
class Outcome:
    problems: list[str]
    exit_codes: list[int] = field(default_factory=list)
    finishes: int = 0
    lost_writes: int = 0
    duplicates: int = 0
    seconds: float = 0.0


class _World:
    """What both worlds share: the bucket on moto, the workspace in it, and running pollers."""

    name: str
    objects: int

    def __init__(self, folder: Path, moto_url: str) -> None:
        self.folder, self.moto_url = clear(folder), moto_url
        urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
        self.s3 = new_session().client("s3", endpoint_url=moto_url)
        self.s3.create_bucket(Bucket=BUCKET)
        self.workspace_uri = f"s3://{BUCKET}/workspace"
        self.workspace = S3Store(BUCKET, "workspace", self.s3)
        (folder / "empty-labeljob.toml").write_text("")

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LABELJOB_"))}
        return {
            **keep,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(self.folder / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.folder / "no-aws-credentials"),
            "AWS_ENDPOINT_URL_S3": self.moto_url,
            "LABELJOB_CONFIG": str(self.folder / "empty-labeljob.toml"),
        }

    def pollers(self, count: int, run: int) -> tuple[list[int], list[str]]:
        """Run `count` instrumented `labeljob poll` processes at once; their exit codes and log lines."""
        barrier, log = self.folder / f"barrier-{run}", self.folder / f"pollers-{run}.log"
        command = [sys.executable, "-m", "tests.reliability.poller", str(barrier), str(count), str(log)]
        command += [
            "--",
            "--workspace",
            self.workspace_uri,
            "--format",
            "json",
            "poll",
            self.name,
        ]
        processes = [
            subprocess.Popen(
                command, cwd=REPO, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for _ in range(count)
        ]
        codes = []
        for process in processes:
            _, err = process.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
            if process.returncode:
                print(err.decode(errors="replace")[-2000:], file=sys.stderr)
            codes.append(process.returncode)
        return codes, log.read_text().splitlines() if log.exists() else []

    def stores(self):
        session = new_session()
        return {
            "output": S3Store(
                BUCKET, f"labeling/{self.name}", session.client("s3", endpoint_url=self.moto_url)
            ),
            "jobs": S3Store(BUCKET, "workspace/jobs", session.client("s3", endpoint_url=self.moto_url)),
        }

    def jobs(self) -> JobStore:
        return JobStore(self.workspace)

    def snapshot(self) -> dict[str, str]:
        return snapshot(self.stores(), self.jobs().get(self.name))


class PortalWorld(_World):
    """A portal job, answered in full; images local, workspace and outputs in S3, SQLite shared."""

    name = "portal-concurrent"

    def __init__(self, folder: Path, moto_url: str, objects: int = 4, workers: int = 2) -> None:
        super().__init__(folder, moto_url)
        self.objects = objects
        manifest = folder / "input.manifest"
        images = sample_images(objects)
        manifest.write_text("".join(json.dumps({"source-ref": p.as_uri()}) + "\n" for p in images))
        self.db_url = f"sqlite:///{folder / 'portal.db'}"
        self.spec = parse_spec(
            {
                "name": self.name,
                "labels": LABELS,
                "input_manifest": str(manifest),
                "output": f"s3://{BUCKET}/labeling/",
                "task": {"workers_per_object": workers},
            }
        )
        backend = PortalBackend(self.workspace, db_url=self.db_url)
        launch_job(self.spec, backend, self.jobs(), read_items(self.spec))
        backend.database().dispose()
        db = open_database(self.db_url)
        answer_all(db, self.name, LABELS, workers)
        db.dispose()

    def env(self) -> dict[str, str]:
        return {**super().env(), "LABELJOB_PORTAL_DB": self.db_url}

    def invariants(self) -> list[str]:
        problems = record_problems(self.jobs(), self.spec, self.objects)
        db = open_database(self.db_url)
        with db.read() as session:
            given = set(
                session.execute(
                    select(Task.object_id, Worker.public_id)
                    .join(Answer, Answer.task_id == Task.id)
                    .join(Worker, Worker.id == Answer.worker_id)
                ).all()
            )
        db.dispose()
        if stored_answers(self.stores()["output"]) != given:
            problems.append("stored worker responses differ from the answers given")
        return problems

    def close(self) -> None:
        pass


class MTurkWorld(_World):
    """An MTurk job on the fake, every assignment submitted; workspace and outputs in S3."""

    name = "mturk-concurrent"

    def __init__(
        self, folder: Path, moto_url: str, now: datetime, objects: int = 3, workers: int = 3
    ) -> None:
        super().__init__(folder, moto_url)
        self.objects = objects
        self.fake = FakeMTurk().start()
        self.fake.now = now  # the pollers' clocks are real: `now` is the start of the harness run
        self._env = environment(AWS_ENDPOINT_URL_MTURK=self.fake.url)
        self._env.__enter__()
        lines = [
            {"source-ref": f"s3://{IMAGE_BUCKET}/ped/{image['image']}"}
            for image in pedestrian_images(objects)
        ]
        manifest = folder / "input.manifest"
        manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
        self.spec = parse_spec(
            {
                "name": self.name,
                "backend": "mturk",
                "labels": ["pedestrian"],
                "input_manifest": str(manifest),
                "output": f"s3://{BUCKET}/labeling/",
                "task": {"workers_per_object": workers},
                "workforce": {"type": "public"},
                "mturk": {"reward_usd": "0.05"},
            }
        )
        items = [ManifestItem(str(i), line["source-ref"], line) for i, line in enumerate(lines)]
        # The images are presigned for the real S3 endpoint (https); only the workspace is on moto.
        backend = MTurkBackend(boto3_session=new_session(), workspace=self.workspace, clock=self.fake.clock)
        launch_job(self.spec, backend, self.jobs(), items)
        self.fake.work()

    def env(self) -> dict[str, str]:
        return {**super().env(), "AWS_ENDPOINT_URL_MTURK": self.fake.url}

    def invariants(self) -> list[str]:
        problems = record_problems(self.jobs(), self.spec, self.objects)
        settled = Counter(
            c.params["AssignmentId"]
            for c in self.fake.calls
            if c.operation in ("ApproveAssignment", "RejectAssignment") and c.outcome == "ok"
        )
        if any(n > 1 for n in settled.values()):
            problems.append("an assignment was approved or rejected twice")
        paid = approved_answers(self.fake)
        stored = stored_answers(self.stores()["output"])
        if paid != stored:
            problems.append(f"stored answers differ from the approved ones: {sorted(paid ^ stored)[:4]}")
        return problems

    def close(self) -> None:
        self.fake.close()
        self._env.__exit__(None, None, None)


def poll_to_end(world: _World, run: int, concurrent: int) -> Outcome:
    """`concurrent` pollers at once, then single polls until the job has its outputs."""
    started = time.perf_counter()
    codes, log = world.pollers(concurrent, run)
    for follow_up in range(MAX_FOLLOW_UP_POLLS):
        record = world.jobs().get(world.name)
        if record is not None and record.terminal and record.outputs:
            break
        more, lines = world.pollers(1, run * 100 + follow_up + 1)
        codes += more
        log += lines
    return Outcome(
        [],
        exit_codes=codes,
        finishes=sum(line.endswith(" finish") for line in log),
        lost_writes=sum(" lost " in line for line in log),
        seconds=time.perf_counter() - started,
    )


def reference(make, folder: Path) -> dict[str, str]:
    """The outputs of one poller alone."""
    world = make(folder)
    try:
        outcome = poll_to_end(world, 0, 1)
        problems = world.invariants()
        assert not problems and not any(outcome.exit_codes), (problems, outcome.exit_codes)
        return world.snapshot()
    finally:
        world.close()


def concurrent_run(make, folder: Path, run: int, base: dict[str, str]) -> Outcome:
    world = make(folder)
    try:
        outcome = poll_to_end(world, run, POLLERS)
        outcome.problems = [f"a poller exited {code}" for code in outcome.exit_codes if code]
        if outcome.finishes != 1:
            outcome.problems.append(f"the finish step ran {outcome.finishes} times")
        outcome.problems += world.invariants() + differences(base, world.snapshot())
        outcome.duplicates = duplicate_files(world.stores())
        return outcome
    except Exception as exc:
        return Outcome([f"{type(exc).__name__}: {exc}"])
    finally:
        world.close()


def harness_start() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)

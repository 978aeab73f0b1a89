"""One small labeling job per backend, runnable step by step, with its outputs and invariants.

A scenario is a fresh world (fake service, bucket or folder, workspace) and a job in it. Its
steps are the commands a person or a scheduler runs: `launch`, then `poll` until the job has
ended and its outputs are written; between them the crowd works (`work`). `restart()` is a new
process: new boto3 session, database engine and backend over the same workspace.

`snapshot()` is the job's outputs, normalized for what legitimately differs between two runs
(`creation-date`, the consolidation-response file's timestamped name, the record's times and
backend bookkeeping); two runs of the same job must give the same snapshot. `invariants()` lists
the promises that do not hold: every object launched exactly once, no assignment approved or
rejected twice, no answer lost, the job record valid and complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

from sqlalchemy import func, select

from orchestrator.backends.groundtruth.backend import GroundTruthBackend
from orchestrator.backends.mturk import backend as mturk_backend
from orchestrator.backends.portal.backend import PortalBackend
from orchestrator.backends.portal.db import Answer, Job, Task, Worker, open_database
from orchestrator.jobs import (
    JobRecord,
    JobStore,
    finish_job,
    job_output_prefix,
    launch_job,
    poll_job,
    read_items,
)
from orchestrator.spec import JobSpec, parse_spec
from orchestrator.storage import LocalStore, ObjectStore, list_or_empty, open_store
from tests.fakes.groundtruth import FakeGroundTruth
from tests.fakes.mturk import FakeMTurk, MTurkJob, new_session
from tests.reliability.crowd import answer_all
from tests.reliability.faults import DbFaults, S3Faults, tap

REPO = Path(__file__).resolve().parents[2]
SAMPLE_IMAGES = REPO / "manifests" / "examples" / "bucket" / "images"
LABELS = ["car", "pedestrian", "sign"]
# The fakes' clocks start here, so answers carry the same times in every run.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# Polls a job gets to finish after the crowd's work is done (MTurk may need a few rounds of review).
MAX_POLLS = 8
_FILE_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}(:|%3A)\d{2}(:|%3A)\d{2}")
_CONSOLIDATION = "consolidated-annotation/consolidation-response/"


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block, restoring the old values after it."""
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def sample_images(count: int) -> list[Path]:
    return sorted(SAMPLE_IMAGES.glob("img_0*.jpg"))[:count]


# ------------------------------------------------------------------------------- snapshots


def _without_dates(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_dates(v) for k, v in value.items() if k != "creation-date"}
    if isinstance(value, list):
        return [_without_dates(v) for v in value]
    return value


def _normalized(key: str, data: bytes) -> bytes:
    """File content without what differs between two identical runs: every `creation-date`."""
    if key.endswith(".manifest"):
        rows = [json.loads(line) for line in data.decode("utf-8").split("\n") if line.strip()]
        return "\n".join(json.dumps(_without_dates(row), sort_keys=True) for row in rows).encode()
    if key.endswith(".json") and _CONSOLIDATION in key:
        return json.dumps(_without_dates(json.loads(data)), sort_keys=True).encode()
    return data


def record_view(record: JobRecord) -> dict:
    """The parts of a record two identical runs share (times and backend bookkeeping differ)."""
    outputs = {k: _FILE_TIMESTAMP.sub("<ts>", v) for k, v in record.outputs.items()}
    return {
        "status": record.status,
        "counters": record.counters.model_dump(),
        "outputs": outputs,
        "failure_reason": record.failure_reason,
        "fingerprint": record.fingerprint,
    }


def snapshot(stores: dict[str, ObjectStore], record: JobRecord | None) -> dict[str, str]:
    """Normalized name -> content digest(s) of every file in `stores`, plus the record's view.

    Consolidation-response files are named by the time of the finish that wrote them, so they are
    compared by content: `<ts>` stands for the time, and the digests of all of them are listed.
    """
    digests: dict[str, set[str]] = {}
    for label, store in stores.items():
        for info in list_or_empty(store):
            key = _FILE_TIMESTAMP.sub("<ts>", info.key) if _CONSOLIDATION in info.key else info.key
            if key.endswith("/job.json"):
                continue  # compared through record_view
            digest = hashlib.sha256(_normalized(info.key, store.get(info.key))).hexdigest()[:16]
            digests.setdefault(f"{label}/{key}", set()).add(digest)
    view = {name: ",".join(sorted(values)) for name, values in digests.items()}
    view["record"] = json.dumps(record_view(record), sort_keys=True) if record else "missing"
    return view


def duplicate_files(stores: dict[str, ObjectStore]) -> int:
    """Files beyond one per normalized name: consolidation responses of a finish that ran again."""
    names = Counter(
        f"{label}/{_FILE_TIMESTAMP.sub('<ts>', info.key)}"
        for label, store in stores.items()
        for info in list_or_empty(store)
    )
    return sum(n - 1 for n in names.values())


def differences(base: dict[str, str], other: dict[str, str]) -> list[str]:
    return [
        f"output differs from the fault-free run: {name}"
        for name in sorted(set(base) | set(other))
        if base.get(name) != other.get(name)
    ]


def record_problems(jobs: JobStore, spec: JobSpec, objects: int) -> list[str]:
    try:
        record = jobs.load(spec.name)[0]
    except Exception as exc:  # any failure to load is the finding
        return [f"job record unreadable: {exc}"]
    problems = []
    if record.status != "completed":
        problems.append(f"job record status {record.status}")
    if record.counters.total != objects or record.counters.labeled != objects:
        problems.append(f"job record counters {record.counters}")
    if "manifest" not in record.outputs:
        problems.append("job record has no outputs")
    return problems


# ---------------------------------------------------------------------------------- portal


class PortalScenario:
    """A portal job on a local workspace: `objects` images, `workers` answers each (SQLite)."""

    backend_name = "portal"

    def __init__(
        self,
        folder: Path,
        *,
        objects: int = 4,
        workers: int = 2,
        fault_rate: float = 0.0,
        seed: int = 0,
        adaptive: bool = False,
    ) -> None:
        self.folder, self.objects, self.workers = folder, objects, workers
        images = sample_images(objects)
        manifest = folder / "input.manifest"
        manifest.write_text("".join(json.dumps({"source-ref": p.as_uri()}) + "\n" for p in images))
        # Adaptive: 2 answers, up to 2 more; the crowd disagrees on odd objects, which get them.
        self.adaptive = adaptive
        self.crowd, self.spread = (workers + 2, 15) if adaptive else (workers, 1)
        self.spec = parse_spec(
            {
                "name": "portal-job",
                "labels": LABELS,
                "input_manifest": str(manifest),
                "output": str(folder / "labeling"),
                "task": {
                    "workers_per_object": workers,
                    **({"adaptive": {"min_workers": 2}} if adaptive else {}),
                },
            }
        )
        self.workspace = LocalStore(folder / "workspace")
        self.jobs = JobStore(self.workspace)
        self.db_url = f"sqlite:///{self.workspace.root / 'portal.db'}"
        self.db_faults = DbFaults(fault_rate, seed)
        self.backend: PortalBackend | None = None
        self.session = None
        self.restart()

    def restart(self) -> None:
        if self.backend is not None and self.backend._db is not None:
            self.backend._db.dispose()
        self.backend = PortalBackend(self.workspace)

    def faults(self) -> contextlib.AbstractContextManager:
        """Transient faults while a command runs: failed database transactions (the crowd's are spared)."""
        return self.db_faults.installed()

    def injected(self) -> int:
        return self.db_faults.injected

    def launch(self) -> None:
        launch_job(self.spec, self.backend, self.jobs, read_items(self.spec))

    def work(self, limit: int | None = None) -> None:
        db = open_database(self.db_url)
        try:
            answer_all(db, self.spec.name, LABELS, self.crowd, limit, self.spread)
        finally:
            db.dispose()

    def poll(self) -> JobRecord:
        return poll_job(
            self.spec.name, self.backend, self.jobs, finish=lambda s, r: finish_job(s, r, self.jobs)
        )

    def stores(self) -> dict[str, ObjectStore]:
        return {
            "output": open_store(job_output_prefix(self.spec)),
            "jobs": LocalStore(self.workspace.root / "jobs"),
        }

    def snapshot(self) -> dict[str, str]:
        return snapshot(self.stores(), self.jobs.get(self.spec.name))

    def invariants(self) -> list[str]:
        problems = record_problems(self.jobs, self.spec, self.objects)
        db = open_database(self.db_url)
        try:
            with db.read() as session:
                jobs = session.scalar(select(func.count(Job.id)).where(Job.name == self.spec.name))
                tasks = session.execute(
                    select(Task.object_id, Task.answered, Task.wanted, Task.asked, Task.settled_at)
                ).all()
                answers = session.execute(
                    select(Task.object_id, Worker.public_id)
                    .join(Answer, Answer.task_id == Task.id)
                    .join(Worker, Worker.id == Answer.worker_id)
                ).all()
        finally:
            db.dispose()
        if jobs != 1:
            problems.append(f"{jobs} portal jobs named {self.spec.name}")
        object_ids = [t.object_id for t in tasks]
        if sorted(object_ids) != sorted(set(object_ids)) or len(object_ids) != self.objects:
            problems.append(f"tasks launched: {sorted(object_ids)}")
        if any(t.answered > t.asked or (t.answered != t.wanted and t.settled_at is None) for t in tasks):
            problems.append("a task has more answers than it asked for, or fewer than it wants unsettled")
        if self.adaptive and not {t.answered for t in tasks} >= {2, self.crowd}:
            problems.append(f"adaptive: answers per task {sorted(t.answered for t in tasks)}")
        given = {(o, w) for o, w in answers}
        if stored_answers(open_store(job_output_prefix(self.spec))) != given:
            problems.append("stored worker responses differ from the answers given (answer lost or added)")
        return problems

    def close(self) -> None:
        if self.backend is not None and self.backend._db is not None:
            self.backend._db.dispose()


def approved_answers(fake: FakeMTurk) -> set[tuple[str, str]]:
    """(object id, worker id) of every assignment the fake MTurk holds as Approved."""
    object_of = {hit.hit_id: hit.annotation.rsplit("object=", 1)[1] for hit in fake.hits.values()}
    return {(object_of[a.hit_id], a.worker_id) for a in fake.assignments.values() if a.status == "Approved"}


def stored_answers(store: ObjectStore) -> set[tuple[str, str]]:
    """(object id, worker id) of every answer in the worker-response layout."""
    found = set()
    for info in list_or_empty(store, "annotations/worker-response/"):
        object_id = info.key.split("/")[-2]
        for answer in json.loads(store.get(info.key))["answers"]:
            found.add((object_id, answer["workerId"]))
    return found


# ---------------------------------------------------------------------------- Ground Truth


class GroundTruthScenario:
    """A Ground Truth job on the fake service; bucket, manifest, workspace and outputs on moto S3."""

    backend_name = "groundtruth"
    BUCKET = "reliability-gt"

    def __init__(
        self, folder: Path, moto_url: str, *, objects: int = 4, fault_rate: float = 0.0, seed: int = 0
    ) -> None:
        self.folder, self.objects = folder, objects
        urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
        self.fake = FakeGroundTruth(s3_endpoint=moto_url).start()  # the crowd is the same in every run
        self.fake.now = EPOCH.timestamp()
        self.fake._random = random.Random(seed)  # the faults differ by seed
        self._env = environment(AWS_ENDPOINT_URL=moto_url, AWS_ENDPOINT_URL_SAGEMAKER=self.fake.url)
        self._env.__enter__()
        self.s3_faults = S3Faults(fault_rate, seed)
        self.sagemaker_faults = 0
        if fault_rate:
            for status, code in (
                (400, "ThrottlingException"),
                (503, "ServiceUnavailable"),
                (500, "InternalFailure"),
            ):
                self.fake.fail_rate("*", fault_rate / 3, code=code, status=status)
            self._count_faults()
        s3 = new_session().client("s3")
        s3.create_bucket(Bucket=self.BUCKET)
        lines = []
        for path in sample_images(objects):
            s3.put_object(Bucket=self.BUCKET, Key=f"images/{path.name}", Body=path.read_bytes())
            lines.append(json.dumps({"source-ref": f"s3://{self.BUCKET}/images/{path.name}"}))
        s3.put_object(Bucket=self.BUCKET, Key="manifests/input.manifest", Body="\n".join(lines).encode())
        self.spec = parse_spec(
            {
                "name": "gt-job",
                "backend": "groundtruth",
                "labels": ["pedestrian"],
                "input_manifest": f"s3://{self.BUCKET}/manifests/input.manifest",
                "output": f"s3://{self.BUCKET}/labeling/",
                "task": {"workers_per_object": 3},
                "workforce": {"type": "private", "team": "crew"},
                "groundtruth": {"role_arn": "arn:aws:iam::123456789012:role/GroundTruthExecution"},
            }
        )
        self.workspace_uri = f"s3://{self.BUCKET}/workspace"
        self.restart()

    def _count_faults(self) -> None:
        real = self.fake._maybe_fault

        def counting(operation: str) -> None:
            try:
                real(operation)
            except Exception:
                self.sagemaker_faults += 1
                raise

        self.fake._maybe_fault = counting

    def faults(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # always on: the fake's plan and the session's S3 faults

    def injected(self) -> int:
        return self.sagemaker_faults + self.s3_faults.injected

    def restart(self) -> None:
        self.session = new_session()
        tap(self.session)
        if self.s3_faults.rate:
            self.s3_faults.install(self.session)
        self.jobs = JobStore(open_store(self.workspace_uri, self.session))
        self.backend = GroundTruthBackend(self.session, self.jobs.workspace)

    def launch(self) -> None:
        launch_job(self.spec, self.backend, self.jobs, read_items(self.spec, self.session))

    def work(self, limit: int | None = None) -> None:
        done = self.objects if limit is None else limit
        self.fake.advance(self.fake.init_seconds + self.fake.seconds_per_object * done)

    def poll(self) -> JobRecord:
        def finish(spec: JobSpec, record: JobRecord) -> dict[str, str]:
            return finish_job(spec, record, self.jobs, boto3_session=self.session)

        return poll_job(self.spec.name, self.backend, self.jobs, boto3_session=self.session, finish=finish)

    def stores(self) -> dict[str, ObjectStore]:
        session = new_session()  # the checks' own calls: never faulted, never counted
        return {
            "output": open_store(job_output_prefix(self.spec), session),
            "jobs": open_store(f"{self.workspace_uri}/jobs", session),
        }

    def snapshot(self) -> dict[str, str]:
        return snapshot(
            self.stores(), JobStore(open_store(self.workspace_uri, new_session())).get(self.spec.name)
        )

    def invariants(self) -> list[str]:
        problems = record_problems(
            JobStore(open_store(self.workspace_uri, new_session())), self.spec, self.objects
        )
        if list(self.fake.jobs) != [self.spec.name]:
            problems.append(f"Ground Truth jobs: {list(self.fake.jobs)}")
        output = self.stores()["output"]
        lines = [line for line in output.get("manifests/output/output.manifest").split(b"\n") if line.strip()]
        if len(lines) != self.objects or not all(b'"bbox"' in line for line in lines):
            problems.append("the output manifest lacks labeled objects")
        return problems

    def close(self) -> None:
        self.fake.stop()
        self._env.__exit__(None, None, None)


# ---------------------------------------------------------------------------------- MTurk


class MTurkScenario:
    """An MTurk job on the fake (pedestrian crowd answers); local workspace and outputs."""

    backend_name = "mturk"

    def __init__(
        self,
        folder: Path,
        *,
        objects: int = 3,
        workers: int = 3,
        policy: str = "approve_all",
        fault_rate: float = 0.0,
        seed: int = 0,
        adaptive: bool = False,
    ) -> None:
        self.folder, self.objects = folder, objects
        self.fake = FakeMTurk(spam_rate=0.25 if policy == "agreement" else 0.0).start()
        self.fake.now = EPOCH
        if fault_rate:
            # Odd seeds fail calls after they took effect: only the answer is lost.
            self.fake.faults.service_faults(fault_rate, lost_response=seed % 2 == 1, seed=seed)
            for operation in ("CreateHITWithHITType", "ListAssignmentsForHIT", "ApproveAssignment"):
                self.fake.faults.throttle(operation, times=3)
        self._env = environment(AWS_ENDPOINT_URL_MTURK=self.fake.url)
        self._env.__enter__()
        # HIT ids reach the record every 2 HITs instead of 25: crash points between the saves too.
        self._save_every = mock.patch.object(mturk_backend, "SAVE_EVERY", 2)
        self._save_every.start()
        folder.mkdir(parents=True, exist_ok=True)
        self.job = MTurkJob(
            self.fake,
            folder,
            count=objects,
            task={"workers_per_object": workers, **({"adaptive": {"min_workers": 2}} if adaptive else {})},
            mturk={"review_policy": policy},
        )
        self.spec = self.job.spec
        tap(self.job.session)

    @property
    def session(self):
        return self.job.session

    def faults(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # always on: the fake's plan

    def injected(self) -> int:
        return sum(
            1 for c in self.fake.calls if c.outcome in ("AWS.ServiceUnavailable", "ThrottlingException")
        )

    def restart(self) -> None:
        self.job.restart()
        tap(self.job.session)

    def launch(self) -> None:
        self.job.launch()

    def work(self, limit: int | None = None) -> None:
        self.fake.work(limit)

    def poll(self) -> JobRecord:
        return self.job.poll()

    def stores(self) -> dict[str, ObjectStore]:
        return {
            "output": LocalStore(self.job.output_folder()),
            "jobs": LocalStore(self.job.workspace.root / "jobs"),
        }

    def snapshot(self) -> dict[str, str]:
        return snapshot(self.stores(), self.job.jobs.get(self.spec.name))

    def invariants(self) -> list[str]:
        problems = record_problems(self.job.jobs, self.spec, self.objects)
        hits = Counter(hit.annotation.rsplit("object=", 1)[1] for hit in self.fake.hits.values())
        if sorted(hits) != [item.object_id for item in self.job.items] or max(hits.values()) != 1:
            problems.append(f"HITs per object: {dict(hits)}")
        approved = Counter(
            c.params["AssignmentId"]
            for c in self.fake.calls
            if c.operation == "ApproveAssignment" and c.outcome == "ok"
        )
        rejected = Counter(
            c.params["AssignmentId"]
            for c in self.fake.calls
            if c.operation == "RejectAssignment" and c.outcome == "ok"
        )
        if any(n > 1 for n in (approved + rejected).values()):
            problems.append("an assignment was approved or rejected twice")
        paid = approved_answers(self.fake)
        if not paid <= stored_answers(self.stores()["output"]):
            problems.append("an approved answer is missing from the stored worker responses")
        return problems

    def close(self) -> None:
        self.fake.close()
        self._save_every.stop()
        self._env.__exit__(None, None, None)


def clear(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder

"""The job lifecycle every backend shares: launch, poll, wait, stop, and the status table.

Answers are stored as soon as a poll sees them, in Ground Truth's worker-response layout under
`<spec.output>/<name>/`, with keys derived from their content, so a repeated poll rewrites the
same files instead of adding new ones.
"""

from __future__ import annotations

import difflib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from orchestrator.errors import (
    InputError,
    JobFailed,
    PreconditionFailed,
    SpecError,
    WaitTimedOut,
)
from orchestrator.jobs.backend import GOLD_REMOVED, OVERLAP, PollResult
from orchestrator.jobs.record import Counters, JobRecord, ManifestItem, utcnow
from orchestrator.jobs.store import JobStore
from orchestrator.spec import JobSpec
from orchestrator.storage import open_object, open_store

if TYPE_CHECKING:
    from orchestrator.jobs.backend import Backend

logger = logging.getLogger(__name__)

STUCK_AFTER_SECONDS = 2 * 3600


# --------------------------------------------------------------------------------- the input


def read_items(spec: JobSpec, boto3_session=None) -> list[ManifestItem]:
    """The input manifest's lines; InputError names the first bad line."""
    from orchestrator.manifest import read_manifest

    store, key = open_object(spec.input_manifest, boto3_session)
    items = []
    for _line_number, row in read_manifest(store, key):
        items.append(ManifestItem(str(len(items)), row["source-ref"], row))
    if not items:
        raise InputError(
            f"{spec.input_manifest}: the manifest has no lines",
            hint="build one with `labeljob manifest build`",
        )
    return items


def job_output_prefix(spec: JobSpec) -> str:
    """Where the job's Ground Truth-layout outputs go: `<spec.output>/<name>/`."""
    return spec.output.rstrip("/") + "/" + spec.name + "/"


# ---------------------------------------------------------------------------------- lifecycle


@dataclass
class LaunchOutcome:
    record: JobRecord
    created: bool


def spec_difference(old: dict, new: dict) -> str:
    """A unified diff of two specs, for the name-clash error."""
    a = json.dumps(old, indent=2, sort_keys=True).splitlines()
    b = json.dumps(new, indent=2, sort_keys=True).splitlines()
    return "\n".join(difflib.unified_diff(a, b, "recorded", "given", lineterm="", n=0))


def check_spec(spec: JobSpec, backend: Backend) -> None:
    problems = backend.validate(spec)
    if problems:
        raise SpecError(problems, source=f"job spec {spec.name}")


def new_record(spec: JobSpec, total: int, now: datetime | None = None) -> JobRecord:
    now = now or utcnow()
    return JobRecord(
        name=spec.name,
        backend=spec.backend,
        spec=spec.model_dump(mode="json"),
        fingerprint=spec.fingerprint(),
        status="launching",
        created_at=now,
        updated_at=now,
        last_progress_at=now,
        counters=Counters(total=total),
    )


def launch_job(spec: JobSpec, backend: Backend, jobs: JobStore, items: list[ManifestItem]) -> LaunchOutcome:
    """Launch once: the same spec again reports the existing job, a different spec under the name fails.

    The record is created (with status `launching`) before the backend is called, so a crash
    half-way leaves a record that the next `launch` resumes; backends make their own calls
    idempotent.
    """
    check_spec(spec, backend)
    backend.check_items(spec, items)
    existing = jobs.get(spec.name)
    if existing is not None and existing.fingerprint != spec.fingerprint():
        raise SpecError(
            [
                (
                    "name",
                    f"a job named {existing.name!r} already exists with a different spec:\n"
                    + spec_difference(existing.spec, spec.model_dump(mode="json")),
                )
            ],
            source=f"job spec {spec.name}",
        )
    if existing is not None and existing.status != "launching":
        return LaunchOutcome(existing, created=False)
    record = existing or new_record(spec, len(items))
    if existing is None:
        try:
            jobs.create(record)
        except PreconditionFailed:
            # Another process created it between our read and our write: treat as a re-launch.
            return launch_job(spec, backend, jobs, items)
    state = backend.launch(spec, items, record)

    def started(rec: JobRecord) -> None:
        rec.backend_state.update(state)
        if rec.status == "launching":
            rec.status = "in_progress"
            rec.counters.total = len(items)  # a resumed launch may come with a corrected manifest

    return LaunchOutcome(jobs.update(spec.name, started), created=existing is None)


def poll_job(
    name: str,
    backend: Backend,
    jobs: JobStore,
    *,
    boto3_session=None,
    finish: Callable[[JobSpec, JobRecord], dict[str, str]] | None = None,
) -> JobRecord:
    """Ask the backend for progress, store new answers, and finish the job once it has ended."""
    record, _ = jobs.load(name)
    if record.terminal and record.outputs:
        return record
    spec = record.job_spec
    result = backend.poll(spec, record)
    if result.answers or result.dropped_workers:
        from orchestrator.outputs import drop_worker_responses, write_worker_responses

        output_store = open_store(job_output_prefix(spec), boto3_session)
        by_iteration: dict[int, list] = {}
        for obj in result.answers:
            by_iteration.setdefault(result.iterations.get(obj.dataset_object_id, 1), []).append(obj)
        for iteration, objects in by_iteration.items():
            write_worker_responses(output_store, objects, iteration=iteration)
        drop_worker_responses(output_store, result.dropped_workers)

    ended_elsewhere = False

    def progressed(rec: JobRecord) -> None:
        nonlocal ended_elsewhere
        # Another poll ended the job after we read the record: that poll finishes it (and if it
        # is interrupted, the next poll does), so the finish step is not run twice at once.
        ended_elsewhere = rec.terminal and not was_terminal
        _apply_poll(rec, result)

    was_terminal = record.terminal
    record = jobs.update(name, progressed)
    if record.terminal and not record.outputs and finish is not None and not ended_elsewhere:
        outputs = finish(spec, record)
        record = jobs.update(name, lambda rec: rec.outputs.update(outputs))
    return record


def _apply_poll(record: JobRecord, result: PollResult) -> None:
    now = utcnow()
    if result.labeled > record.counters.labeled or result.failed > record.counters.failed:
        record.last_progress_at = now
    record.counters = Counters(
        total=result.total or record.counters.total, labeled=result.labeled, failed=result.failed
    )
    record.backend_state.update(result.backend_state)
    if record.status != result.status:
        record.status = result.status
        record.last_progress_at = now
    record.failure_reason = result.failure_reason or record.failure_reason


def wait_job(
    name: str,
    poll: Callable[[], JobRecord],
    *,
    timeout: float | None,
    interval: float = 10.0,
    max_interval: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_poll: Callable[[JobRecord], None] | None = None,
) -> JobRecord:
    """Poll until the job ends and its outputs are written. JobFailed for Failed/Stopped, WaitTimedOut
    when `timeout` passes."""
    deadline = None if timeout is None else clock() + timeout
    delay = interval
    while True:
        record = poll()
        if on_poll:
            on_poll(record)
        if record.terminal:
            if record.status != "completed":
                reason = f": {record.failure_reason}" if record.failure_reason else ""
                raise JobFailed(
                    f"job {name} {record.status}{reason}", hint=f"`labeljob status {name}` shows details"
                )
            if record.outputs:
                return record
            # Completed, but another poll that ended the job is still writing its outputs.
        if deadline is not None and clock() + delay > deadline:
            remaining = max(0.0, deadline - clock())
            if remaining <= 0:
                raise WaitTimedOut(
                    f"job {name} still {record.status} after {timeout:g}s "
                    f"({record.counters.labeled}/{record.counters.total} labeled)",
                    hint="the job keeps running; wait again, or poll it on a schedule",
                )
            delay = remaining
        sleep(delay)
        delay = min(max_interval, delay * 1.5)


def stuck_hint(record: JobRecord, now: datetime | None = None) -> str | None:
    """Why a running job may be making no progress, once it has made none for hours."""
    if record.terminal:
        return None
    idle = ((now or utcnow()) - record.last_progress_at).total_seconds()
    if idle < STUCK_AFTER_SECONDS:
        return None
    hours = idle / 3600
    return (
        f"no progress for {hours:.1f} h: check that the work team has members who were invited, that the "
        "bucket has the CORS rule (`labeljob doctor --fix-cors`), and that the template renders "
        "(`labeljob doctor`)"
    )


def status_row(record: JobRecord, now: datetime | None = None) -> dict:
    """One job's status as a flat mapping, for tables and JSON alike."""
    now = now or utcnow()
    row = {
        "name": record.name,
        "backend": record.backend,
        "status": record.status,
        "labeled": record.counters.labeled,
        "failed": record.counters.failed,
        "total": record.counters.total,
        "age_hours": round((now - record.created_at).total_seconds() / 3600, 2),
        "hours_since_progress": round((now - record.last_progress_at).total_seconds() / 3600, 2),
        "failure_reason": record.failure_reason,
        "hint": stuck_hint(record, now),
    }
    row.update(record.backend_state.get(OVERLAP, {}))
    if record.backend_state.get(GOLD_REMOVED):
        row["gold_removed"] = record.backend_state[GOLD_REMOVED]
    row.update({f"output_{k}": v for k, v in record.outputs.items()})
    return row

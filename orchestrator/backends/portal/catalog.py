"""The portal's jobs: loading a manifest as tasks, progress, per-worker figures and stopping.

Shared by the `portal` backend (launch, poll, stop) and the admin pages.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict

from markupsafe import Markup
from sqlalchemy import case, func, insert, select, update
from sqlalchemy.orm import Session

from orchestrator.backends.portal.db import Answer, Job, Lease, Report, Task, Worker
from orchestrator.backends.portal.leasing import SET_ASIDE_AFTER
from orchestrator.backends.portal.media import split_image_root
from orchestrator.backends.portal.workers import blocks
from orchestrator.errors import BackendError, NotFound
from orchestrator.jobs import JobStore, ManifestItem, job_output_prefix
from orchestrator.outputs import WORKERS_REPORT_KEY
from orchestrator.spec import JobSpec
from orchestrator.storage import ObjectStore, open_store
from orchestrator.templates import TaskText


def dump_task_text(text: TaskText) -> str:
    return json.dumps(
        {
            "header": text.header,
            "labels": list(text.labels),
            "short_instructions_html": str(text.short_instructions_html),
            "full_instructions_html": str(text.full_instructions_html),
        }
    )


def load_task_text(data: str) -> TaskText:
    """The TaskText stored at launch; its HTML was made safe by templates.instructions_html then."""
    raw = json.loads(data)
    return TaskText(
        raw["header"],
        tuple(raw["labels"]),
        Markup(raw["short_instructions_html"]),
        Markup(raw["full_instructions_html"]),
    )


def job_by_name(session: Session, name: str) -> Job | None:
    return session.scalars(select(Job).where(Job.name == name)).first()


def load_job(session: Session, spec: JobSpec, items: list[ManifestItem], now: float) -> tuple[Job, int]:
    """Create the job and one task per manifest object; what exists already is kept.

    Returns the job and how many tasks were created, so launching the same job again creates
    nothing. A different spec under an existing name is a BackendError.
    """
    job = job_by_name(session, spec.name)
    if job is not None and job.fingerprint != spec.fingerprint():
        raise BackendError(
            f"the portal database already has a job named {spec.name!r} with a different spec",
            hint="give the job a new name",
        )
    image_root, keys = split_image_root([item.source_ref for item in items], spec.portal.image_folder)
    if job is None:
        job = Job(
            name=spec.name,
            fingerprint=spec.fingerprint(),
            spec=json.dumps(spec.model_dump(mode="json")),
            task_text=dump_task_text(TaskText.from_spec(spec)),
            image_root=image_root,
            status="open",
            created_at=now,
        )
        session.add(job)
        session.flush()
    existing = set(session.scalars(select(Task.object_id).where(Task.job_id == job.id)))
    rows = [
        {
            "job_id": job.id,
            "position": position,
            "object_id": item.object_id,
            "source_ref": item.source_ref,
            "image_key": key,
            "wanted": spec.task.workers_per_object,
            "answered": 0,
            "time_limit": spec.task.time_limit,
        }
        for position, (item, key) in enumerate(zip(items, keys, strict=True))
        if item.object_id not in existing
    ]
    if rows:
        session.execute(insert(Task), rows)
    return job, len(rows)


def stop_job(session: Session, name: str, now: float) -> bool:
    """Close the job to new leases and answers; False if there is no such job."""
    result = session.execute(
        update(Job).where(Job.name == name, Job.status == "open").values(status="stopped", stopped_at=now)
    )
    return result.rowcount > 0 or job_by_name(session, name) is not None


def progress(session: Session, job: Job, now: float) -> dict:
    """Counters of one job: objects, complete objects, answers, wanted answers, live leases, workers."""
    objects, complete, answers, wanted = session.execute(
        select(
            func.count(Task.id),
            func.coalesce(func.sum(case((Task.answered >= Task.wanted, 1), else_=0)), 0),
            func.coalesce(func.sum(Task.answered), 0),
            func.coalesce(func.sum(Task.wanted), 0),
        ).where(Task.job_id == job.id)
    ).one()
    live = session.scalar(
        select(func.count(Lease.id))
        .join(Task, Task.id == Lease.task_id)
        .where(Task.job_id == job.id, Lease.submitted_at.is_(None), Lease.expires_at > now)
    )
    workers = session.scalar(
        select(func.count(func.distinct(Answer.worker_id)))
        .join(Task, Task.id == Answer.task_id)
        .where(Task.job_id == job.id)
    )
    return {
        "name": job.name,
        "status": job.status,
        "objects": objects,
        "complete": int(complete),
        "answers": int(answers),
        "wanted": int(wanted),
        "live_leases": live,
        "workers": workers,
    }


def set_aside(session: Session, job: Job) -> list[dict]:
    """The job's tasks no worker is offered any more, because workers reported their image broken."""
    reports = select(Report.task_id, func.count(Report.id).label("reports")).where(Report.reason != "skip")
    reports = reports.group_by(Report.task_id).subquery()
    rows = session.execute(
        select(Task.object_id, Task.source_ref, reports.c.reports)
        .join(reports, reports.c.task_id == Task.id)
        .where(Task.job_id == job.id, reports.c.reports >= SET_ASIDE_AFTER)
        .order_by(Task.position)
    ).all()
    return [{"object_id": o, "source_ref": ref, "reports": n} for o, ref, n in rows]


def worker_stats(session: Session, job: Job | None = None) -> list[dict]:
    """Per worker who answered in the job (None: in any job): answers, seconds per task and where
    the worker is blocked, by worker id."""
    query = select(Worker.id, Worker.public_id, Worker.name, Worker.source, Answer.seconds).join(
        Answer, Answer.worker_id == Worker.id
    )
    if job is not None:
        query = query.join(Task, Task.id == Answer.task_id).where(Task.job_id == job.id)
    seconds: dict[tuple[int, str, str, str], list[float]] = defaultdict(list)
    for row_id, public_id, name, source, spent in session.execute(query).all():
        seconds[(row_id, public_id, name, source)].append(spent)
    blocked = blocks(session)
    return [
        {
            "worker_id": public_id,
            "name": name,
            "source": source,
            "answers": len(spent),
            "median_seconds": round(statistics.median(spent), 1),
            "mean_seconds": round(statistics.fmean(spent), 1),
            "blocked": blocked.get(row_id, []),
        }
        for (row_id, public_id, name, source), spent in sorted(seconds.items(), key=lambda item: item[0][1])
    ]


def agreement(workspace: ObjectStore | None, name: str, boto3_session=None) -> dict[str, dict]:
    """The workers report of a finished job, by worker id; empty before the job is finished."""
    record = JobStore(workspace).get(name) if workspace is not None else None
    if record is None:
        return {}
    store = open_store(job_output_prefix(record.job_spec), boto3_session)
    try:
        data = store.get(WORKERS_REPORT_KEY).decode()
    except NotFound:
        return {}
    return {row["worker_id"]: row for row in csv.DictReader(io.StringIO(data))}

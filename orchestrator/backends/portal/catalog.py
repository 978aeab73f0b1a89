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
from sqlalchemy import and_, case, delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.backends.portal.db import (
    Answer,
    Database,
    Drop,
    Job,
    Lease,
    Provisional,
    Report,
    Setting,
    Task,
    Worker,
)
from orchestrator.backends.portal.gold import add_gold_boxes, gold_rows, not_gold
from orchestrator.backends.portal.leasing import SET_ASIDE_AFTER
from orchestrator.backends.portal.media import split_image_root
from orchestrator.backends.portal.rounds import current
from orchestrator.backends.portal.verify import add_start_boxes
from orchestrator.backends.portal.workers import blocks
from orchestrator.errors import BackendError, NotFound
from orchestrator.jobs import JobStore, ManifestItem, job_output_prefix
from orchestrator.outputs import WORKERS_REPORT_KEY, GoldItem
from orchestrator.spec import JobSpec
from orchestrator.storage import ObjectStore, open_store
from orchestrator.templates import TaskText

SERVER_URL_SETTING = "server_url"


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


def record_server_url(db: Database, url: str) -> None:
    """Remember where `portal serve` listens, for `portal invite` and `portal simulate`."""
    for _ in range(2):
        try:
            with db.write() as session:
                session.merge(Setting(name=SERVER_URL_SETTING, value=url))
            return
        except IntegrityError:
            continue  # another portal process inserted it at the same moment: update theirs


def server_url(session: Session) -> str | None:
    """The address the last `portal serve` on this database listens on, if one ever ran."""
    row = session.get(Setting, SERVER_URL_SETTING)
    return row.value if row else None


def job_by_name(session: Session, name: str) -> Job | None:
    return session.scalars(select(Job).where(Job.name == name)).first()


def load_job(
    session: Session, spec: JobSpec, items: list[ManifestItem], now: float, gold: list[GoldItem] = ()
) -> tuple[Job, int]:
    """Create the job, one task per manifest object and one per gold image; what exists is kept.

    Returns the job and how many manifest tasks were created, so launching the same job again
    creates nothing. A different spec under an existing name is a BackendError.
    """
    job = job_by_name(session, spec.name)
    if job is not None and job.fingerprint != spec.fingerprint():
        raise BackendError(
            f"the portal database already has a job named {spec.name!r} with a different spec",
            hint="give the job a new name",
        )
    image_root, keys = split_image_root(
        [item.source_ref for item in items] + [g.source_ref for g in gold], spec.portal.image_folder
    )
    keys, gold_keys = keys[: len(items)], keys[len(items) :]
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
    wanted, asked = answers_per_task(spec)
    rows = [
        {
            "job_id": job.id,
            "position": position,
            "object_id": item.object_id,
            "source_ref": item.source_ref,
            "image_key": key,
            "wanted": wanted,
            "asked": asked,
            "answered": 0,
            "time_limit": spec.task.time_limit,
        }
        for position, (item, key) in enumerate(zip(items, keys, strict=True))
        if item.object_id not in existing
    ]
    created = len(rows)
    rows += [
        row
        for row in gold_rows(job.id, gold, gold_keys, spec.task.time_limit)
        if row["object_id"] not in existing
    ]
    if rows:
        session.execute(insert(Task), rows)
    add_gold_boxes(session, job.id, gold)
    add_start_boxes(session, job.id, spec, items)
    return job, created


def stop_job(session: Session, name: str, now: float) -> bool:
    """Close the job to new leases and answers; False if there is no such job."""
    result = session.execute(
        update(Job).where(Job.name == name, Job.status == "open").values(status="stopped", stopped_at=now)
    )
    return result.rowcount > 0 or job_by_name(session, name) is not None


def drop_answers(session: Session, worker: Worker, job: Job | None, now: float) -> int:
    """Delete the worker's answers to the tasks of `job` (None: every job) and give those tasks back
    to the pool; the next poll of each job has the job layer drop them from its worker responses.
    Gold answers stay: they are how the worker was scored. Returns the answers deleted."""
    rows = session.execute(
        select(Answer.id, Answer.slot, Task)
        .join(Task, Task.id == Answer.task_id)
        .where(Answer.worker_id == worker.id, not_gold(), *([Task.job_id == job.id] if job else []))
        .with_for_update()
    ).all()
    for answer_id, slot, task in rows:
        session.execute(delete(Provisional).where(Provisional.answer_id == answer_id))
        session.execute(delete(Answer).where(Answer.id == answer_id))
        # Slots stay 1..answered: a new answer takes slot answered + 1, so the last one fills the gap.
        session.execute(
            update(Answer).where(Answer.task_id == task.id, Answer.slot == task.answered).values(slot=slot)
        )
        # Not final any more: offered again, and handed to the job layer again once it is.
        task.answered -= 1
        task.settled_at = None
        task.reported_in = None
    for job_id in sorted({task.job_id for _, _, task in rows}):
        session.add(Drop(worker_id=worker.id, job_id=job_id, created_at=now))
    session.flush()
    return len(rows)
def answers_per_task(spec: JobSpec) -> tuple[int, int]:
    """The answers a task of the job wants, and those it asks for at first (fewer when adaptive)."""
    adaptive = spec.task.adaptive
    if adaptive is None:
        return spec.task.workers_per_object, spec.task.workers_per_object
    return adaptive.max_workers, adaptive.min_workers


def task_final():
    """A task whose answers are final: it has all it may want, or the stopping rule settled it, and
    none of them waits for the lead's approval."""
    return and_(
        or_(Task.answered >= Task.wanted, Task.settled_at.is_not(None)),
        ~exists().where(Provisional.task_id == Task.id),
    )


def approve(session: Session, job: Job, worker: Worker | None = None) -> int:
    """Approve the provisional answers in `job` (of one worker, or all); how many there were."""
    answers = select(Answer.id).join(Task, Task.id == Answer.task_id).where(Task.job_id == job.id)
    if worker is not None:
        answers = answers.where(Answer.worker_id == worker.id)
    return session.execute(delete(Provisional).where(Provisional.answer_id.in_(answers))).rowcount


def progress(session: Session, job: Job, now: float) -> dict:
    """Status (open, completed or stopped) and counters of one job: objects, complete objects, answers,
    answers asked for so far (all that are wanted in a fixed-overlap job), live leases, workers, and
    marketplace answers awaiting the lead's approval."""
    objects, complete, answers, wanted = session.execute(
        select(
            func.count(Task.id),
            func.coalesce(func.sum(case((task_final(), 1), else_=0)), 0),
            func.coalesce(func.sum(Task.answered), 0),
            func.coalesce(func.sum(Task.asked), 0),
        ).where(Task.job_id == job.id, not_gold(), current())
    ).one()
    live = session.scalar(
        select(func.count(Lease.id))
        .join(Task, Task.id == Lease.task_id)
        .where(Task.job_id == job.id, Lease.submitted_at.is_(None), Lease.expires_at > now, not_gold())
    )
    workers = session.scalar(
        select(func.count(func.distinct(Answer.worker_id)))
        .join(Task, Task.id == Answer.task_id)
        .where(Task.job_id == job.id)
    )
    provisional = session.scalar(
        select(func.count(Provisional.answer_id))
        .join(Task, Task.id == Provisional.task_id)
        .where(Task.job_id == job.id)
    )
    # The rule PortalBackend.poll applies, so the admin pages say what `labeljob status` says.
    completed = job.status == "open" and objects > 0 and complete == objects
    return {
        "name": job.name,
        "status": "completed" if completed else job.status,
        "objects": objects,
        "complete": int(complete),
        "answers": int(answers),
        "wanted": int(wanted),
        "live_leases": live,
        "workers": workers,
        "awaiting_approval": provisional,
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

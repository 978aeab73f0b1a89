"""Labeling rounds: a reviewer's reject sends an object back to the crowd (docs/review.md, "On the portal").

The object's task is retired and a new task, the next round, takes its object id and position with
no answers. The schema's per-task rules (one answer per worker and slot, at most `wanted`) then hold
for the new round as they did for the first, and leasing adds one rule across rounds: a worker who
answered any earlier round of the object is never offered it again.
"""

from __future__ import annotations

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session

from orchestrator.backends.portal.db import Answer, Job, Lease, RetiredTask, Task


def current():
    """Tasks no reject has retired (a WHERE clause on Task)."""
    return ~exists().where(RetiredTask.task_id == Task.id)


def answered_earlier_round(worker_id: int):
    """The worker answered a retired round of the task's object (a WHERE clause correlated to Task)."""
    return exists().where(
        RetiredTask.job_id == Task.job_id,
        RetiredTask.object_id == Task.object_id,
        Answer.task_id == RetiredTask.task_id,
        Answer.worker_id == worker_id,
    )


def reopen(session: Session, job_name: str, object_id: str, asked: int, now: float) -> int | None:
    """Retire the object's task and add its next round, asking `asked` answers; the new round's number.

    None when the job is not open (a stopped job takes no new answers) or has no such object. The
    retired task's live leases end now, so a worker still drawing on it is told its time ran out.
    """
    old = session.scalars(
        select(Task)
        .join(Job, Job.id == Task.job_id)
        .where(Job.name == job_name, Job.status == "open", Task.object_id == object_id, current())
        .with_for_update(of=Task)
    ).first()
    if old is None:
        return None
    earlier = session.scalar(
        select(func.count()).where(RetiredTask.job_id == old.job_id, RetiredTask.object_id == object_id)
    )
    round_ = earlier + 1
    session.add(
        RetiredTask(task_id=old.id, job_id=old.job_id, object_id=object_id, round=round_, retired_at=now)
    )
    position = old.position
    old.object_id, old.position = f"{object_id}~{round_}", -old.id
    session.flush()  # free the object id and position before the new round takes them
    session.add(
        Task(
            job_id=old.job_id,
            position=position,
            object_id=object_id,
            source_ref=old.source_ref,
            image_key=old.image_key,
            wanted=old.wanted,
            asked=min(asked, old.wanted),
            answered=0,
            time_limit=old.time_limit,
        )
    )
    session.execute(
        update(Lease)
        .where(and_(Lease.task_id == old.id, Lease.submitted_at.is_(None), Lease.expires_at > now))
        .values(expires_at=now)
    )
    return round_ + 1


def round_numbers(session: Session, tasks: list[Task]) -> dict[str, int]:
    """The round of each task past the first, by object id."""
    if not tasks:
        return {}
    counts = dict(
        session.execute(
            select(RetiredTask.object_id, func.count())
            .where(
                RetiredTask.job_id == tasks[0].job_id,
                RetiredTask.object_id.in_([task.object_id for task in tasks]),
            )
            .group_by(RetiredTask.object_id)
        ).all()
    )
    return {object_id: count + 1 for object_id, count in counts.items()}

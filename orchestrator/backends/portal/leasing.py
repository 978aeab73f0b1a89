"""Leasing tasks to workers and taking their answers.

A lease hands one task to one worker for the task's time limit. A task never has more live leases
plus answers than it asks for (`Task.asked`: all it wants, or in an adaptive job as many as the
stopping rule has asked for so far), a worker never answers one object twice, an expired lease
simply stops counting (the task goes back to the pool), and a submit is refused politely when the
lease has expired or is someone else's. Submitting twice returns the first answer.

Concurrency: every function runs in one write transaction. On SQLite that transaction holds the
database's write lock from BEGIN (IMMEDIATE). On PostgreSQL a worker locks the task row it wants
with `SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent workers pick different tasks instead of
queueing on one, and re-reads the task's counts under that lock. When every task left is locked by
another request, it waits for the first instead of answering "nothing left". The schema's unique and check
constraints are the last line of defence if any of this were wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.backends.portal import gold, rounds
from orchestrator.backends.portal.db import Answer, Database, Job, Lease, Provisional, Report, Task, Worker
from orchestrator.backends.portal.workers import blocked_in

# Reports of a broken image, by different workers, that set a task aside for the ML lead.
SET_ASIDE_AFTER = 2
REPORT_REASONS = ("skip", "not_loading", "not_an_image")
# A task claimed by another request in the meantime is skipped; give up after this many tries so a
# pathological race cannot spin (the worker just asks again).
MAX_CANDIDATES = 20


@dataclass(frozen=True)
class LeasedTask:
    """A task leased to a worker: what the worker page and the JSON API need to show it."""

    lease_id: int
    job_id: int
    job_name: str
    object_id: str
    source_ref: str
    image_key: str
    started_at: float
    expires_at: float


@dataclass(frozen=True)
class Submitted:
    answer_id: int
    job_name: str
    duplicate: bool


class SubmitRefused(Exception):
    """A submit the portal cannot take; `reason` is a stable code, the message is for the worker."""

    MESSAGES = {
        "unknown_lease": "This task is not yours (or no longer exists). Please take the next one.",
        "expired": "Sorry, the time for this image ran out, so it went back to the pool. "
        "Your answer was not stored; please take the next image.",
        "closed": "This job has been closed; your answer was not stored. Thank you for your work.",
        "full": "This image already has all the answers it needs; please take the next one.",
        "blocked": "Your answers are no longer accepted for this job.",
    }

    def __init__(self, reason: str) -> None:
        super().__init__(self.MESSAGES[reason])
        self.reason = reason
        self.message = self.MESSAGES[reason]


class LeaseHeldElsewhere(Exception):
    """The worker id holds a live lease that another browser session took."""


def broken_reports(task_id):
    """How many workers reported the task's image as broken (a correlated scalar subquery)."""
    return (
        select(func.count(Report.id))
        .where(Report.task_id == task_id, Report.reason != "skip")
        .correlate(Task)
        .scalar_subquery()
    )


def _live_leases(task_id, now: float):
    """Leases of a task that still hold a slot: not submitted and not expired."""
    return and_(Lease.task_id == task_id, Lease.submitted_at.is_(None), Lease.expires_at > now)


def _leased(lease_id: int, started_at: float, expires_at: float, task: Task, job_name: str) -> LeasedTask:
    return LeasedTask(
        lease_id=lease_id,
        job_id=task.job_id,
        job_name=job_name,
        object_id=task.object_id,
        source_ref=task.source_ref,
        image_key=task.image_key,
        started_at=started_at,
        expires_at=expires_at,
    )


def take_task(
    db: Database, worker_id: int, now: float, job_name: str | None = None, *, token_id: int | None = None
) -> LeasedTask | None:
    """The worker's live lease if it has one, else a new lease on the first task it may answer.

    None when no open job has a task for this worker. A worker invited for one job only ever gets
    tasks of that job, so a worker holds at most one live lease per job; a blocked worker gets
    none of the jobs it is blocked in. A marketplace session
    passes its `token_id`: its leases are bound to it, and LeaseHeldElsewhere is raised when the
    worker's live lease belongs to another session.
    """
    invited_for = select(Worker.job_id).where(Worker.id == worker_id).scalar_subquery()
    jobs = select(Job.id).where(
        Job.status == "open",
        or_(invited_for.is_(None), Job.id == invited_for),
        ~blocked_in(worker_id, Job.id),
    )
    if job_name is not None:
        jobs = jobs.where(Job.name == job_name)
    with db.write() as session:
        mine = session.execute(
            select(Lease.id, Lease.started_at, Lease.expires_at, Task, Job.name, Lease.token_id)
            .join(Task, Task.id == Lease.task_id)
            .join(Job, Job.id == Task.job_id)
            .where(
                Lease.worker_id == worker_id,
                Lease.submitted_at.is_(None),
                Lease.expires_at > now,
                Task.job_id.in_(jobs),
            )
            .order_by(Lease.id)
            .limit(1)
        ).first()
        if mine is not None:
            if mine.token_id is not None and mine.token_id != token_id:
                raise LeaseHeldElsewhere()
            return _leased(*mine[:5])

        live = (
            select(func.count(Lease.id)).where(_live_leases(Task.id, now)).correlate(Task).scalar_subquery()
        )
        answered_by_me = exists().where(Answer.task_id == Task.id, Answer.worker_id == worker_id)
        set_down_by_me = exists().where(Report.task_id == Task.id, Report.worker_id == worker_id)
        skipped: list[int] = []
        waits = 0
        for _ in range(MAX_CANDIDATES):
            query = (
                select(Task, Job.name)
                .join(Job, Job.id == Task.job_id)
                .where(
                    Task.job_id.in_(jobs),
                    Task.answered < Task.asked,
                    Task.answered + live < Task.asked,
                    ~answered_by_me,
                    ~rounds.answered_earlier_round(worker_id),
                    rounds.current(),
                    gold.not_gold(),
                    ~set_down_by_me,
                    broken_reports(Task.id) < SET_ASIDE_AFTER,
                )
                .order_by(Task.job_id, Task.position)
                .limit(1)
                .with_for_update(skip_locked=not waits, of=Task)
            )
            if skipped:
                query = query.where(Task.id.not_in(skipped))
            # On PostgreSQL each candidate is locked inside a savepoint, so one without room for this
            # worker is let go at once: this transaction then holds no task lock while it waits.
            candidate = None if db.is_sqlite else session.begin_nested()
            found = session.execute(query).first()
            if found is None:
                if candidate is not None:
                    candidate.rollback()
                if db.is_sqlite or waits == 2:
                    return None
                # Every task left (skipped ones aside) may only be locked by a lease or submit in
                # flight: wait for the first rather than tell the worker there is nothing. Waiting
                # while this transaction holds no task lock cannot deadlock. After a wait, PostgreSQL
                # checks the row the other transaction wrote against this statement's older view of
                # the leases, which can drop a task that has room: one more statement sees both anew.
                waits += 1
                continue
            task, name = found
            # Gold is mixed in only while the job has work for the worker, never served alone.
            task = gold.due_gold_task(session, task.job_id, worker_id) or task
            room, own_lease = _room(session, task.id, worker_id, now)
            if not room:
                skipped.append(task.id)
                if candidate is not None:
                    candidate.rollback()
                continue
            if candidate is not None:
                candidate.commit()
            expires = now + task.time_limit
            if own_lease is None:
                lease = Lease(
                    task_id=task.id,
                    worker_id=worker_id,
                    started_at=now,
                    expires_at=expires,
                    token_id=token_id,
                )
                session.add(lease)
                session.flush()
                own_lease = lease.id
            else:
                # The worker's own expired, unanswered lease on this task is renewed, not duplicated.
                session.execute(
                    update(Lease)
                    .where(Lease.id == own_lease)
                    .values(started_at=now, expires_at=expires, token_id=token_id)
                )
            return _leased(own_lease, now, expires, task, name)
        return None


def release_leases(db: Database, worker_ids: list[int], now: float) -> int:
    """End the live, unanswered leases of these workers now, so their tasks go back to the pool."""
    with db.write() as session:
        released = session.execute(
            update(Lease)
            .where(Lease.worker_id.in_(worker_ids), Lease.submitted_at.is_(None), Lease.expires_at > now)
            .values(expires_at=now)
        )
        return released.rowcount


def _room(session: Session, task_id: int, worker_id: int, now: float) -> tuple[bool, int | None]:
    """Whether the worker may lease the task, and the id of its own earlier lease on it.

    Read in a statement of its own, under the task's row lock: on PostgreSQL the candidate query's
    snapshot may predate a lease or answer that another transaction committed before the lock.
    """
    live = select(func.count(Lease.id)).where(_live_leases(task_id, now))
    mine = select(func.count(Answer.id)).where(Answer.task_id == task_id, Answer.worker_id == worker_id)
    own_lease = select(Lease.id).where(Lease.task_id == task_id, Lease.worker_id == worker_id)
    answered, asked, leased, answered_by_me, answered_before, lease_id = session.execute(
        select(
            Task.answered,
            Task.asked,
            live.scalar_subquery(),
            mine.scalar_subquery(),
            rounds.answered_earlier_round(worker_id),
            own_lease.scalar_subquery(),
        ).where(Task.id == task_id)
    ).one()
    return answered_by_me == 0 and not answered_before and answered + leased < asked, lease_id


def live_lease_token(session: Session, worker_id: int, job_id: int, now: float) -> int | None:
    """The session bound to the worker's live lease in the job, if it has one."""
    return session.scalar(
        select(Lease.token_id)
        .join(Task, Task.id == Lease.task_id)
        .where(
            Lease.worker_id == worker_id,
            Task.job_id == job_id,
            Lease.submitted_at.is_(None),
            Lease.expires_at > now,
            Lease.token_id.is_not(None),
        )
        .limit(1)
    )


def set_down(
    db: Database, worker_id: int, lease_id: int, reason: str, now: float, token_id: int | None = None
) -> None:
    """The worker gives its live lease back: skipped, or the image reported broken (REPORT_REASONS).

    The task goes back to the pool for everyone else, never to this worker again; after
    SET_ASIDE_AFTER reports of a broken image it is offered to nobody. SubmitRefused when the
    lease is not the worker's or was answered already.
    """
    if reason not in REPORT_REASONS:
        raise ValueError(f"reason must be one of {', '.join(REPORT_REASONS)}")
    with db.write() as session:
        task_id = lease_owned(session, lease_id, worker_id, token_id)
        answered = session.scalar(select(Lease.submitted_at).where(Lease.id == lease_id))
        if task_id is None or answered is not None:
            raise SubmitRefused("unknown_lease")
        if not session.scalar(
            select(Report.id).where(Report.task_id == task_id, Report.worker_id == worker_id)
        ):
            session.add(Report(task_id=task_id, worker_id=worker_id, reason=reason, created_at=now))
        session.execute(update(Lease).where(Lease.id == lease_id).values(expires_at=now))


def lease_owned(session: Session, lease_id: int, worker_id: int, token_id: int | None):
    """The lease's task id if the lease is the worker's (and, when bound to a session, that
    session's), else None."""
    owner = session.execute(
        select(Lease.task_id, Lease.worker_id, Lease.token_id).where(Lease.id == lease_id)
    ).first()
    if owner is None or owner.worker_id != worker_id:
        return None
    if owner.token_id is not None and owner.token_id != token_id:
        return None
    return owner.task_id


def submit_answer(
    db: Database, worker_id: int, lease_id: int, content: str, now: float, token_id: int | None = None
) -> Submitted:
    """Store the answer of the worker's lease; SubmitRefused if it may not be stored.

    `content` is the element's answer as JSON text. A second submit of the same lease returns the
    first answer (`duplicate=True`) and changes nothing. A lease bound to a session is refused to
    every other session of the same worker.
    """
    try:
        with db.write() as session:
            task_id = lease_owned(session, lease_id, worker_id, token_id)
            if task_id is None:
                raise SubmitRefused("unknown_lease")
            # Lock order task -> job -> lease, as in take_task, so they never deadlock. The shared
            # lock on the job row makes a stop wait for the submits in flight, and them for it.
            task = session.scalars(
                select(Task)
                .where(Task.id == task_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).one()
            status, name = session.execute(
                select(Job.status, Job.name).where(Job.id == task.job_id).with_for_update(read=True)
            ).one()
            earlier_answer = select(Answer.id).where(Answer.task_id == task.id, Answer.worker_id == worker_id)
            started, expires, earlier = session.execute(
                select(Lease.started_at, Lease.expires_at, earlier_answer.scalar_subquery()).where(
                    Lease.id == lease_id
                )
            ).one()
            if earlier is not None:
                return Submitted(earlier, name, duplicate=True)
            if status != "open":
                raise SubmitRefused("closed")
            if session.scalar(select(blocked_in(worker_id, task.job_id))):
                raise SubmitRefused("blocked")
            if now >= expires:
                raise SubmitRefused("expired")
            if task.answered >= task.asked:
                raise SubmitRefused("full")
            answer = Answer(
                task_id=task.id,
                wanted=task.wanted,
                slot=task.answered + 1,
                worker_id=worker_id,
                lease_id=lease_id,
                content=content,
                submitted_at=now,
                seconds=round(now - started, 3),
            )
            session.add(answer)
            task.answered += 1
            session.execute(update(Lease).where(Lease.id == lease_id).values(submitted_at=now))
            session.flush()
            if token_id is not None:  # a marketplace session's answer waits for the lead's approval
                session.add(Provisional(answer_id=answer.id, task_id=task.id, worker_id=worker_id))
                session.flush()
            return Submitted(answer.id, name, duplicate=False)
    except IntegrityError:
        # Only reachable if two submits raced past the checks; the constraints kept the data right.
        with db.read() as session:
            earlier = session.execute(
                select(Answer.id, Job.name)
                .join(Task, Task.id == Answer.task_id)
                .join(Job, Job.id == Task.job_id)
                .where(Answer.lease_id == lease_id, Answer.worker_id == worker_id)
            ).first()
        if earlier is not None:
            return Submitted(earlier.id, earlier.name, duplicate=True)
        raise SubmitRefused("full") from None

"""Portal workers: the one place that creates them, whoever asks (an invite, a marketplace visit, the
simulator), and where the ML lead blocks, unblocks and revokes them."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.orm import Session

from orchestrator.backends.portal.db import Block, Invite, Job, Token, Worker
from orchestrator.backends.portal.tokens import issue_invite

__all__ = [
    "block",
    "block_reasons",
    "blocked_in",
    "blocks",
    "invite_worker",
    "revoke",
    "unblock",
    "worker_by_public_id",
    "workers_named",
]


def worker_by_public_id(
    session: Session, public_id: str, *, name: str, source: str, now: float, job_id: int | None = None
) -> Worker:
    """The worker `public_id`, created with `name`, `source` and `job_id` on first use."""
    worker = session.scalars(select(Worker).where(Worker.public_id == public_id)).first()
    if worker is None:
        worker = Worker(public_id=public_id, name=name, source=source, job_id=job_id, created_at=now)
        session.add(worker)
        session.flush()
    return worker


def workers_named(session: Session, name: str) -> list[str]:
    """The public ids of the workers already called `name`."""
    return list(session.scalars(select(Worker.public_id).where(Worker.name == name).order_by(Worker.id)))


def invite_worker(session: Session, name: str, job_id: int | None, now: float) -> tuple[Worker, str]:
    """A new invited worker, with a public id made from its name, and its one-time invite code."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "worker"
    worker = worker_by_public_id(
        session, f"{slug}-{secrets.token_hex(3)}", name=name, source="invite", now=now, job_id=job_id
    )
    return worker, issue_invite(session, worker.id, now)


def block(session: Session, worker: Worker, job: Job | None, now: float) -> bool:
    """Block the worker in `job` (None: every job); False if it was blocked there already."""
    job_id = job.id if job is not None else None
    if session.scalar(select(Block.id).where(Block.worker_id == worker.id, _same_job(job_id))):
        return False
    session.add(Block(worker_id=worker.id, job_id=job_id, created_at=now))
    return True


def unblock(session: Session, worker: Worker, job: Job | None) -> bool:
    """Lift the block in `job` (None: the block in every job); False if there was none."""
    job_id = job.id if job is not None else None
    return session.execute(delete(Block).where(Block.worker_id == worker.id, _same_job(job_id))).rowcount > 0


def blocked_in(worker_id, job_id):
    """SQL condition: the worker is blocked in the job, or in every job."""
    return exists().where(Block.worker_id == worker_id, or_(Block.job_id.is_(None), Block.job_id == job_id))


def _same_job(job_id: int | None):
    return Block.job_id.is_(None) if job_id is None else Block.job_id == job_id


def revoke(session: Session, worker: Worker, now: float) -> int:
    """End every token, session and unused invite of the worker at once; how many there were."""
    tokens = session.execute(
        update(Token).where(Token.worker_id == worker.id, Token.revoked_at.is_(None)).values(revoked_at=now)
    ).rowcount
    invites = session.execute(
        update(Invite).where(Invite.worker_id == worker.id, Invite.used_at.is_(None)).values(used_at=now)
    ).rowcount
    return tokens + invites


def block_reasons(session: Session, job_id: int) -> dict[str, str]:
    """Worker id -> why labeljob blocked it from the job (gold), for blocks that carry a reason."""
    rows = session.execute(
        select(Worker.public_id, Block.reason)
        .join(Block, Block.worker_id == Worker.id)
        .where(Block.job_id == job_id, Block.reason.is_not(None))
    )
    return dict(rows.all())


def blocks(session: Session) -> dict[int, list[str]]:
    """Where each blocked worker is blocked, by worker row id: job names, or "all jobs"."""
    rows = session.execute(select(Block.worker_id, Job.name).outerjoin(Job, Job.id == Block.job_id)).all()
    found: dict[int, list[str]] = {}
    for worker_id, job_name in rows:
        found.setdefault(worker_id, []).append(job_name or "all jobs")
    return found

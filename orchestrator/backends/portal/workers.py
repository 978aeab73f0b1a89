"""Portal workers: the one place that creates them, whoever asks (an invite, a marketplace visit, the
simulator)."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.backends.portal.db import Worker
from orchestrator.backends.portal.tokens import issue_invite

__all__ = ["invite_worker", "worker_by_public_id"]


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


def invite_worker(session: Session, name: str, job_id: int | None, now: float) -> tuple[Worker, str]:
    """A new invited worker, with a public id made from its name, and its one-time invite code."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "worker"
    worker = worker_by_public_id(
        session, f"{slug}-{secrets.token_hex(3)}", name=name, source="invite", now=now, job_id=job_id
    )
    return worker, issue_invite(session, worker.id, now)

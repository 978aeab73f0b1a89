"""Marketplace entry: the one URL an ML lead pastes into a marketplace, and what it lets a visitor do.

Entry is off for a job until `labeljob portal link` turns it on. The link carries a per-job secret
(`k`) and the marketplace's own placeholders, which the marketplace fills in per worker. The
secret keeps out everyone who has not seen the marketplace listing; a marketplace worker who has
can still claim any worker id, which is why new worker ids per minute are capped, a session
belongs to one job, and a live lease belongs to the browser session that took it.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlparse

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from orchestrator.backends.portal.db import Job, MarketplaceLink, Token
from orchestrator.errors import UsageError

# New worker ids a job takes per minute unless the ML lead sets another figure.
DEFAULT_NEW_WORKERS_PER_MINUTE = 30
# Sessions one worker id may open in a job per minute (each visit without its cookie opens one).
SESSIONS_PER_WORKER_PER_MINUTE = 10
# Where Prolific takes a worker's completion code (`cc`); the only host a Prolific job returns to.
PROLIFIC_COMPLETE = "https://app.prolific.com/submissions/complete"


@dataclass(frozen=True)
class Marketplace:
    """How one marketplace fills in the entry URL: the query parameter holding the worker id, and
    the placeholders it substitutes (kept in the URL for the ML lead's own records)."""

    worker_param: str
    placeholders: dict[str, str]
    # Hosts a lead-given completion URL may point to; empty means any https host the lead names.
    return_hosts: tuple[str, ...] = ()


MARKETPLACES = {
    "generic": Marketplace("worker", {"worker": "{WORKER_ID}"}),
    # Prolific substitutes {{%NAME%}} in a study URL with the participant, study and session ids.
    "prolific": Marketplace(
        "PROLIFIC_PID",
        {
            "PROLIFIC_PID": "{{%PROLIFIC_PID%}}",
            "STUDY_ID": "{{%STUDY_ID%}}",
            "SESSION_ID": "{{%SESSION_ID%}}",
        },
        ("app.prolific.com",),
    ),
    "cloudresearch": Marketplace(
        "participantId",
        {
            "participantId": "{{participant_id}}",
            "assignmentId": "{{assignment_id}}",
            "projectId": "{{project_id}}",
        },
        ("connect.cloudresearch.com",),
    ),
    # MTurk appends assignmentId, hitId, turkSubmitTo and workerId to an ExternalQuestion URL itself.
    "mturk": Marketplace("workerId", {}),
}


def turn_on(
    session: Session,
    job: Job,
    marketplace: str,
    now: float,
    *,
    rotate: bool = False,
    completion_code: str | None = None,
    completion_url: str | None = None,
    new_workers_per_minute: int | None = None,
) -> MarketplaceLink:
    """The job's link for `marketplace`, created (or with a new secret, if `rotate`) as needed.

    Rotating revokes every session the old secret opened. UsageError for a completion URL
    that is not https or points outside the marketplace's own hosts.
    """
    if marketplace not in MARKETPLACES:
        raise UsageError(f"unknown marketplace {marketplace!r}", hint=f"one of {', '.join(MARKETPLACES)}")
    if completion_url is not None:
        check_completion_url(marketplace, completion_url)
    link = session.get(MarketplaceLink, job.id)
    if link is None:
        link = MarketplaceLink(
            job_id=job.id,
            marketplace=marketplace,
            secret=secrets.token_urlsafe(24),
            new_workers_per_minute=DEFAULT_NEW_WORKERS_PER_MINUTE,
            created_at=now,
        )
        session.add(link)
    elif rotate or link.marketplace != marketplace:
        link.secret = secrets.token_urlsafe(24)
        link.created_at = now
        revoke_sessions(session, job.id, now)
    link.marketplace = marketplace
    if marketplace == "prolific" and completion_code is None and link.completion_code is None:
        # Prolific needs a completion code: make one for the lead to paste into the study.
        completion_code = secrets.token_hex(4).upper()
    if completion_code is not None:
        link.completion_code = completion_code
    if completion_url is not None:
        link.completion_url = completion_url
    if new_workers_per_minute is not None:
        link.new_workers_per_minute = new_workers_per_minute
    session.flush()
    return link


def turn_off(session: Session, job: Job, now: float) -> bool:
    """Close the job's marketplace entry and end its sessions; False if it was already off."""
    revoke_sessions(session, job.id, now)
    return session.execute(delete(MarketplaceLink).where(MarketplaceLink.job_id == job.id)).rowcount > 0


def revoke_sessions(session: Session, job_id: int, now: float) -> None:
    session.execute(
        update(Token)
        .where(Token.kind == "session", Token.job_id == job_id, Token.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def check_completion_url(marketplace: str, url: str) -> None:
    parsed = urlparse(url)
    hosts = MARKETPLACES[marketplace].return_hosts
    if parsed.scheme != "https" or not parsed.hostname or len(url) > 2000:
        raise UsageError(f"the completion URL {url!r} is not an https URL")
    if hosts and parsed.hostname not in hosts:
        raise UsageError(
            f"a {marketplace} completion URL must point to {' or '.join(hosts)}, not {parsed.hostname}"
        )


def entry_url(base_url: str, job_name: str, link: MarketplaceLink) -> str:
    """The URL to paste into the marketplace, placeholders left for the marketplace to fill in."""
    base = base_url.rstrip("/")
    if link.marketplace == "mturk":
        return f"{base}/external?{urlencode({'job': job_name, 'k': link.secret})}"
    # Placeholders stay unencoded: the marketplace looks for them verbatim.
    fields = "".join(
        f"&{name}={value}" for name, value in MARKETPLACES[link.marketplace].placeholders.items()
    )
    return f"{base}/go/{quote(job_name)}?k={link.secret}{fields}"


def completion(link: MarketplaceLink) -> tuple[str | None, str | None]:
    """Where a worker goes when done (None: stay on the page) and the code to show them."""
    if link.completion_url:
        return link.completion_url, link.completion_code
    if link.marketplace == "prolific" and link.completion_code:
        return f"{PROLIFIC_COMPLETE}?{urlencode({'cc': link.completion_code})}", link.completion_code
    return None, link.completion_code


def secret_ok(link: MarketplaceLink | None, marketplace: str, given: str | None) -> bool:
    """Whether `given` is the secret of the job's link for `marketplace` (False while entry is off)."""
    if link is None or not given or len(given) > 200:
        return False
    marketplace_ok = (link.marketplace == "mturk") == (marketplace == "mturk")
    return marketplace_ok and hmac.compare_digest(link.secret.encode(), given.encode())


def new_worker_allowed(session: Session, link: MarketplaceLink, now: float) -> bool:
    """Whether the job may take one more new worker id in the current minute."""
    first_seen = (
        select(func.min(Token.created_at).label("first"))
        .where(Token.kind == "session", Token.job_id == link.job_id)
        .group_by(Token.worker_id)
        .subquery()
    )
    recent = session.scalar(select(func.count()).select_from(first_seen).where(first_seen.c.first > now - 60))
    return recent < link.new_workers_per_minute


def new_session_allowed(session: Session, worker_id: int, job_id: int, now: float) -> bool:
    """Whether a known worker id may open one more session of the job in the current minute."""
    recent = session.scalar(
        select(func.count(Token.id)).where(
            Token.kind == "session",
            Token.worker_id == worker_id,
            Token.job_id == job_id,
            Token.created_at > now - 60,
        )
    )
    return recent < SESSIONS_PER_WORKER_PER_MINUTE

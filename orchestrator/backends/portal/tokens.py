"""Bearer tokens, CSRF tokens and signed image URLs.

Tokens are random (`secrets`), handed out once and stored only as SHA-256 hashes, so a copy of the
database gives nobody a way in. Every comparison of secrets uses `hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.backends.portal.db import Database, Invite, Setting, Token

SIGNING_KEY_SETTING = "url_signing_key"
# How long a marketplace session lives: a working day, after which the worker enters again.
SESSION_SECONDS = 12 * 3600
# How long a worker's own token lives (an invite's session, a simulated worker's API token).
WORKER_SECONDS = 30 * 86400
# How long an unused invite link stays valid.
INVITE_SECONDS = 7 * 86400


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(
    session: Session,
    kind: str,
    worker_id: int | None = None,
    now: float | None = None,
    *,
    job_id: int | None = None,
) -> str:
    """Store a new token's hash and return the token itself, which is never stored.

    Worker tokens expire after WORKER_SECONDS and sessions after SESSION_SECONDS; admin tokens
    last until they are revoked.
    """
    token = new_token()
    now = now or time.time()
    lifetime = {"worker": WORKER_SECONDS, "session": SESSION_SECONDS}.get(kind)
    session.add(
        Token(
            token_hash=hash_token(token),
            kind=kind,
            worker_id=worker_id,
            job_id=job_id,
            created_at=now,
            expires_at=None if lifetime is None else now + lifetime,
        )
    )
    session.flush()
    return token


def find_token(
    session: Session, token: str | None, kinds: tuple[str, ...], now: float | None = None
) -> Token | None:
    """The live token row for `token` if it is one of `kinds` and has neither expired nor been
    revoked, else None."""
    if not token or len(token) > 200:
        return None
    digest = hash_token(token)
    row = session.scalars(select(Token).where(Token.token_hash == digest)).first()
    if row is None or row.revoked_at is not None or row.kind not in kinds:
        return None
    if row.expires_at is not None and row.expires_at <= (now or time.time()):
        return None
    # The lookup is by hash already; the constant-time check keeps the comparison itself timing-safe.
    return row if hmac.compare_digest(row.token_hash, digest) else None


def issue_invite(session: Session, worker_id: int, now: float) -> str:
    """A one-time invite code for the worker; only its hash is stored."""
    code = new_token()
    session.add(
        Invite(
            code_hash=hash_token(code), worker_id=worker_id, created_at=now, expires_at=now + INVITE_SECONDS
        )
    )
    return code


def find_invite(session: Session, code: str | None, now: float) -> Invite | None:
    """The invite of `code` if it is unused and unexpired, else None."""
    if not code or len(code) > 200:
        return None
    row = session.get(Invite, hash_token(code))
    return row if row is not None and row.used_at is None and row.expires_at > now else None


def redeem_invite(session: Session, code: str, now: float) -> int | None:
    """Spend the invite (once, whoever races for it) and return its worker id; None if it is spent,
    expired or unknown."""
    spent = session.execute(
        update(Invite)
        .where(Invite.code_hash == hash_token(code), Invite.used_at.is_(None), Invite.expires_at > now)
        .values(used_at=now)
        .returning(Invite.worker_id)
    ).first()
    return spent[0] if spent is not None else None


def revoke_admin_tokens(session: Session, now: float | None = None) -> None:
    session.execute(
        update(Token)
        .where(Token.kind == "admin", Token.revoked_at.is_(None))
        .values(revoked_at=now or time.time())
    )


def has_admin_token(session: Session) -> bool:
    query = select(Token.id).where(Token.kind == "admin", Token.revoked_at.is_(None)).limit(1)
    return session.scalars(query).first() is not None


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: keyed by the session's own secret, so only its holder knows it."""
    return hmac.new(session_token.encode(), b"labeljob-csrf", hashlib.sha256).hexdigest()


def csrf_ok(session_token: str | None, given: str | None) -> bool:
    if not session_token or not given:
        return False
    return hmac.compare_digest(csrf_token(session_token), given)


# ------------------------------------------------------------------------------- signed URLs


def load_signing_key(db: Database) -> bytes:
    """The database's URL signing key, created on first use so every portal process shares it."""
    for _ in range(2):
        try:
            with db.write() as session:
                row = session.get(Setting, SIGNING_KEY_SETTING)
                if row is None:
                    row = Setting(name=SIGNING_KEY_SETTING, value=secrets.token_hex(32))
                    session.add(row)
                return bytes.fromhex(row.value)
        except IntegrityError:
            continue  # another portal process created it first: read theirs
    raise RuntimeError("could not create the URL signing key")


def sign(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def signature_ok(key: bytes, message: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(sign(key, message), given)

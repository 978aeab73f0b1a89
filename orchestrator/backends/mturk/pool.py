"""A private MTurk worker pool: a qualification type owned by the requester, one per team.

Granting the qualification to a worker adds them to the team's pool; every HIT of a job whose
workforce is private requires it, and hides itself from everyone else.
"""

from __future__ import annotations

import re

from orchestrator.backends.mturk.client import call, paginate
from orchestrator.errors import UsageError

_WORKER_ID = re.compile(r"^A[A-Z0-9]+$")
_TEAM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def pool_name(team: str) -> str:
    """The qualification type's name; MTurk keeps names unique per requester."""
    return f"labeljob team {team}"


def check_team(team: str) -> str:
    if not _TEAM.fullmatch(team):
        raise UsageError(f"team name {team!r} must be 1-63 letters, digits, '.', '_' or '-'")
    return team


def check_worker_ids(worker_ids: list[str]) -> list[str]:
    bad = [w for w in worker_ids if not _WORKER_ID.fullmatch(w)]
    if bad:
        raise UsageError(
            f"not MTurk worker ids: {', '.join(bad)}", hint="worker ids look like A1B2C3D4E5F6G7 (uppercase)"
        )
    return worker_ids


def find_pool(mturk, team: str) -> str | None:
    """The team's qualification type id, or None when no worker was ever granted to the team."""
    name = pool_name(check_team(team))
    for qualification in paginate(
        mturk,
        "ListQualificationTypes",
        "QualificationTypes",
        Query=name,
        MustBeRequestable=False,
        MustBeOwnedByCaller=True,
    ):
        # Query matches words anywhere in the name or description; only the exact name is ours.
        if qualification.get("Name") == name:
            return qualification["QualificationTypeId"]
    return None


def ensure_pool(mturk, team: str) -> str:
    """The team's qualification type id, created on first use."""
    existing = find_pool(mturk, team)
    if existing:
        return existing
    created = call(
        mturk,
        "CreateQualificationType",
        Name=pool_name(team),
        Description=f"Members of the labeljob team {team}: only they see this team's labeling tasks.",
        QualificationTypeStatus="Active",
    )
    return created["QualificationType"]["QualificationTypeId"]


def grant(mturk, team: str, worker_ids: list[str]) -> str:
    """Add workers to the team's pool; granting twice is harmless. Returns the qualification type id."""
    qualification_id = ensure_pool(mturk, team)
    for worker_id in check_worker_ids(worker_ids):
        call(
            mturk,
            "AssociateQualificationWithWorker",
            QualificationTypeId=qualification_id,
            WorkerId=worker_id,
            IntegerValue=1,
            SendNotification=False,
        )
    return qualification_id


def revoke(mturk, team: str, worker_ids: list[str]) -> str | None:
    """Remove workers from the team's pool; None when the team has no pool."""
    check_worker_ids(worker_ids)
    qualification_id = find_pool(mturk, team)
    if qualification_id is None:
        return None
    for worker_id in worker_ids:
        call(
            mturk,
            "DisassociateQualificationFromWorker",
            QualificationTypeId=qualification_id,
            WorkerId=worker_id,
            Reason=f"removed from the labeljob team {team}",
        )
    return qualification_id


def pool_requirement(qualification_id: str) -> dict:
    """The requirement that hides a HIT from everyone outside the pool."""
    return {
        "QualificationTypeId": qualification_id,
        "Comparator": "Exists",
        "ActionsGuarded": "DiscoverPreviewAndAccept",
    }

"""Mechanical Turk commands: `cleanup` of a finished job's HITs, and the private pool's `grant`/`revoke`.

`grant` and `revoke` are registered in the `workforce` group: a private MTurk workforce is a
qualification type owned by the team, granted to the listed worker ids.
"""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.backends.mturk.backend import MTurkBackend
from orchestrator.backends.mturk.client import mturk_client
from orchestrator.backends.mturk.pool import grant as grant_pool
from orchestrator.backends.mturk.pool import revoke as revoke_pool
from orchestrator.cli._state import state
from orchestrator.errors import UsageError
from orchestrator.jobs import JobStore
from orchestrator.storage import open_store

WorkerIds = Annotated[list[str], typer.Argument(help="MTurk worker ids (A1B2C3...).", metavar="WORKER_ID...")]
Team = Annotated[str, typer.Option("--team", help="The team whose private MTurk pool to change.")]
Sandbox = Annotated[
    bool,
    typer.Option(
        "--sandbox/--production", help="The MTurk environment of the pool (the sandbox by default)."
    ),
]


def cleanup(ctx: typer.Context, name: Annotated[str, typer.Argument(help="A finished MTurk job.")]) -> None:
    """Delete the HITs of a finished MTurk job whose every assignment is approved or rejected."""
    st = state(ctx)
    workspace = open_store(st.settings.workspace, st.session)
    record = JobStore(workspace).load(name)[0]
    if record.backend != "mturk":
        raise UsageError(f"job {name} runs on {record.backend}; cleanup is for MTurk jobs")
    backend = MTurkBackend(boto3_session=st.session, workspace=workspace)
    report = backend.cleanup(record.job_spec, record)
    for kept in report.kept:
        st.output.warn(f"kept HIT {kept['hit']} (object {kept['object']}): {kept['reason']}")
    st.output.data({"job": name, "deleted": len(report.deleted), "kept": len(report.kept)})


def grant(ctx: typer.Context, worker_ids: WorkerIds, team: Team, sandbox: Sandbox = True) -> None:
    """Add MTurk workers to a team's private pool; only they see the team's MTurk HITs."""
    st = state(ctx)
    qualification_id = grant_pool(mturk_client(st.session, sandbox), team, worker_ids)
    st.output.data({"team": team, "qualification_type_id": qualification_id, "granted": worker_ids})


def revoke(ctx: typer.Context, worker_ids: WorkerIds, team: Team, sandbox: Sandbox = True) -> None:
    """Remove MTurk workers from a team's private pool."""
    st = state(ctx)
    qualification_id = revoke_pool(mturk_client(st.session, sandbox), team, worker_ids)
    if qualification_id is None:
        st.output.info(f"team {team} has no MTurk pool; nothing to revoke")
    st.output.data({"team": team, "qualification_type_id": qualification_id, "revoked": worker_ids})

"""`labeljob workforce ...`: work teams, invitations and the worker portal of a private workforce."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.aws import client
from orchestrator.backends.groundtruth import workteams as private_workforce
from orchestrator.backends.mturk.client import mturk_client
from orchestrator.backends.mturk.pool import grant as grant_pool
from orchestrator.backends.mturk.pool import revoke as revoke_pool
from orchestrator.cli._options import MTurkWorkerIds
from orchestrator.cli._state import state

app = typer.Typer(
    help="Private workforce: work teams, invitations, the worker portal.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("create-team")
def create_team(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Work team name; also the Cognito group's name.")],
    description: Annotated[str | None, typer.Option(help="Shown to workers; 1-200 characters.")] = None,
    user_pool: Annotated[
        str | None, typer.Option(help="Cognito user pool id; read from the workforce when omitted.")
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="Cognito app client id; read from the workforce when omitted.")
    ] = None,
    workforce: Annotated[str, typer.Option(help="The private workforce's name.")] = "default",
) -> None:
    """Create a work team backed by a Cognito group of the same name."""
    st = state(ctx)
    result = private_workforce.create_team(
        client("sagemaker", st.session),
        client("cognito-idp", st.session),
        name,
        description=description,
        user_pool=user_pool,
        client_id=client_id,
        workforce=workforce,
    )
    if not result["created"]:
        st.output.info(f"work team {name} already exists; nothing was created")
    st.output.data(result)


@app.command("invite")
def invite(
    ctx: typer.Context,
    emails: Annotated[list[str], typer.Argument(help="E-mail addresses to invite.", metavar="EMAIL...")],
    team: Annotated[str, typer.Option("--team", help="The work team to add them to.")],
) -> None:
    """E-mail each person a sign-in invitation and add them to the team."""
    st = state(ctx)
    rows = private_workforce.invite(
        client("sagemaker", st.session), client("cognito-idp", st.session), team, emails
    )
    st.output.data(rows, columns=["email", "team", "status"])


@app.command("list")
def list_teams(ctx: typer.Context) -> None:
    """List the work teams of the region."""
    st = state(ctx)
    rows = private_workforce.list_teams(client("sagemaker", st.session))
    st.output.data(rows, columns=["team", "cognito_group", "portal", "arn"])


@app.command("portal-url")
def portal_url(
    ctx: typer.Context,
    team: Annotated[
        str | None, typer.Option("--team", help="A work team; the first one when omitted.")
    ] = None,
) -> None:
    """Print the worker portal's address, where invited workers sign in."""
    st = state(ctx)
    url = private_workforce.portal_url(client("sagemaker", st.session), team)
    st.output.data({"portal_url": url} if st.output.json else url)


# A private MTurk workforce: the team's pool is a qualification type granted to worker ids.
MTurkTeam = Annotated[str, typer.Option("--team", help="The team whose private MTurk pool to change.")]
MTurkSandbox = Annotated[
    bool,
    typer.Option(
        "--sandbox/--production", help="The MTurk environment of the pool (the sandbox by default)."
    ),
]


# A private MTurk workforce is a qualification type owned by the team, granted to the listed workers.
@app.command("grant")
def grant(
    ctx: typer.Context, worker_ids: MTurkWorkerIds, team: MTurkTeam, sandbox: MTurkSandbox = True
) -> None:
    """Add MTurk workers to a team's private pool; only they see the team's MTurk HITs."""
    st = state(ctx)
    qualification_id = grant_pool(mturk_client(st.session, sandbox), team, worker_ids)
    st.output.data({"team": team, "qualification_type_id": qualification_id, "granted": worker_ids})


@app.command("revoke")
def revoke(
    ctx: typer.Context, worker_ids: MTurkWorkerIds, team: MTurkTeam, sandbox: MTurkSandbox = True
) -> None:
    """Remove MTurk workers from a team's private pool."""
    st = state(ctx)
    qualification_id = revoke_pool(mturk_client(st.session, sandbox), team, worker_ids)
    if qualification_id is None:
        st.output.info(f"team {team} has no MTurk pool; nothing to revoke")
    st.output.data({"team": team, "qualification_type_id": qualification_id, "revoked": worker_ids})

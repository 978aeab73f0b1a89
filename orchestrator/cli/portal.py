"""`labeljob portal`: serve the job portal, invite workers, and run a simulated crowd against it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli._options import DatabaseUrl
from orchestrator.cli._state import State, state
from orchestrator.errors import BackendError, NotFound, UsageError
from orchestrator.jobs import JobStore
from orchestrator.redact import ShownOnce
from orchestrator.storage import ObjectStore, open_store

if TYPE_CHECKING:
    from orchestrator.backends.portal.db import Database

DEFAULT_URL = "http://127.0.0.1:8080"

app = typer.Typer(
    help="labeljob's own job portal: serve it, invite workers, simulate a crowd.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _workspace(st: State) -> ObjectStore:
    return open_store(st.settings.workspace, st.session_for(st.settings.workspace))


def _database(st: State, db: str | None) -> Database:
    from orchestrator.backends.portal.db import default_db_url, open_database

    return open_database(default_db_url(_workspace(st), db))


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _spec_url(st: State, job: str | None) -> str | None:
    """The public_url in the spec of `job`'s record, if the workspace has one."""
    record = JobStore(_workspace(st)).get(job) if job else None
    return record.job_spec.portal.public_url if record else None


def _served_url(database: Database) -> str | None:
    """Where the last `portal serve` on this database listens, if one ran."""
    from orchestrator.backends.portal import catalog

    with database.read() as session:
        return catalog.server_url(session)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    db: DatabaseUrl = None,
    new_admin_token: Annotated[
        bool, typer.Option("--new-admin-token", help="Revoke the admin token and print a new one.")
    ] = False,
) -> None:
    """Run the portal. The first run prints the admin link; it is shown only once."""
    import uvicorn

    from orchestrator.backends.portal import catalog
    from orchestrator.backends.portal.app import create_app
    from orchestrator.backends.portal.db import default_db_url, open_database, redacted
    from orchestrator.backends.portal.server import bind
    from orchestrator.backends.portal.tokens import has_admin_token, issue_token, revoke_admin_tokens

    st = state(ctx)
    workspace = _workspace(st)
    url = default_db_url(workspace, db)
    # Bound before anything is printed: a bad or busy port is one line, not a start and a failure.
    sock = bind(host, port)
    database = open_database(url)
    with database.write() as session:
        if new_admin_token:
            revoke_admin_tokens(session)
        token = issue_token(session, "admin") if new_admin_token or not has_admin_token(session) else None
    base = base_url(host, port)
    catalog.record_server_url(database, base)
    database.dispose()
    result = {"url": base, "database": redacted(url)}
    if token:
        result["admin_url"] = ShownOnce(f"{base}/a/{token}")
        st.output.info("The admin link below is shown only this once; keep it secret.")
    else:
        st.output.info("Open the admin link printed when the portal first ran (or pass --new-admin-token).")
    st.output.data(result)
    app_ = create_app(url, workspace, boto3_session=st.session_for(st.settings.workspace))
    # No access log: invite and admin links carry their tokens in the path.
    uvicorn.Server(uvicorn.Config(app_, access_log=False, log_level="warning")).run(sockets=[sock])


@app.command()
def invite(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The worker's name, shown on the admin pages.")],
    job: Annotated[str | None, typer.Option(help="Restrict the worker to this job.")] = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="The portal's address as workers reach it "
            "(default: the job's public_url, else where `portal serve` listens)."
        ),
    ] = None,
    db: DatabaseUrl = None,
) -> None:
    """Print a personal link for a new worker; its token is stored only as a hash."""
    from orchestrator.backends.portal import catalog
    from orchestrator.backends.portal.workers import invite_worker, workers_named

    st = state(ctx)
    if not name.strip() or len(name) > 256:
        raise UsageError("NAME must be 1-256 characters")
    database = _database(st, db)
    with database.write() as session:
        job_id = None
        if job is not None:
            found = catalog.job_by_name(session, job)
            if found is None:
                raise NotFound(
                    f"the portal has no job {job!r}", hint=f"launch it first: `labeljob launch {job}.toml`"
                )
            job_id = found.id
        namesakes = workers_named(session, name)
        worker, token = invite_worker(session, name, job_id, time.time())
        public_id = worker.public_id
    if namesakes:
        st.output.warn(
            f"a worker named {name!r} exists already ({', '.join(namesakes)}); "
            f"this is another one, {public_id}, with a link of its own"
        )
    base = url or _spec_url(st, job) or _served_url(database) or DEFAULT_URL
    link = ShownOnce(f"{base.rstrip('/')}/w/{token}")
    st.output.data({"name": name, "worker_id": public_id, "job": job, "link": link})


@app.command("simulate")
def simulate_command(
    ctx: typer.Context,
    job: Annotated[str, typer.Option(help="The job to answer.")],
    workers: Annotated[int, typer.Option(min=1, max=500, help="Simulated workers, one thread each.")] = 5,
    spammers: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of workers who draw at random.")
    ] = 0.0,
    url: Annotated[
        str | None,
        typer.Option(help="The running portal's address (default: where `portal serve` listens)."),
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option(help="truth.jsonl with the true boxes (default: the one beside the images)."),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the noise model.")] = 0,
    db: DatabaseUrl = None,
) -> None:
    """Answer a job's tasks as simulated workers through the portal's HTTP API."""
    import httpx
    from sqlalchemy import select

    from orchestrator.backends.portal import catalog
    from orchestrator.backends.portal.db import Task
    from orchestrator.backends.portal.simulate import (
        check_truth_labels,
        find_truth_file,
        load_truth,
        release_simulated_leases,
        simulate,
        simulated_workers,
    )

    st = state(ctx)
    database = _database(st, db)
    with database.read() as session:
        found = catalog.job_by_name(session, job)
        if found is None:
            raise NotFound(f"the portal has no job {job!r}", hint='launch it with backend = "portal" first')
        labels = list(catalog.load_task_text(found.task_text).labels)
        first = session.scalar(select(Task.source_ref).where(Task.job_id == found.id).limit(1))
        remaining = sum(session.scalars(select(Task.wanted - Task.answered).where(Task.job_id == found.id)))
    truth_path = truth or find_truth_file(first)
    if truth_path is None:
        raise UsageError("no truth.jsonl beside the images", hint="pass --truth FILE")
    known = load_truth(truth_path)
    check_truth_labels(known, labels)
    url = (url or _served_url(database) or _spec_url(st, job) or DEFAULT_URL).rstrip("/")
    try:
        httpx.get(url + "/healthz", timeout=5).raise_for_status()
    except httpx.HTTPError:
        raise UsageError(
            f"no portal answers at {url}", hint="start it with `labeljob portal serve`, or pass --url"
        ) from None
    tokens = simulated_workers(database, workers)
    try:
        with st.output.progress("simulated answers", total=remaining) as bar:
            result = simulate(
                url, tokens, known, labels, job=job, seed=seed, spammer_rate=spammers, on_answer=bar.advance
            )
    finally:
        # Whatever ended the run (an error, Ctrl-C), no task stays leased until its time limit.
        release_simulated_leases(database, workers)
    st.output.data(
        {
            "job": job,
            "workers": workers,
            "answers": result.answers,
            "refused": result.refused,
            "seconds": round(result.elapsed, 2),
            "errors": len(result.errors),
        }
    )
    if result.errors:
        raise BackendError(f"a simulated worker failed: {result.errors[0]}")

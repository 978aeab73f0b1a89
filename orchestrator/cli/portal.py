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
    from orchestrator.backends.portal.db import Database, Worker

DEFAULT_URL = "http://127.0.0.1:8080"

app = typer.Typer(
    help="labeljob's own job portal: serve it, invite workers, simulate a crowd.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _workspace(st: State) -> ObjectStore:
    return open_store(st.settings.workspace, st.session_for(st.settings.workspace))


PublicUrl = Annotated[
    str | None,
    typer.Option(
        help="The portal's address as workers reach it "
        "(default: the job's public_url, else where `portal serve` listens)."
    ),
]


def _portal_job(session, name: str):
    from orchestrator.backends.portal import catalog

    found = catalog.job_by_name(session, name)
    if found is None:
        raise NotFound(
            f"the portal has no job {name!r}", hint=f"launch it first: `labeljob launch {name}.toml`"
        )
    return found


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
    from orchestrator.backends.portal.server import bind, server_config
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
    uvicorn.Server(server_config(app_, host, port)).run(sockets=[sock])


@app.command()
def invite(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The worker's name, shown on the admin pages.")],
    job: Annotated[str | None, typer.Option(help="Restrict the worker to this job.")] = None,
    url: PublicUrl = None,
    db: DatabaseUrl = None,
) -> None:
    """Print a one-time invite link for a new worker (7 days); its code is stored only as a hash."""
    from orchestrator.backends.portal.workers import invite_worker, workers_named

    st = state(ctx)
    if not name.strip() or len(name) > 256:
        raise UsageError("NAME must be 1-256 characters")
    database = _database(st, db)
    with database.write() as session:
        job_id = _portal_job(session, job).id if job is not None else None
        namesakes = workers_named(session, name)
        worker, token = invite_worker(session, name, job_id, time.time())
        public_id = worker.public_id
    if namesakes:
        st.output.warn(
            f"a worker named {name!r} exists already ({', '.join(namesakes)}); "
            f"this is another one, {public_id}, with a link of its own"
        )
    link = ShownOnce(f"{_public_url(st, job, url, database)}/w/{token}")
    st.output.data({"name": name, "worker_id": public_id, "job": job, "link": link})


@app.command()
def link(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The portal job to open to a marketplace.")],
    marketplace: Annotated[
        str | None,
        typer.Option(help="generic | prolific | cloudresearch | mturk: whose placeholders the URL carries."),
    ] = None,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="New secret: the old URL and its sessions stop working.")
    ] = False,
    off: Annotated[bool, typer.Option("--off", help="Close marketplace entry and end its sessions.")] = False,
    completion_code: Annotated[
        str | None, typer.Option(help="The code workers get when done (Prolific: made up if not given).")
    ] = None,
    completion_url: Annotated[
        str | None, typer.Option(help="Where workers go when done (https; the marketplace's own host).")
    ] = None,
    new_workers_per_minute: Annotated[
        int | None, typer.Option(min=1, max=10_000, help="Cap on new worker ids per minute (default 30).")
    ] = None,
    url: PublicUrl = None,
    db: DatabaseUrl = None,
) -> None:
    """Turn a job's marketplace entry on and print the URL to paste into the marketplace.

    Entry is off until this runs; the URL carries a secret of this job, shown again by running the
    command again, and replaced with --rotate.
    """
    from orchestrator.backends.portal import marketplace as entry

    st = state(ctx)
    if off == (marketplace is not None):
        raise UsageError("pass --marketplace generic|prolific|cloudresearch|mturk, or --off")
    database = _database(st, db)
    now = time.time()
    with database.write() as session:
        found = _portal_job(session, job)
        if off:
            was_on = entry.turn_off(session, found, now)
            st.output.data({"job": job, "marketplace": None, "was_on": was_on})
            return
        row = entry.turn_on(
            session,
            found,
            marketplace,
            now,
            rotate=rotate,
            completion_code=completion_code,
            completion_url=completion_url,
            new_workers_per_minute=new_workers_per_minute,
        )
        finish_url, code = entry.completion(row)
        result = {
            "job": job,
            "marketplace": row.marketplace,
            "new_workers_per_minute": row.new_workers_per_minute,
            "completion_code": code,
            "completion_url": finish_url,
            "url": ShownOnce(entry.entry_url(_public_url(st, job, url, database), job, row)),
        }
    st.output.data(result)


def _public_url(st: State, job: str | None, url: str | None, database: Database) -> str:
    """`url`, else the job's `portal.public_url`, else where `portal serve` listens, else the default."""
    return (url or _spec_url(st, job) or _served_url(database) or DEFAULT_URL).rstrip("/")


WorkerId = Annotated[str, typer.Argument(help="The worker id shown by `labeljob portal workers`.")]
OneJob = Annotated[str | None, typer.Option(help="Only in this job (default: every job).")]


def _worker(session, public_id: str) -> Worker:
    from sqlalchemy import select

    from orchestrator.backends.portal.db import Worker

    found = session.scalars(select(Worker).where(Worker.public_id == public_id)).first()
    if found is None:
        raise NotFound(f"the portal has no worker {public_id!r}", hint="list them: `labeljob portal workers`")
    return found


@app.command("workers")
def workers_command(ctx: typer.Context, job: OneJob = None, db: DatabaseUrl = None) -> None:
    """Workers who answered: answers, seconds per task, where they are blocked, and (for a finished
    --job) their agreement with the consensus."""
    from orchestrator.backends.portal import catalog

    st = state(ctx)
    with _database(st, db).read() as session:
        rows = catalog.worker_stats(session, _portal_job(session, job) if job else None)
    agreement = catalog.agreement(_workspace(st), job, st.session_for(st.settings.workspace)) if job else {}
    for row in rows:
        found = agreement.get(row["worker_id"], {})
        row.update({key: found.get(key) for key in ("recall", "precision", "mean_iou", "low_quality")})
        row["blocked"] = ", ".join(row["blocked"])
    st.output.data(rows, empty="No worker has answered yet.")


@app.command("block")
def block_command(
    ctx: typer.Context,
    worker: WorkerId,
    job: OneJob = None,
    drop_answers: Annotated[
        bool,
        typer.Option(
            "--drop-answers",
            help="Also delete the worker's answers: their tasks go back to the pool, and the next poll "
            "takes them out of the job's stored answers.",
        ),
    ] = False,
    db: DatabaseUrl = None,
) -> None:
    """Block a worker: no new task, and no answer taken, in the job (or every job)."""
    from orchestrator.backends.portal import catalog
    from orchestrator.backends.portal import workers as portal_workers

    st = state(ctx)
    with _database(st, db).write() as session:
        found = _portal_job(session, job) if job else None
        blocked = _worker(session, worker)
        changed = portal_workers.block(session, blocked, found, time.time())
        dropped = catalog.drop_answers(session, blocked, found, time.time()) if drop_answers else 0
    result = {"worker_id": worker, "job": job, "blocked": True, "changed": changed}
    if drop_answers:
        result["answers_dropped"] = dropped
    st.output.data(result)


@app.command("unblock")
def unblock_command(ctx: typer.Context, worker: WorkerId, job: OneJob = None, db: DatabaseUrl = None) -> None:
    """Lift a block set with `block` (with the same --job)."""
    from orchestrator.backends.portal import workers as portal_workers

    st = state(ctx)
    with _database(st, db).write() as session:
        found = _portal_job(session, job) if job else None
        changed = portal_workers.unblock(session, _worker(session, worker), found)
    st.output.data({"worker_id": worker, "job": job, "blocked": False, "changed": changed})


@app.command("approve")
def approve_command(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The portal job.")],
    worker: Annotated[str | None, typer.Option(help="Only this worker's answers (default: all).")] = None,
    db: DatabaseUrl = None,
) -> None:
    """Approve marketplace workers' answers, which stay out of the outputs until then
    (`block --drop-answers` rejects a worker's instead)."""
    from orchestrator.backends.portal import catalog

    st = state(ctx)
    with _database(st, db).write() as session:
        found = _portal_job(session, job)
        approved = catalog.approve(session, found, _worker(session, worker) if worker else None)
    st.output.data({"job": job, "worker_id": worker, "approved": approved})


@app.command("revoke")
def revoke_command(ctx: typer.Context, worker: WorkerId, db: DatabaseUrl = None) -> None:
    """End the worker's links, tokens and sessions at once; a new invite lets them back in."""
    from orchestrator.backends.portal import workers as portal_workers

    st = state(ctx)
    with _database(st, db).write() as session:
        ended = portal_workers.revoke(session, _worker(session, worker), time.time())
    st.output.data({"worker_id": worker, "revoked": ended})


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

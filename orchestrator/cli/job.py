"""Job commands: estimate, launch, status, poll, wait, stop, and `cleanup` of a finished MTurk job."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from orchestrator.cli._options import SpecPath
from orchestrator.cli._state import State, state
from orchestrator.errors import UsageError
from orchestrator.jobs import (
    JobRecord,
    JobStore,
    check_spec,
    launch_job,
    new_record,
    poll_job,
    read_items,
    status_row,
    wait_job,
)
from orchestrator.spec import JobSpec, load_spec, marketplace_warning
from orchestrator.storage import is_s3_uri, open_store

# The table view of a dry run with more requests than this shortens long values (an MTurk Question);
# JSON carries them whole.
TABLE_FULL_REQUESTS = 5
TABLE_VALUE_CHARS = 400


def _shortened(value):
    if isinstance(value, str) and len(value) > TABLE_VALUE_CHARS:
        return (
            f"{value[:TABLE_VALUE_CHARS]}... [{len(value.encode()):,} bytes in all; --format json shows it]"
        )
    if isinstance(value, dict):
        return {key: _shortened(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shortened(item) for item in value]
    return value


def _job_store(st: State) -> JobStore:
    return JobStore(open_store(st.settings.workspace, st.session_for(st.settings.workspace)))


def _backend(st: State, name: str):
    from orchestrator.backends import get_backend

    workspace = open_store(st.settings.workspace, st.session)
    return get_backend(name, boto3_session=st.session, workspace=workspace)


def _poller(st: State, name: str, reconsolidate: bool = False):
    from orchestrator.jobs import finish_job
    from orchestrator.training import TRAINING_BACKEND, poll_training

    jobs = _job_store(st)
    record = jobs.load(name)[0]
    if record.backend == TRAINING_BACKEND:
        return lambda: poll_training(name, jobs, st.session)
    backend = _backend(st, record.backend)

    def finish(spec: JobSpec, rec: JobRecord) -> dict[str, str]:
        return finish_job(spec, rec, jobs, boto3_session=st.session, reconsolidate=reconsolidate)

    return lambda: poll_job(name, backend, jobs, boto3_session=st.session, finish=finish)


def estimate(ctx: typer.Context, spec_path: SpecPath) -> None:
    """Estimate what the job will cost: objects x workers x price, plus per-object fees."""
    st = state(ctx)
    spec = load_spec(spec_path)
    backend = _backend(st, spec.backend)
    n_objects = len(read_items(spec, st.session))
    cost = backend.estimate(spec, n_objects)
    result = {"job": spec.name, "backend": spec.backend, "objects": n_objects, **cost.as_dict()}
    if st.output.json:
        st.output.data(result)
        return
    st.output.table(result["lines"], columns=["item", "quantity", "unit_usd", "total_usd"], title=spec.name)
    st.output.data({"total_usd": cost.total_usd})
    for note in cost.notes:
        st.output.info(note)


def launch(
    ctx: typer.Context,
    spec_path: SpecPath,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the exact requests and cost; call nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before spending money.")] = False,
    adjust_from: Annotated[
        str | None, typer.Option(metavar="NAME", help="Adjust the boxes of an earlier job (Ground Truth).")
    ] = None,
    verify_from: Annotated[
        str | None, typer.Option(metavar="NAME", help="Verify the boxes of an earlier job (portal).")
    ] = None,
    more_from: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="More answers for the objects NAME left unsettled (Ground Truth)."),
    ] = None,
    verify_below: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="With --verify-from: only images with a box less confident than this."
        ),
    ] = None,
    verify_decision: Annotated[
        list[str] | None,
        typer.Option(
            metavar="DECISION",
            help="With --verify-from: only images the job's review decided so "
            "(undecided, accept, fix or reject; repeatable).",
        ),
    ] = None,
) -> None:
    """Launch a labeling job; running it again with the same spec reports the existing job."""
    if sum(map(bool, (adjust_from, verify_from, more_from))) > 1:
        raise UsageError("give one of --adjust-from, --verify-from and --more-from")
    if (verify_below is not None or verify_decision) and not verify_from:
        raise UsageError("--verify-below and --verify-decision go with --verify-from")
    unknown = sorted(set(verify_decision or []) - {"undecided", "accept", "fix", "reject"})
    if unknown:
        raise UsageError(f"--verify-decision {unknown[0]}: give undecided, accept, fix or reject")
    st = state(ctx)
    spec = load_spec(spec_path)
    if verify_from and spec.backend == "portal":
        from orchestrator.backends.portal.verify import verify_spec

        jobs = _job_store(st)
        spec = verify_spec(spec, jobs.load(verify_from)[0], jobs, verify_below, st.session, verify_decision)
    elif adjust_from or verify_from:
        from orchestrator.backends.groundtruth.chaining import chain_spec

        earlier = _job_store(st).load(adjust_from or verify_from)[0]
        spec = chain_spec(spec, earlier, "adjust" if adjust_from else "verify")
    followup = None
    if more_from:
        from orchestrator.backends.groundtruth.followup import followup_items, more_spec

        earlier = _job_store(st).load(more_from)[0]
        spec = more_spec(spec, earlier)
        # Even a dry run reads the earlier job's answers (S3 only): its manifest is the unsettled objects.
        followup = followup_items(spec, earlier.job_spec, st.session)
    if warning := marketplace_warning(spec):
        st.output.warn(warning)
    backend = _backend(st, spec.backend)
    # A dry run makes no remote call at all, not even to count the objects of an s3:// manifest.
    if followup is not None:
        items = followup
    else:
        items = None if dry_run and is_s3_uri(spec.input_manifest) else read_items(spec, st.session)
    if dry_run:
        check_spec(spec, backend)
        if items is not None:
            backend.check_items(spec, items)
        plan = backend.plan(spec, items, new_record(spec, len(items or ())))
        st.output.data(
            {
                "job": spec.name,
                "backend": spec.backend,
                "requests": plan.requests
                if st.output.json or len(plan.requests) <= TABLE_FULL_REQUESTS
                else _shortened(plan.requests),
                "estimate": plan.estimate.as_dict(),
                "warnings": plan.warnings,
            }
        )
        return
    cost = backend.estimate(spec, len(items))
    if cost.total_usd > 0 and not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"this job may cost about ${cost.total_usd:.2f}",
                hint="check `labeljob estimate`, then run again with --yes",
            )
        typer.confirm(f"This job may cost about ${cost.total_usd:.2f}. Launch it?", abort=True)
    outcome = launch_job(spec, backend, _job_store(st), items)
    row = status_row(outcome.record)
    row["created"] = outcome.created
    if not outcome.created:
        st.output.info(f"job {spec.name} already exists with the same spec; nothing was launched")
    st.output.data(row)


def status(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="A job name; all jobs when omitted.")] = None,
) -> None:
    """Show jobs: status, counters, age, time since progress, and a hint when a job looks stuck."""
    st = state(ctx)
    jobs = _job_store(st)
    names = [name] if name else jobs.names()
    rows = [status_row(jobs.load(n)[0]) for n in names]
    if name:
        st.output.data(rows[0])
        return
    st.output.data(
        rows,
        columns=[
            "name",
            "backend",
            "status",
            "labeled",
            "total",
            "age_hours",
            "hours_since_progress",
            "hint",
        ],
        empty=f"No jobs in {jobs.workspace.root_uri}; `labeljob launch JOB.toml` starts one.",
    )


def poll(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="The job to poll.")] = None,
    all_jobs: Annotated[
        bool, typer.Option("--all", help="Poll every unfinished job in the workspace.")
    ] = False,
    reconsolidate: Annotated[
        bool, typer.Option(help="Re-consolidate raw worker responses with labeljob's IoU voting.")
    ] = False,
) -> None:
    """Poll once, store new answers, and write the outputs of jobs that have ended."""
    st = state(ctx)
    if bool(name) == all_jobs:
        raise UsageError("give a job NAME or --all")
    jobs = _job_store(st)
    names = jobs.names() if all_jobs else [name]
    rows, errors = [], 0
    for job_name in names:
        record = jobs.load(job_name)[0]
        if all_jobs and record.terminal and record.outputs:
            continue
        try:
            rows.append(status_row(_poller(st, record.name, reconsolidate)()))
        except Exception as exc:
            if not all_jobs:
                raise
            # A scheduler polling many jobs must not let one broken job starve the others.
            from orchestrator.cli._errors import describe

            mapped = describe(exc)
            if mapped is None:
                raise
            errors += 1
            st.output.error(f"{job_name}: {mapped.message}", mapped.hint)
            rows.append({"name": job_name, "status": "error", "error": mapped.message})
    st.output.data(rows if all_jobs else rows[0], empty=f"No unfinished jobs in {jobs.workspace.root_uri}.")
    if errors:
        raise typer.Exit(1)


def wait(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The job to wait for.")],
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds (exit 4).")] = None,
    interval: Annotated[
        float, typer.Option(help="Seconds between the first polls; grows to 2 minutes.")
    ] = 10.0,
    reconsolidate: Annotated[
        bool, typer.Option(help="Re-consolidate raw worker responses with labeljob.")
    ] = False,
) -> None:
    """Wait for a job to end: exit 0 completed, 3 failed or stopped, 4 timed out."""
    from orchestrator.training import TRAINING_BACKEND

    st = state(ctx)
    poller = _poller(st, name, reconsolidate)
    with st.output.progress(f"{name}: waiting") as bar:

        def report(record: JobRecord) -> None:
            labeled, total = record.counters.labeled, record.counters.total
            if record.backend == TRAINING_BACKEND:
                progress = record.backend_state.get("secondary_status", "")
            else:
                progress = f"{labeled}/{total} labeled"
            st.output.info(f"{record.name}: {record.status} {progress}")
            bar.update(description=f"{name}: {record.status}", completed=labeled, total=total or None)

        record = wait_job(name, poller, timeout=timeout, interval=interval, on_poll=report)
    st.output.data(status_row(record))


def stop(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The job to stop.")]) -> None:
    """Stop a job; answers already given are kept and consolidated by the next poll."""
    from orchestrator.training import TRAINING_BACKEND, stop_training

    st = state(ctx)
    jobs = _job_store(st)
    record = jobs.load(name)[0]
    if record.terminal:
        st.output.info(f"job {name} has already ended ({record.status})")
    elif record.backend == TRAINING_BACKEND:
        stop_training(record, st.session)
        st.output.info(f"asked SageMaker to stop training job {name}; `labeljob poll {name}` follows it")
    else:
        _backend(st, record.backend).stop(record.job_spec, record)
        st.output.info(
            f"asked the {record.backend} backend to stop {name}; `labeljob poll {name}` collects the rest"
        )
    st.output.data(status_row(jobs.load(name)[0]))


def cleanup(ctx: typer.Context, name: Annotated[str, typer.Argument(help="A finished MTurk job.")]) -> None:
    """Delete the HITs of a finished MTurk job whose every assignment is approved or rejected."""
    from orchestrator.backends.mturk.backend import MTurkBackend

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

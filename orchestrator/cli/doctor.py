"""`labeljob doctor JOB.toml`: preflight checks, one line each, before a job is launched or trained on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli._options import SpecPath, TrainingOutput, TrainingRole
from orchestrator.cli._state import State, state
from orchestrator.errors import LabeljobError
from orchestrator.spec import load_spec
from orchestrator.storage import open_store

if TYPE_CHECKING:
    from orchestrator.cli._output import Output
    from orchestrator.doctor import Check
    from orchestrator.spec import JobSpec


def doctor(
    ctx: typer.Context,
    spec_path: SpecPath,
    fix_cors: Annotated[
        bool, typer.Option("--fix-cors", help="Add Ground Truth's CORS rule to image buckets lacking it.")
    ] = False,
    train: Annotated[
        bool, typer.Option("--train", help="Add `labeljob train`'s preflight on the job's output manifest.")
    ] = False,
    role: TrainingRole = None,
    output: TrainingOutput = None,
) -> None:
    """Check credentials, region, buckets, CORS, role, work team, manifest and template: exit 1 on a fail."""
    from orchestrator.doctor import run_checks

    st = state(ctx)
    spec = load_spec(spec_path)
    workspace = open_store(st.settings.workspace, st.session_for(st.settings.workspace))
    checks = run_checks(spec, st.session, fix_cors=fix_cors, workspace=workspace)
    if train:
        checks += _training_checks(st, spec, role, output)
    if st.output.json:
        st.output.data([check.as_dict() for check in checks])
    else:
        print_checks(st.output, checks)
    if any(check.status == "fail" for check in checks):
        raise typer.Exit(1)


def _training_checks(st: State, spec: JobSpec, role: str | None, output: str | None) -> list[Check]:
    from orchestrator.doctor import Check, training_checks
    from orchestrator.jobs import JobStore
    from orchestrator.training import prepare_training

    if role is None and spec.groundtruth is not None:
        role = spec.groundtruth.role_arn
    try:
        plan = prepare_training(
            spec.name,
            JobStore(open_store(st.settings.workspace, st.session)),
            region=st.session.region_name,
            boto3_session=st.session,
            role_arn=role,
            output=output,
        )
    except LabeljobError as exc:
        return [Check("training", "fail", exc.message, exc.hint)]
    return training_checks(plan, st.session)


def print_checks(output: Output, checks: list[Check]) -> None:
    """One line a check: status, name, detail and hint."""
    for check in checks:
        hint = f"  (hint: {check.hint})" if check.hint else ""
        output.data(f"{check.status:<4}  {check.name}: {check.detail}{hint}")

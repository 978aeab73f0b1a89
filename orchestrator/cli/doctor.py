"""`labeljob doctor JOB.toml`: preflight checks, one line each, before a job is launched."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli._options import SpecPath
from orchestrator.cli._output import Output
from orchestrator.cli._state import state
from orchestrator.doctor import Check, run_checks
from orchestrator.spec import load_spec


def doctor(
    ctx: typer.Context,
    spec_path: SpecPath,
    fix_cors: Annotated[
        bool, typer.Option("--fix-cors", help="Add Ground Truth's CORS rule to image buckets lacking it.")
    ] = False,
) -> None:
    """Check credentials, region, buckets, CORS, role, work team, manifest and template: exit 1 on a fail."""
    st = state(ctx)
    checks = run_checks(load_spec(spec_path), st.session, fix_cors=fix_cors)
    if st.output.json:
        st.output.data([check.as_dict() for check in checks])
    else:
        print_checks(st.output, checks)
    if any(check.status == "fail" for check in checks):
        raise typer.Exit(1)


def print_checks(output: Output, checks: list[Check]) -> None:
    """One line a check: status, name, detail and hint."""
    for check in checks:
        hint = f"  (hint: {check.hint})" if check.hint else ""
        output.data(f"{check.status:<4}  {check.name}: {check.detail}{hint}")

"""`labeljob iam-policy [JOB.toml]`: least-privilege policies for the execution role and the operator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli._state import state
from orchestrator.iam_policy import execution_role_policy, execution_role_trust_policy, operator_policy
from orchestrator.spec import load_spec


def iam_policy(
    ctx: typer.Context,
    spec_path: Annotated[
        Path | None,
        typer.Argument(help="A job spec, to narrow resources to its buckets and role.", metavar="[JOB.toml]"),
    ] = None,
) -> None:
    """Print IAM policies (JSON): the execution role's trust and permissions, and the operator's."""
    st = state(ctx)
    spec = load_spec(spec_path) if spec_path else None
    workspace = st.settings.workspace
    document = {
        "execution_role": {
            "trust_policy": execution_role_trust_policy(),
            "policy": execution_role_policy(spec, workspace),
        },
        "operator": {"policy": operator_policy(spec, workspace)},
    }
    st.output.data(document if st.output.json else json.dumps(document, indent=2))

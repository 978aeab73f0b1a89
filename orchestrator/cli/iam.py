"""`labeljob iam-policy [JOB.toml]`: least-privilege policies for the execution role and the operator."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli._state import state
from orchestrator.errors import UsageError
from orchestrator.iam_policy import execution_role_policy, execution_role_trust_policy, operator_policy
from orchestrator.spec import load_spec


class Backend(StrEnum):
    groundtruth = "groundtruth"
    mturk = "mturk"
    portal = "portal"


def iam_policy(
    ctx: typer.Context,
    spec_path: Annotated[
        Path | None,
        typer.Argument(help="A job spec, to narrow resources to its buckets and role.", metavar="JOB.toml"),
    ] = None,
    backend: Annotated[
        Backend | None,
        typer.Option(
            help="The backend, when no job spec is given (a spec names its own).  [default: groundtruth]"
        ),
    ] = None,
) -> None:
    """Print IAM policies (JSON): the operator's, and for Ground Truth the execution role's trust and
    permissions."""
    st = state(ctx)
    spec = load_spec(spec_path) if spec_path else None
    if spec and backend and backend.value != spec.backend:
        raise UsageError(f"--backend {backend.value} contradicts the spec's backend = {spec.backend!r}")
    workspace = st.settings.workspace
    name = spec.backend if spec else (backend or Backend.groundtruth).value
    document: dict = {}
    if name == "groundtruth":  # only Ground Truth acts on the account with a role of its own
        document["execution_role"] = {
            "trust_policy": execution_role_trust_policy(),
            "policy": execution_role_policy(spec, workspace),
        }
    document["operator"] = {"policy": operator_policy(spec, workspace, name)}
    if spec and name != "groundtruth":
        # Only Ground Truth is held to the job's buckets (launch refuses other source-refs).
        st.output.warn(
            "the S3 statements name the buckets of input_manifest, output and the workspace; if the "
            "images are in another bucket, add it to them"
        )
    st.output.data(document if st.output.json else json.dumps(document, indent=2))

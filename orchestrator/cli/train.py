"""`labeljob train`: a SageMaker training job on a labeled manifest, checked before anything is paid for."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from orchestrator.cli._options import TrainingOutput, TrainingRole
from orchestrator.cli._state import state
from orchestrator.cli.doctor import print_checks
from orchestrator.errors import PreflightFailed, UsageError
from orchestrator.jobs import JobStore, status_row
from orchestrator.storage import open_store
from orchestrator.training.object_detection import ALGORITHM
from orchestrator.training.request import DEFAULT_INSTANCE_TYPE


def train(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(metavar="JOB|MANIFEST", help="A finished job of the workspace, or a manifest.")
    ],
    algorithm: Annotated[
        str,
        typer.Option(
            help="object-detection (SageMaker's built-in algorithm) or yolo-script (Ultralytics YOLO in the "
            "PyTorch container)."
        ),
    ] = ALGORITHM,
    instance_type: Annotated[str, typer.Option(help="The training instance type.")] = DEFAULT_INSTANCE_TYPE,
    validation: Annotated[
        str | None,
        typer.Option(metavar="MANIFEST", help="Validation manifest (default: held out from the source)."),
    ] = None,
    output: TrainingOutput = None,
    role: TrainingRole = None,
    label_attribute: Annotated[
        str | None, typer.Option(help="The label attribute (default: the job's, or detected).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Training job name (default: derived from the request).")
    ] = None,
    max_runtime: Annotated[int, typer.Option(min=60, help="Stop training after this many seconds.")] = 86400,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Run the preflight (reads only) and print the exact requests; write and launch nothing.",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before starting a paid job.")] = False,
) -> None:
    """Train a detector on a labeled manifest; running it again with the same options launches nothing."""
    from orchestrator.doctor import training_checks
    from orchestrator.training import launch_training, prepare_training

    st = state(ctx)
    jobs = JobStore(open_store(st.settings.workspace, st.session))
    plan = prepare_training(
        source,
        jobs,
        region=st.session.region_name,
        validation=validation,
        label_attribute=label_attribute,
        boto3_session=st.session,
        role_arn=role,
        algorithm=algorithm,
        output=output,
        name=name,
        instance_type=instance_type,
        max_runtime_seconds=max_runtime,
    )
    checks = training_checks(plan, st.session)
    failed = [check for check in checks if check.status == "fail"]
    if dry_run:
        requests = plan.requests()
        if st.output.json:
            preflight = [check.as_dict() for check in checks]
            st.output.data({"training_job": plan.name, "preflight": preflight, "requests": requests})
        else:
            print_checks(st.output, checks)
            st.output.data(json.dumps(requests, indent=2))
    if failed:
        raise PreflightFailed(
            f"{len(failed)} preflight check(s) failed: "
            + "; ".join(f"{check.name}: {check.detail}" for check in failed),
            hint=failed[0].hint,
        )
    if dry_run:
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"training on {instance_type} is billed by the hour", hint="run again with --yes"
            )
        typer.confirm(f"Start training job {plan.name} on {instance_type} (billed by the hour)?", abort=True)
    record, created = launch_training(plan, jobs, st.session)
    if not created:
        st.output.info(f"training job {plan.name} already exists with the same request; nothing was launched")
    st.output.data({**status_row(record), "created": created})

"""The `labeljob` typer app: global options, and the command groups wired in one place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from orchestrator.cli import demo as demo_cmd
from orchestrator.cli import doctor as doctor_cmd
from orchestrator.cli import iam as iam_cmd
from orchestrator.cli import init as init_cmd
from orchestrator.cli import job as job_cmd
from orchestrator.cli import manifest as manifest_cmd
from orchestrator.cli import portal as portal_cmd
from orchestrator.cli import results as results_cmd
from orchestrator.cli import review as review_cmd
from orchestrator.cli import workforce as workforce_cmd
from orchestrator.cli._errors import describe
from orchestrator.cli._output import Output
from orchestrator.cli._state import State
from orchestrator.config import load_settings


class LabeljobGroup(TyperGroup):
    """Turns every expected exception of any command into `Error: ...`, a hint and an exit code."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            Output().error("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get("LABELJOB_DEBUG"):
                raise
            mapped = describe(exc)
            output = ctx.obj.output if isinstance(ctx.obj, State) else Output()
            if mapped is None:
                output.error(
                    f"internal error: {type(exc).__name__}: {exc}",
                    "this is a bug in labeljob; rerun with LABELJOB_DEBUG=1 for the traceback and report it",
                )
                raise typer.Exit(1) from None
            output.error(mapped.message, mapped.hint)
            raise typer.Exit(mapped.exit_code) from None


app = typer.Typer(
    cls=LabeljobGroup,
    name="labeljob",
    help="Crowdsourced bounding-box labeling jobs: manifests, workforces, consolidation, exports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def global_options(
    ctx: typer.Context,
    profile: Annotated[str | None, typer.Option(help="AWS profile for every AWS call.")] = None,
    region: Annotated[str | None, typer.Option(help="AWS region.")] = None,
    workspace: Annotated[
        str | None, typer.Option(help="Where job records and outputs live: s3://BUCKET/PREFIX or a folder.")
    ] = None,
    format: Annotated[
        str | None, typer.Option("--format", help="Output format: table or json.", metavar="table|json")
    ] = None,
    quiet: Annotated[bool | None, typer.Option("--quiet", "-q", help="Print only errors and data.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="labeljob.toml to read instead of the nearest one.")
    ] = None,
) -> None:
    if format is not None and format not in ("table", "json"):
        raise typer.BadParameter("must be 'table' or 'json'", param_hint="--format")
    settings = load_settings(
        {"profile": profile, "region": region, "workspace": workspace, "format": format, "quiet": quiet},
        config_file=config,
    )
    ctx.obj = State(settings)


app.command("init")(init_cmd.init)
app.command("demo")(demo_cmd.demo)
app.command("estimate")(job_cmd.estimate)
app.command("launch")(job_cmd.launch)
app.command("status")(job_cmd.status)
app.command("poll")(job_cmd.poll)
app.command("wait")(job_cmd.wait)
app.command("stop")(job_cmd.stop)
app.command("cleanup")(job_cmd.cleanup)
app.command("consolidate")(results_cmd.consolidate)
app.command("export")(results_cmd.export)
app.command("doctor")(doctor_cmd.doctor)
app.command("iam-policy")(iam_cmd.iam_policy)
app.add_typer(workforce_cmd.app, name="workforce")
app.add_typer(manifest_cmd.app, name="manifest")
app.add_typer(portal_cmd.app, name="portal")
app.command("review")(review_cmd.review)

"""The `labeljob` typer app: global options, and the command groups wired in one place."""

from __future__ import annotations

import copy
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
from orchestrator.cli import workforce as workforce_cmd
from orchestrator.cli._errors import describe
from orchestrator.cli._output import Output
from orchestrator.cli._state import State
from orchestrator.config import debug, load_settings

# Accepted after the command too (`labeljob status --format json`), as aws, gh and hf accept theirs.
LATE_OPTIONS = ("profile", "region", "workspace", "format", "quiet")
FLAGS = "labeljob.flags"


class LabeljobGroup(TyperGroup):
    """Turns every expected exception of any command into `Error: ...`, a hint and an exit code.

    It also gives every command the global options of `LATE_OPTIONS`, hidden, unless the command
    has an option of the same spelling (`export --format`, `init --workspace`), and writes every
    placeholder of --help in one style.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        late = [param for param in self.params if param.name in LATE_OPTIONS]
        for param in self.params:
            _one_placeholder_style(param)
        for command in _leaf_commands(self):
            for param in command.params:
                _one_placeholder_style(param)
            taken = {opt for param in command.params for opt in param.opts + param.secondary_opts}
            for param in late:
                if taken.isdisjoint(param.opts + param.secondary_opts):
                    command.params.append(_late_copy(param))

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            Output().error("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            if debug():
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


def _leaf_commands(group: TyperGroup):
    for command in group.commands.values():
        if hasattr(command, "commands"):
            yield from _leaf_commands(command)
        else:
            yield command


def _one_placeholder_style(param) -> None:
    """Every placeholder in --help an upper-case word (`--port PORT`, `SOURCE`), as in the usage line,
    instead of typer's mix of `<int>` after options and `NAME <str>` for arguments."""
    if getattr(param, "is_flag", False):
        return
    if param.metavar is None:
        kind = param.type_descriptor
        param.metavar = "|".join(map(str, kind.choices)) if kind.is_choice else param.name.upper()
    if param.param_type_name == "argument":
        param.display_type_rich = lambda ctx: None


def _late_copy(param):
    late = copy.copy(param)
    late.expose_value = False
    late.hidden = True
    late.callback = _late_option
    return late


def _late_option(ctx: typer.Context, param, value) -> None:
    """A global option given after the command: settle the settings again with it."""
    if value is not None and not ctx.resilient_parsing:
        root = ctx.find_root()
        flags, config = root.meta[FLAGS]
        _settle(root, {**flags, param.name: value}, config)


def _settle(ctx: typer.Context, flags: dict, config: Path | None) -> None:
    if flags["format"] is not None and flags["format"] not in ("table", "json"):
        raise typer.BadParameter("must be 'table' or 'json'", param_hint="--format")
    ctx.meta[FLAGS] = (flags, config)
    ctx.obj = State(load_settings(flags, config_file=config))


app = typer.Typer(
    cls=LabeljobGroup,
    name="labeljob",
    help="Crowdsourced bounding-box labeling jobs: manifests, workforces, consolidation, exports.\n\n"
    "The options below also work after the command: `labeljob status --format json`.",
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
    flags = {"profile": profile, "region": region, "workspace": workspace, "format": format, "quiet": quiet}
    _settle(ctx, flags, config)


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

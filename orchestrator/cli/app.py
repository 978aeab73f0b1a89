"""The `labeljob` typer app: global options, and every command registered in one place (`COMMANDS`)."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException
from typer.main import get_command_from_info, get_group
from typer.models import CommandInfo

from orchestrator.cli._errors import describe
from orchestrator.cli._output import Output
from orchestrator.cli._state import State
from orchestrator.config import debug, load_settings

# Accepted after the command too (`labeljob status --format json`), as aws, gh and hf accept theirs.
LATE_OPTIONS = ("profile", "region", "workspace", "format", "quiet")
FLAGS = "labeljob.flags"

# Every command, in the order `--help` lists them: name -> "module:function" or "module:typer_app".
# A command's module is imported only when that command runs or `--help` lists the commands, so a
# command pays for its own imports and no one else's.
COMMANDS = {
    "init": "orchestrator.cli.init:init",
    "demo": "orchestrator.cli.demo:demo",
    "estimate": "orchestrator.cli.job:estimate",
    "launch": "orchestrator.cli.job:launch",
    "status": "orchestrator.cli.job:status",
    "poll": "orchestrator.cli.job:poll",
    "wait": "orchestrator.cli.job:wait",
    "stop": "orchestrator.cli.job:stop",
    "cleanup": "orchestrator.cli.job:cleanup",
    "consolidate": "orchestrator.cli.results:consolidate",
    "export": "orchestrator.cli.results:export",
    "review": "orchestrator.cli.review:review",
    "doctor": "orchestrator.cli.doctor:doctor",
    "train": "orchestrator.cli.train:train",
    "iam-policy": "orchestrator.cli.iam:iam_policy",
    "workforce": "orchestrator.cli.workforce:app",
    "manifest": "orchestrator.cli.manifest:app",
    "portal": "orchestrator.cli.portal:app",
    "dataset": "orchestrator.cli.dataset:app",
}


class _Commands(Mapping):
    """`COMMANDS` as the group's name -> click command mapping, each command built on first lookup and
    given the group's late options (`LabeljobGroup.adopt`)."""

    def __init__(self, group: LabeljobGroup) -> None:
        self._group = group
        self._built: dict = {}

    def __getitem__(self, name: str):
        if name not in self._built:
            module, _, attr = COMMANDS[name].partition(":")
            target = getattr(importlib.import_module(module), attr)
            self._built[name] = (
                get_group(target)
                if isinstance(target, typer.Typer)
                else get_command_from_info(
                    CommandInfo(name=name, callback=target),
                    pretty_exceptions_short=app.pretty_exceptions_short,
                    rich_markup_mode=app.rich_markup_mode,
                )
            )
            self._group.adopt(self._built[name])
        return self._built[name]

    def __iter__(self):
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


class LabeljobGroup(TyperGroup):
    """Loads commands from `COMMANDS` on first use, and turns every expected exception of any command
    into `Error: ...`, a hint and an exit code.

    Every command also gets the global options of `LATE_OPTIONS`, hidden, unless it has an option of
    the same spelling (`export --format`, `init --workspace`), and every placeholder of --help is
    written in one style.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.commands = _Commands(self)
        for param in self.params:
            _one_placeholder_style(param)

    def adopt(self, command) -> None:
        """Give a newly built command (or every command of a sub-group) the late options."""
        late = [param for param in self.params if param.name in LATE_OPTIONS]
        for leaf in _leaf_commands(command):
            for param in leaf.params:
                _one_placeholder_style(param)
            taken = {opt for param in leaf.params for opt in param.opts + param.secondary_opts}
            for param in late:
                if taken.isdisjoint(param.opts + param.secondary_opts):
                    leaf.params.append(_late_copy(param))

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


def _leaf_commands(command):
    if hasattr(command, "commands"):
        for sub in command.commands.values():
            yield from _leaf_commands(sub)
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

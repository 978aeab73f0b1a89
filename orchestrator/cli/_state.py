"""What every command gets from the global options: settings, the output sink and one boto3 session."""

from __future__ import annotations

from functools import cached_property

import typer

from orchestrator.aws import make_session
from orchestrator.cli._output import Output
from orchestrator.config import Settings


class State:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.output = Output(settings.format, settings.quiet)

    @cached_property
    def session(self):
        """The one boto3 session of this run, built only when a command needs AWS."""
        return make_session(self.settings.profile, self.settings.region)


def state(ctx: typer.Context) -> State:
    return ctx.find_root().obj

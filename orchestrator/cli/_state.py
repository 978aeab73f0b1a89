"""What every command gets from the global options: settings, the output sink and one boto3 session."""

from __future__ import annotations

from functools import cached_property

import typer

from orchestrator.aws import make_session
from orchestrator.cli._output import Output
from orchestrator.config import Settings
from orchestrator.storage import is_s3_uri


class State:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.output = Output(settings.format, settings.quiet)

    @cached_property
    def session(self):
        """The one boto3 session of this run, built only when a command needs AWS."""
        return make_session(self.settings.profile, self.settings.region)

    def session_for(self, *uris: str | None):
        """The session when any of `uris` is on S3; None keeps local runs free of boto3 and AWS config."""
        return self.session if any(uri and is_s3_uri(uri) for uri in uris) else None


def state(ctx: typer.Context) -> State:
    return ctx.find_root().obj

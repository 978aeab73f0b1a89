"""The one exception hierarchy of labeljob; the CLI turns each into a one-line message and an exit code."""

from __future__ import annotations


class LabeljobError(Exception):
    """An expected failure with a message for the user and an optional hint."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(LabeljobError):
    """The command was called wrongly (bad flag value, missing argument)."""

    exit_code = 2


class ConfigError(LabeljobError):
    """labeljob.toml, the environment or a job spec holds a bad value."""


class SpecError(ConfigError):
    """A job spec has one or more invalid values; each problem names the key it came from."""

    def __init__(self, problems: list[tuple[str, str]], *, source: str = "job spec") -> None:
        self.problems = problems
        lines = "; ".join(f"{key}: {msg}" for key, msg in problems)
        super().__init__(f"{source}: {len(problems)} invalid value(s): {lines}")


class StorageError(LabeljobError):
    """A bucket or folder operation failed."""


class NotFound(StorageError):
    """The bucket, folder or object does not exist."""


class AccessDenied(StorageError):
    """The credentials may not read or write this bucket or object."""


class PreconditionFailed(StorageError):
    """A conditional write lost: the object exists already, or changed since it was read."""


class InputError(LabeljobError):
    """A file the user gave is malformed; the message names the file and line."""


class BackendError(LabeljobError):
    """A workforce backend refused or failed an operation."""


class JobFailed(LabeljobError):
    """The labeling job ended Failed or Stopped."""

    exit_code = 3


class WaitTimedOut(LabeljobError):
    """`wait` gave up before the job ended."""

    exit_code = 4


class PreflightFailed(LabeljobError):
    """A check before a paid launch failed; nothing was called or written."""

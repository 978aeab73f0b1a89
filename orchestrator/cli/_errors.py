"""The one map from exceptions to one-line CLI errors with a hint and an exit code."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.aws import error_code, error_message
from orchestrator.errors import LabeljobError


@dataclass(frozen=True)
class CliError:
    message: str
    hint: str | None
    exit_code: int


def describe(exc: BaseException) -> CliError | None:
    """The message for an expected exception, or None for a bug that should keep its traceback."""
    if isinstance(exc, LabeljobError):
        return CliError(exc.message, exc.hint, exc.exit_code)

    from botocore import exceptions as bex

    if isinstance(exc, bex.NoCredentialsError):
        return CliError(
            "no AWS credentials found",
            "run `aws configure`, pass --profile, or use the portal backend, which needs no AWS account",
            1,
        )
    if isinstance(exc, bex.NoRegionError):
        return CliError("no AWS region set", "pass --region or set region in labeljob.toml or AWS_REGION", 1)
    if isinstance(exc, bex.ProfileNotFound):
        return CliError(str(exc), "list profiles with `aws configure list-profiles`", 1)
    if isinstance(exc, bex.EndpointConnectionError):
        return CliError(str(exc), "check the network, the region, or AWS_ENDPOINT_URL_* overrides", 1)
    if isinstance(exc, bex.ClientError):
        code = error_code(exc, "ClientError")
        hint = None
        if code in {"ThrottlingException", "Throttling", "TooManyRequestsException"}:
            hint = (
                "AWS is throttling requests; wait a minute and run the command again (it is safe to repeat)"
            )
        elif code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}:
            hint = "`labeljob iam-policy` prints the permissions labeljob needs"
        operation = getattr(exc, "operation_name", "")
        return CliError(f"{operation}: {code}: {error_message(exc)}".strip(": "), hint, 1)
    if isinstance(exc, bex.BotoCoreError):
        return CliError(str(exc), None, 1)
    if isinstance(exc, OSError) and exc.filename:
        return CliError(f"{exc.filename}: {exc.strerror}", None, 1)
    return None

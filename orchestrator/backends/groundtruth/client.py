"""Ground Truth's SageMaker calls, each checked against the service model before it is sent."""

from __future__ import annotations

from orchestrator.aws import checked_call, error_code, error_message
from orchestrator.errors import BackendError

__all__ = ["GroundTruthError", "call"]

THROTTLING_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException"})


class GroundTruthError(BackendError):
    """A SageMaker call that was refused or failed, with SageMaker's error code."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        self.operation = operation
        self.code = code
        hint = None
        if code in THROTTLING_CODES:
            hint = "SageMaker is throttling requests; run the command again in a minute (safe to repeat)"
        elif "AccessDenied" in code:
            hint = "`labeljob iam-policy` prints the permissions labeljob needs"
        super().__init__(f"{operation}: {code}: {message}".rstrip(": "), hint=hint)


def call(sm, operation: str, **params) -> dict:
    """Check the request against the service model, then make it; GroundTruthError when it is refused."""
    return checked_call(
        sm,
        operation,
        params,
        invalid=lambda problems: BackendError(
            f"Ground Truth {operation}: invalid request: {'; '.join(problems)}",
            hint="check the job spec's [groundtruth] values",
        ),
        refused=lambda exc: GroundTruthError(operation, error_code(exc), error_message(exc)),
    )

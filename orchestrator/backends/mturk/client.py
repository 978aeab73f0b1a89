"""The Mechanical Turk client: which endpoint, checked requests, and what MTurk's errors mean.

MTurk lives in us-east-1 only. The sandbox is a separate endpoint; a configured endpoint
(`AWS_ENDPOINT_URL_MTURK`, `AWS_ENDPOINT_URL` or the config file's `services` section) always wins
over it, so tests and MTurk-compatible services are reached the same way as the real thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from orchestrator.aws import checked_call, error_code, error_message
from orchestrator.errors import BackendError
from orchestrator.spec import MTURK_CLOSED

if TYPE_CHECKING:
    import boto3

REGION = "us-east-1"
PRODUCTION_ENDPOINT = "https://mturk-requester.us-east-1.amazonaws.com"
SANDBOX_ENDPOINT = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
# List operations return at most 100 items a page; the default is 10.
PAGE_SIZE = 100

HIT_ALREADY_EXISTS = "AWS.MechanicalTurk.HitAlreadyExists"
INVALID_ASSIGNMENT_STATE = "AWS.MechanicalTurk.InvalidAssignmentState"
INVALID_MAXIMUM_ASSIGNMENTS_INCREASE = "AWS.MechanicalTurk.InvalidMaximumAssignmentsIncrease"

_HINTS = {
    "AWS.MechanicalTurk.HITDoesNotExist": "the HIT is not on this endpoint: check `sandbox` in the job's "
    "[mturk] table against where it was launched",
    "AWS.MechanicalTurk.AssignmentDoesNotExist": "the assignment is not on this endpoint: check `sandbox` "
    "in the job's [mturk] table",
    "AWS.MechanicalTurk.InsufficientFunds": "prepay more funds on the requester website, or lower the reward",
    "AWS.MechanicalTurk.XMLParseError": "the question XML was rejected; `labeljob launch --dry-run` shows it",
}


class MTurkError(BackendError):
    """A refused or failed MTurk call, with MTurk's own error code."""

    def __init__(self, operation: str, code: str, turk_code: str, message: str) -> None:
        self.operation = operation
        self.code = code
        self.turk_code = turk_code
        self.service_message = message
        hint = _HINTS.get(turk_code)
        if code == "ServiceFault" or code.startswith("Throttl"):
            hint = "MTurk is busy or failing; run the command again (it is safe to repeat)"
        elif "AccessDenied" in code or "RequesterNotAuthorized" in turk_code:
            hint = f"{MTURK_CLOSED}; check the credentials (--profile)"
        super().__init__(f"MTurk {operation}: {turk_code or code}: {message}", hint=hint)


def mturk_client(boto3_session: boto3.Session | None, sandbox: bool):
    """A client for the sandbox or production, unless an endpoint is configured, which wins."""
    from orchestrator.aws import client

    mturk = client("mturk", boto3_session, region_name=REGION)
    # botocore already applied any configured endpoint; only the default endpoint means "none".
    if sandbox and mturk.meta.endpoint_url == PRODUCTION_ENDPOINT:
        mturk = client("mturk", boto3_session, region_name=REGION, endpoint_url=SANDBOX_ENDPOINT)
    return mturk


def call(mturk, operation: str, **params) -> dict:
    """Check the request against the service model, then make it; MTurkError when it is refused."""
    return checked_call(
        mturk,
        operation,
        params,
        invalid=lambda problems: BackendError(
            f"MTurk {operation}: invalid request: {'; '.join(problems)}",
            hint="check the job spec's [task] and [mturk] values",
        ),
        refused=lambda exc: MTurkError(
            operation,
            error_code(exc),
            # MTurk puts its own code at the top level of the response.
            str(exc.response.get("TurkErrorCode", "")),
            error_message(exc),
        ),
    )


def paginate(mturk, operation: str, result_key: str, **params) -> Iterator[dict]:
    """Every item of a list operation, following NextToken with pages of 100."""
    token = None
    while True:
        page = call(
            mturk, operation, MaxResults=PAGE_SIZE, **params, **({"NextToken": token} if token else {})
        )
        yield from page.get(result_key, ())
        token = page.get("NextToken")
        if not token:
            return

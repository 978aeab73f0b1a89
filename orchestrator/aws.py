"""Building the one boto3 session and the clients made from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    import boto3

# Adaptive mode paces requests after throttling, which MTurk and Ground Truth both do under bursts.
RETRY_CONFIG = {"mode": "adaptive", "max_attempts": 10}


def make_session(profile: str | None = None, region: str | None = None) -> boto3.Session:
    """The session every AWS call of one CLI run goes through."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        return boto3.Session(profile_name=profile or None, region_name=region or None)
    except ProfileNotFound as exc:
        raise ConfigError(
            str(exc), hint="list profiles with `aws configure list-profiles`, or unset AWS_PROFILE"
        ) from None


def client(service: str, boto3_session: boto3.Session | None = None, **kwargs):
    """A client of `service` with adaptive retries; endpoint overrides come from AWS_ENDPOINT_URL_*."""
    import boto3
    from botocore.config import Config

    session = boto3_session or boto3.Session()
    config = Config(retries=dict(RETRY_CONFIG), **kwargs.pop("config_kwargs", {}))
    return session.client(service, config=config, **kwargs)


def error_code(exc: BaseException, default: str = "") -> str:
    """The AWS error code of a botocore ClientError (`Error.Code`); `default` for any other exception."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", default))


def error_message(exc: BaseException) -> str:
    """The AWS error message of a botocore ClientError (`Error.Message`, "" when absent); the
    exception's text for any other exception."""
    response = getattr(exc, "response", None)
    if response is None:
        return str(exc)
    return str(response.get("Error", {}).get("Message", ""))


def checked_call(
    service_client,
    operation: str,
    params: dict,
    *,
    invalid: Callable[[list[str]], Exception],
    refused: Callable[[Exception], Exception],
) -> dict:
    """Make `operation` only if `params` pass the client's service model, which botocore checks only in
    part (orchestrator/service_model.py); raise `invalid(problems)` before sending, or `refused(error)`
    when the service answers with a ClientError."""
    from botocore import xform_name
    from botocore.exceptions import ClientError

    from orchestrator.service_model import validate_request

    problems = validate_request(service_client.meta.service_model.service_name, operation, params)
    if problems:
        raise invalid(problems)
    try:
        return getattr(service_client, xform_name(operation))(**params)
    except ClientError as exc:
        raise refused(exc) from None

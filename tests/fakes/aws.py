"""Fixtures for tests that reach AWS: a moto server on loopback, reset for each test, and a recorder of
every botocore call."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on loopback serving S3, IAM, STS, Cognito, ...; yields its URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(name="moto_url", scope="session")
def moto_url_fixture() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(name="aws")
def aws_fixture(moto_url: str, monkeypatch) -> str:
    """Every AWS service of the product goes to a freshly reset moto server; returns its URL."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    return moto_url


@pytest.fixture(name="api_calls")
def api_calls_fixture(monkeypatch) -> list[tuple[str, str, dict]]:
    """Every botocore call in this process from now on, as (service, operation, params); calls go through.

    `service` is the IAM prefix (the signing name: sagemaker, s3, cognito-idp, ...).
    """
    import botocore.client

    calls: list[tuple[str, str, dict]] = []
    real = botocore.client.BaseClient._make_api_call

    def record(self, operation_name, params):
        calls.append((self.meta.service_model.signing_name, operation_name, params))
        return real(self, operation_name, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    return calls

"""Where a run can be interrupted, and the faults injected there.

`Calls` numbers every effectful call one process makes: each botocore API call of the product's
session (S3, SageMaker, MTurk; reads too), each portal database write transaction, and each write
to a local store. Every call has two crash points, before it (it never happens) and after it (it happened,
but the process died before using the answer). `Calls(crash_at=k)` raises `SimulatedCrash`, a
BaseException nothing in the product catches, at point k.

`S3Faults` answers a seeded share of S3 requests with ThrottlingException, 503 SlowDown or 500
InternalError before they are sent; moto has no fault plan of its own. `fast_retries` removes
botocore's backoff sleeps so hundreds of retried calls take no time.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from unittest import mock

from orchestrator.backends.portal.db import Database
from orchestrator.storage import LocalStore

LOCAL_WRITES = ("put", "put_if_absent", "put_if_match", "delete")


class SimulatedCrash(BaseException):
    """The process died at an injected crash point."""


@dataclass
class Calls:
    """The crash points a run passes, in order; raises SimulatedCrash at point `crash_at` (1-based)."""

    crash_at: int | None = None
    points: list[str] = field(default_factory=list)

    def point(self, name: str, when: str) -> None:
        self.points.append(f"{when} {name}")
        if len(self.points) == self.crash_at:
            raise SimulatedCrash(f"crash point {self.crash_at}: {when} {name}")

    @property
    def crashed(self) -> bool:
        return self.crash_at is not None and len(self.points) >= self.crash_at

    @contextlib.contextmanager
    def hooked(self) -> Iterator[Calls]:
        """Count (and crash at) the calls made inside the block: database write transactions, local
        store writes, and the botocore calls of every session passed to `tap`."""
        global _active
        calls = self
        real_write = Database.write

        @contextlib.contextmanager
        def write(db: Database):
            calls.point("db write transaction", "before")
            with real_write(db) as session:
                yield session
            calls.point("db write transaction", "after")

        def local(name: str):
            real = getattr(LocalStore, name)

            def wrapped(store: LocalStore, key: str, *args, **kwargs):
                calls.point(f"local {name} {key}", "before")
                result = real(store, key, *args, **kwargs)
                calls.point(f"local {name} {key}", "after")
                return result

            return wrapped

        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.object(Database, "write", write))
            for name in LOCAL_WRITES:
                stack.enter_context(mock.patch.object(LocalStore, name, local(name)))
            _active = self
            stack.callback(globals().__setitem__, "_active", None)
            yield self


_active: Calls | None = None


def tap(boto3_session) -> None:
    """Let `Calls.hooked` see this session's botocore calls. Call it before the session makes any
    client: a client copies the session's event handlers when it is created."""

    def before(model, **_) -> None:
        if _active is not None:
            _active.point(f"{model.service_model.service_name}.{model.name}", "before")

    def after(model, **_) -> None:
        if _active is not None:
            _active.point(f"{model.service_model.service_name}.{model.name}", "after")

    boto3_session.events.register("before-call", before, unique_id="reliability-before")
    boto3_session.events.register("after-call", after, unique_id="reliability-after")


S3_FAULTS = (
    (400, "ThrottlingException", "Rate exceeded"),
    (503, "SlowDown", "Please reduce your request rate."),
    (500, "InternalError", "We encountered an internal error. Please try again."),
)


@dataclass
class SeededFaults:
    """A seeded share `rate` of some kind of request fails; `injected` counts the failures."""

    rate: float
    seed: int = 0
    injected: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def strikes(self) -> bool:
        """Whether this request fails (counted)."""
        if self.rng.random() >= self.rate:
            return False
        self.injected += 1
        return True


class S3Faults(SeededFaults):
    """Answers a share `rate` of the session's S3 requests with a retryable error, never sending them."""

    def install(self, boto3_session) -> None:
        boto3_session.events.register("before-send.s3", self._maybe_fail, unique_id="reliability-s3-faults")

    def _maybe_fail(self, request, **_):
        from botocore.awsrequest import AWSResponse

        if not self.strikes():
            return None
        status, code, message = self.rng.choice(S3_FAULTS)
        body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Raw(body))


class _Raw:
    """The raw body botocore reads from an AWSResponse."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_):
        yield self.data


@contextlib.contextmanager
def fast_retries() -> Iterator[None]:
    """botocore's retries without their sleeps: no backoff, no adaptive pacing."""
    from botocore.retries import adaptive, standard

    with (
        mock.patch.object(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0),
        mock.patch.object(adaptive.ClientRateLimiter, "on_sending_request", lambda self, request, **kw: None),
    ):
        yield


class DbFaults(SeededFaults):
    """Fails a seeded share of portal database write transactions as a locked SQLite database would,
    before the transaction begins (so it has no effect)."""

    @contextlib.contextmanager
    def installed(self) -> Iterator[DbFaults]:
        import sqlite3

        from sqlalchemy.exc import OperationalError

        faults = self
        real_write = Database.write

        @contextlib.contextmanager
        def write(db: Database):
            if faults.strikes():
                raise OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))
            with real_write(db) as session:
                yield session

        with mock.patch.object(Database, "write", write):
            yield self

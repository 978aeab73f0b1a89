"""Job records in the workspace: `<workspace>/jobs/<name>/job.json`.

A record is only ever written with a conditional put, so two scheduled polls never overwrite each
other and a crash leaves the last good record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import ValidationError

from orchestrator.errors import (
    InputError,
    NotFound,
    PreconditionFailed,
)
from orchestrator.jobs.record import JobRecord, utcnow
from orchestrator.redact import redact, secret_paths
from orchestrator.storage import ObjectStore, join_key, list_or_empty

logger = logging.getLogger(__name__)

# A conditional write that keeps losing means another process is busy with the same job.
MAX_WRITE_ATTEMPTS = 8


class JobStore:
    """Job records under `jobs/` in the workspace store."""

    def __init__(self, workspace: ObjectStore) -> None:
        self.workspace = workspace

    @staticmethod
    def key(name: str, filename: str = "job.json") -> str:
        # Ground Truth job names are unique case-insensitively; keep records the same way.
        return join_key("jobs", name.lower(), filename)

    def create(self, record: JobRecord) -> None:
        """Store a new record; PreconditionFailed if one with this name exists."""
        self.workspace.put_if_absent(self.key(record.name), _dump(record), "application/json")

    def load(self, name: str) -> tuple[JobRecord, str]:
        """The record and the ETag to write it back with."""
        key = self.key(name)
        try:
            data, etag = self.workspace.get_with_etag(key)
        except NotFound:
            raise NotFound(
                f"no job named {name!r} in {self.workspace.root_uri}", hint="`labeljob status` lists the jobs"
            ) from None
        try:
            return JobRecord.model_validate_json(data), etag
        except ValidationError as exc:
            raise InputError(
                f"{self.workspace.uri(key)}: job record is invalid: {exc.errors()[0]['msg']}"
            ) from None

    def get(self, name: str) -> JobRecord | None:
        try:
            return self.load(name)[0]
        except NotFound:
            return None

    def update(self, name: str, change: Callable[[JobRecord], None]) -> JobRecord:
        """Apply `change` to the latest record and write it back only if nobody wrote in between."""
        for _ in range(MAX_WRITE_ATTEMPTS):
            record, etag = self.load(name)
            change(record)
            record.updated_at = utcnow()
            try:
                self.workspace.put_if_match(self.key(name), _dump(record), etag, "application/json")
                return record
            except PreconditionFailed:
                continue
        raise PreconditionFailed(
            f"job {name}: the record kept changing while it was being updated",
            hint="another labeljob process is working on this job; try again when it is done",
        )

    def names(self) -> list[str]:
        names = set()
        for info in list_or_empty(self.workspace, "jobs/"):
            parts = info.key.split("/")
            if len(parts) == 3 and parts[2] == "job.json":
                names.add(parts[1])
        return sorted(names)

    def put_file(self, name: str, filename: str, data: bytes, content_type: str | None = None) -> str:
        """A file beside the record (label categories, rendered template); returns its URI."""
        key = self.key(name, filename)
        self.workspace.put(key, data, content_type)
        return self.workspace.uri(key)


def _dump(record: JobRecord) -> bytes:
    """The record as stored: never with a credential, token or presigned URL in it.

    Backends store none; what looks like one (in a spec's URL, or copied from a worker's answer)
    is masked rather than refused, so untrusted text can never stop a job from being recorded.
    """
    data = record.model_dump(mode="json")
    leaks = secret_paths(data)
    if not leaks:
        return record.model_dump_json(indent=2).encode()
    logger.warning("job %s: masked what looks like a secret at %s", record.name, ", ".join(leaks))
    return JobRecord.model_validate(redact(data)).model_dump_json(indent=2).encode()

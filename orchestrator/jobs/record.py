"""What labeljob remembers about a job: its record, its statuses, and the manifest items it runs on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import NotFound
from orchestrator.spec import JobSpec, parse_spec

JobStatus = Literal["launching", "in_progress", "completed", "failed", "stopped"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "stopped"})

RECORD_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ManifestItem:
    """One input manifest line: its dataset object id (the 0-based line index) and its source-ref."""

    object_id: str
    source_ref: str
    line: dict


class Counters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total: int = 0
    labeled: int = 0
    failed: int = 0


class JobRecord(BaseModel):
    """Everything labeljob remembers about one job."""

    model_config = ConfigDict(extra="forbid")

    version: int = RECORD_VERSION
    name: str
    backend: str
    spec: dict
    fingerprint: str
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    last_progress_at: datetime
    counters: Counters = Field(default_factory=Counters)
    failure_reason: str | None = None
    backend_state: dict = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict)

    @property
    def job_spec(self) -> JobSpec:
        return parse_spec(self.spec, source=f"job record {self.name}")

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def output_manifest(self) -> str:
        """The URI of the job's augmented manifest: labeljob's own, else Ground Truth's."""
        uri = self.outputs.get("manifest") or self.backend_state.get("output_manifest_uri")
        if not uri:
            raise NotFound(
                f"job {self.name} has no output manifest yet",
                hint=f"wait for it to end and be collected: `labeljob wait {self.name}`",
            )
        return uri

"""The protocol every workforce backend implements, and the values it exchanges with the job layer.

A backend launches and watches work; it never writes outputs. `poll` hands new answers to the job
layer, which stores them in Ground Truth's worker-response layout and consolidates them through
the one shared path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from orchestrator.consolidation import ObjectAnswers
    from orchestrator.jobs.record import JobRecord, JobStatus, ManifestItem
    from orchestrator.spec import JobSpec


@dataclass
class CostLine:
    item: str
    quantity: float
    unit_usd: float

    @property
    def total_usd(self) -> float:
        return round(self.quantity * self.unit_usd, 4)


@dataclass
class CostEstimate:
    """What a job will cost, line by line; prices are the backend's published or configured ones."""

    lines: list[CostLine]
    notes: list[str] = field(default_factory=list)

    @property
    def total_usd(self) -> float:
        return round(sum(line.total_usd for line in self.lines), 2)

    def as_dict(self) -> dict:
        return {
            "lines": [
                {"item": ln.item, "quantity": ln.quantity, "unit_usd": ln.unit_usd, "total_usd": ln.total_usd}
                for ln in self.lines
            ],
            "total_usd": self.total_usd,
            "notes": self.notes,
        }


@dataclass
class LaunchPlan:
    """What `launch` will do, shown by `--dry-run`: the exact requests, in order, and the cost."""

    requests: list[dict]
    estimate: CostEstimate
    warnings: list[str] = field(default_factory=list)


GOLD_SCORES = "gold_scores"
# Worker id -> why gold removed it from the workforce, for `labeljob status` (docs/mturk.md, "Gold tasks").
GOLD_REMOVED = "gold_revoked"


@dataclass
class PollResult:
    """A backend's view of a job: its status, counters and the answers that arrived since last time.

    `backend_state` holds whatever the backend must remember between polls (HIT ids, cursors); the
    job layer merges it into the job record. A backend that runs gold tasks puts each worker's
    `GoldScore.as_dict()` under `backend_state[GOLD_SCORES]`; finishing the job weights workers
    and writes the workers report with them. `dropped_workers` names workers whose answers the
    backend took back since the last poll: the job layer removes them from the stored answers.
    """

    status: JobStatus
    total: int
    labeled: int
    failed: int = 0
    failure_reason: str | None = None
    answers: list[ObjectAnswers] = field(default_factory=list)
    backend_state: dict = field(default_factory=dict)
    # The labeling round of an object answered again after a reject (docs/review.md), by object id:
    # its answers go to that worker-response iteration, and only the latest iteration counts.
    iterations: dict[str, int] = field(default_factory=dict)
    unlabeled_ids: list[str] = field(default_factory=list)
    dropped_workers: list[str] = field(default_factory=list)


OVERLAP = "overlap"


def overlap_state(final_objects: int, final_answers: int, workers_per_object: int) -> dict:
    """What an adaptive job's poll reports under `backend_state["overlap"]` for `labeljob status`:
    objects whose answers are final (`settled`: by the stopping rule or at max_workers), their
    answers, and the share saved against `workers_per_object` answers each."""
    fixed = final_objects * workers_per_object
    return {
        OVERLAP: {
            "settled": final_objects,
            "answers_final": final_answers,
            "saved_vs_fixed": round(1 - final_answers / fixed, 3) if fixed else None,
        }
    }


class Backend(Protocol):
    """A workforce. Every method takes everything it needs from its arguments and its constructor."""

    name: str

    def validate(self, spec: JobSpec) -> list[tuple[str, str]]:
        """Backend-specific problems with the spec as (key, message); empty when it can launch."""

    def estimate(self, spec: JobSpec, n_objects: int) -> CostEstimate: ...

    def plan(self, spec: JobSpec, items: list[ManifestItem] | None, record: JobRecord) -> LaunchPlan:
        """The requests `launch` would make; makes no remote call. `items` is None when reading the
        manifest would itself need a remote call (a dry run on an s3:// manifest)."""

    def check_items(self, spec: JobSpec, items: list[ManifestItem]) -> None:
        """Raise InputError or BackendError when these objects cannot be launched; no remote call.

        Called before the job record exists, so a refused manifest leaves nothing behind.
        """

    def launch(self, spec: JobSpec, items: list[ManifestItem], record: JobRecord) -> dict:
        """Start the work; idempotent. Returns the backend state to store in the job record.

        `launch_job` has passed these items through `check_items` first.
        """

    def poll(self, spec: JobSpec, record: JobRecord) -> PollResult: ...

    def stop(self, spec: JobSpec, record: JobRecord) -> None: ...

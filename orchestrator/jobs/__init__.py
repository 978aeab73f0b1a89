"""Job records, the backend protocol the job layer owns, the job store, the lifecycle, and finishing."""

from orchestrator.jobs.backend import GOLD_SCORES, Backend, CostEstimate, CostLine, LaunchPlan, PollResult
from orchestrator.jobs.finish import finish_job
from orchestrator.jobs.lifecycle import (
    check_spec,
    job_output_prefix,
    launch_job,
    new_record,
    poll_job,
    read_items,
    status_row,
    stuck_hint,
    wait_job,
)
from orchestrator.jobs.record import Counters, JobRecord, ManifestItem, utcnow
from orchestrator.jobs.store import JobStore

__all__ = [
    "GOLD_SCORES",
    "Backend",
    "CostEstimate",
    "CostLine",
    "Counters",
    "JobRecord",
    "JobStore",
    "LaunchPlan",
    "ManifestItem",
    "PollResult",
    "check_spec",
    "finish_job",
    "job_output_prefix",
    "launch_job",
    "new_record",
    "poll_job",
    "read_items",
    "status_row",
    "stuck_hint",
    "utcnow",
    "wait_job",
]

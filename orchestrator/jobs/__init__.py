"""Job records, the backend protocol the job layer owns, the job store, the lifecycle, and finishing.

Names are imported from their module on first use: reading records never imports consolidation.
"""

from orchestrator import lazy_exports

_EXPORTS = {
    "backend": [
        "OVERLAP",
        "Backend",
        "CostEstimate",
        "CostLine",
        "LaunchPlan",
        "PollResult",
        "overlap_state",
        "GOLD_REMOVED",
        "GOLD_SCORES",
    ],
    "finish": ["FOLLOWUP_ID_KEY", "FOLLOWUP_MANIFEST", "finish_job"],
    "lifecycle": [
        "check_spec",
        "job_output_prefix",
        "launch_job",
        "new_record",
        "poll_job",
        "read_items",
        "status_row",
        "stuck_hint",
        "wait_job",
    ],
    "record": ["Counters", "JobRecord", "ManifestItem", "utcnow"],
    "store": ["JobStore"],
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)

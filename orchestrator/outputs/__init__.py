"""Ground Truth's output layout, the augmented manifest, the one path that consolidates stored answers
and writes outputs, and the exports. Names are imported from their module on first use."""

from orchestrator import lazy_exports

_EXPORTS = {
    "augmented_manifest": [
        "AugmentedLine",
        "augmented_line",
        "augmented_line_text",
        "creation_date",
        "detect_attr",
        "label_value",
        "read_augmented_manifest",
        "workers_report_csv",
        "workers_report_rows",
        "write_augmented_manifest",
        "detection_attrs",
        "dump_lines",
    ],
    "consolidate": [
        "OutputTargets",
        "consolidate_and_write",
        "decide",
        "parse_label_categories",
        "read_source_lines",
        "stopping_rule",
    ],
    "gold": ["GOLD_ID_PREFIX", "GoldItem", "read_gold"],
    "exports": ["FORMATS", "export_lines", "export_splits", "load_label_map", "parse_label_map"],
    "layout": [
        "OUTPUT_MANIFEST_KEY",
        "WORKER_RESPONSE_PREFIX",
        "WORKERS_REPORT_KEY",
        "consolidation_entry",
        "drop_worker_responses",
        "read_worker_responses",
        "read_worker_response_columns",
        "worker_response_key",
        "write_consolidation_response",
        "write_worker_responses",
        "job_output_folder",
        "read_answers",
        "read_answer_columns",
        "read_object",
    ],
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)

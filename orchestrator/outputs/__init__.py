"""Ground Truth's output layout, the augmented manifest, the one path that consolidates stored answers
and writes outputs, and the exports."""

from orchestrator.outputs.augmented_manifest import (
    AugmentedLine,
    augmented_line,
    creation_date,
    detect_attr,
    detection_attrs,
    dump_lines,
    label_value,
    read_augmented_manifest,
    workers_report_csv,
    workers_report_rows,
    write_augmented_manifest,
)
from orchestrator.outputs.consolidate import (
    OutputTargets,
    consolidate_and_write,
    parse_label_categories,
    read_source_lines,
)
from orchestrator.outputs.exports import FORMATS, export_lines, load_label_map, parse_label_map
from orchestrator.outputs.layout import (
    OUTPUT_MANIFEST_KEY,
    WORKER_RESPONSE_PREFIX,
    WORKERS_REPORT_KEY,
    consolidation_entry,
    job_output_folder,
    read_answers,
    read_object,
    read_worker_responses,
    worker_response_key,
    write_consolidation_response,
    write_worker_responses,
)

__all__ = [
    "AugmentedLine",
    "FORMATS",
    "OUTPUT_MANIFEST_KEY",
    "OutputTargets",
    "WORKERS_REPORT_KEY",
    "WORKER_RESPONSE_PREFIX",
    "augmented_line",
    "consolidate_and_write",
    "consolidation_entry",
    "creation_date",
    "detect_attr",
    "detection_attrs",
    "dump_lines",
    "export_lines",
    "job_output_folder",
    "label_value",
    "load_label_map",
    "parse_label_categories",
    "parse_label_map",
    "read_answers",
    "read_augmented_manifest",
    "read_object",
    "read_source_lines",
    "read_worker_responses",
    "worker_response_key",
    "workers_report_csv",
    "workers_report_rows",
    "write_augmented_manifest",
    "write_consolidation_response",
    "write_worker_responses",
]

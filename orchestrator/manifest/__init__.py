"""Input manifests: JSON Lines I/O and source-ref rules, building from a bucket, checking, image headers.

`from orchestrator.manifest import build_manifest`; the modules are `jsonl`, `build`, `inventory`,
`check` and `images` (docs/manifests.md).
"""

from orchestrator.manifest.build import (
    SKIP_REASONS,
    BuildOptions,
    BuildReport,
    Destination,
    assign_split,
    build_manifest,
    parse_extensions,
    parse_size,
    parse_splits,
    plan_destination,
    probe_image,
)
from orchestrator.manifest.check import MIN_IMAGES_PER_LABEL, MIN_LABEL_BALANCE, CheckReport, check_manifests
from orchestrator.manifest.images import HEADER_BYTES, ImageHeader, NeedMoreBytes, sniff
from orchestrator.manifest.inventory import Inventory, open_inventory
from orchestrator.manifest.jsonl import (
    DEFAULT_WORKERS,
    object_checker,
    parse_line,
    read_lines,
    read_manifest,
    write_jsonl,
)

__all__ = [
    "DEFAULT_WORKERS",
    "HEADER_BYTES",
    "MIN_IMAGES_PER_LABEL",
    "MIN_LABEL_BALANCE",
    "SKIP_REASONS",
    "BuildOptions",
    "BuildReport",
    "CheckReport",
    "Destination",
    "ImageHeader",
    "Inventory",
    "NeedMoreBytes",
    "assign_split",
    "build_manifest",
    "check_manifests",
    "object_checker",
    "open_inventory",
    "parse_extensions",
    "parse_line",
    "read_lines",
    "parse_size",
    "parse_splits",
    "plan_destination",
    "probe_image",
    "read_manifest",
    "sniff",
    "write_jsonl",
]

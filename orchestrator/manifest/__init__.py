"""Input manifests: JSON Lines I/O and source-ref rules, building from a bucket, checking, image headers.

`from orchestrator.manifest import build_manifest`; the modules are `jsonl`, `build`, `inventory`,
`check` and `images` (docs/manifests.md). Names are imported from their module on first use
(`orchestrator.lazy_exports`): reading a manifest does not load the bucket listing or the inventory
readers.
"""

from orchestrator import lazy_exports

_EXPORTS = {
    "build": [
        "SKIP_REASONS",
        "BuildOptions",
        "BuildReport",
        "Destination",
        "assign_split",
        "build_manifest",
        "parse_extensions",
        "parse_size",
        "parse_splits",
        "plan_destination",
        "probe_image",
    ],
    "check": ["MIN_IMAGES_PER_LABEL", "MIN_LABEL_BALANCE", "CheckReport", "check_manifests"],
    "images": ["HEADER_BYTES", "ImageHeader", "NeedMoreBytes", "sniff"],
    "inventory": ["Inventory", "open_inventory"],
    "jsonl": [
        "DEFAULT_WORKERS",
        "object_checker",
        "parse_line",
        "read_lines",
        "read_manifest",
        "write_jsonl",
    ],
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)

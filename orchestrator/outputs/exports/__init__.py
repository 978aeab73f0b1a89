"""Exports of an augmented manifest to COCO JSON, Pascal VOC XML, YOLO text files and CSV.

All formats write through an ObjectStore, so the destination is a folder or an `s3://` prefix,
and none downloads an image. The label map and the confidence threshold apply to every format.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from orchestrator.outputs.augmented_manifest import AugmentedLine
from orchestrator.outputs.exports.coco import write_coco
from orchestrator.outputs.exports.csv_table import write_csv
from orchestrator.outputs.exports.dataset import build_dataset
from orchestrator.outputs.exports.label_map import LabelMap, load_label_map, parse_label_map
from orchestrator.outputs.exports.voc import write_voc
from orchestrator.outputs.exports.yolo import write_yolo
from orchestrator.storage import ObjectStore

WRITERS = {"coco": write_coco, "voc": write_voc, "yolo": write_yolo, "csv": write_csv}
FORMATS = tuple(WRITERS)

__all__ = ["FORMATS", "ExportSummary", "LabelMap", "export_lines", "load_label_map", "parse_label_map"]


@dataclass
class ExportSummary:
    format: str
    destination: str
    images: int
    boxes: int
    categories: list[str]
    files: int
    dropped_by_label_map: int
    below_min_confidence: int
    warnings: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def export_lines(
    lines: Iterable[AugmentedLine],
    format: str,
    store: ObjectStore,
    *,
    label_map: LabelMap | None = None,
    min_confidence: float | None = None,
) -> ExportSummary:
    """Write `lines` in `format` (coco, voc, yolo or csv) into `store`."""
    if format not in WRITERS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    dataset = build_dataset(lines, label_map, min_confidence)
    keys, warnings = WRITERS[format](dataset, store)
    return ExportSummary(
        format=format,
        destination=store.root_uri,
        images=len(dataset.images),
        boxes=dataset.n_boxes,
        categories=dataset.categories,
        files=len(keys),
        dropped_by_label_map=dataset.dropped_by_label_map,
        below_min_confidence=dataset.below_min_confidence,
        warnings=warnings,
    )

"""Exports of augmented manifests to COCO JSON, Pascal VOC XML, YOLO text files and CSV.

All formats write through an ObjectStore, so the destination is a folder or an `s3://` prefix;
only YOLO with an image reader copies images. The class list, the label map and the confidence
threshold apply to every format and every split alike. See docs/consolidation.md, "Exports".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass

from orchestrator.consolidation import ObjectAnswers
from orchestrator.outputs.augmented_manifest import AugmentedLine
from orchestrator.outputs.exports.coco import write_coco
from orchestrator.outputs.exports.csv_table import write_csv
from orchestrator.outputs.exports.dataset import WriteOptions, build_dataset
from orchestrator.outputs.exports.label_map import LabelMap, load_label_map, parse_label_map
from orchestrator.outputs.exports.voc import write_voc
from orchestrator.outputs.exports.yolo import write_yolo
from orchestrator.storage import ObjectStore

WRITERS = {"coco": write_coco, "voc": write_voc, "yolo": write_yolo, "csv": write_csv}
FORMATS = tuple(WRITERS)

__all__ = [
    "FORMATS",
    "ExportSummary",
    "LabelMap",
    "export_lines",
    "export_splits",
    "load_label_map",
    "parse_label_map",
]


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
    splits: dict[str, int]

    def as_dict(self) -> dict:
        return asdict(self)


def export_splits(
    splits: Mapping[str, Iterable[AugmentedLine]],
    format: str,
    store: ObjectStore,
    *,
    labels: list[str] | None = None,
    label_map: LabelMap | None = None,
    min_confidence: float | None = None,
    images_root: str | None = None,
    answers: Iterable[ObjectAnswers] | None = None,
    fetch_image: Callable[[str], bytes] | None = None,
) -> ExportSummary:
    """Write the lines of each split in `format` (coco, voc, yolo or csv) into `store`.

    `labels` is the job's label list (class ids); `images_root` and `answers` (each worker's own
    boxes) are COCO's, `fetch_image` (copy the images) YOLO's. A split named "" is an export of
    one manifest, without split names in the files.
    """
    if format not in WRITERS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    for given, name, only in (
        (images_root, "images_root", "coco"),
        (answers, "answers", "coco"),
        (fetch_image, "fetch_image", "yolo"),
    ):
        if given is not None and format != only:
            raise ValueError(f"{name} is for the {only} format, not {format}")
    dataset = build_dataset(splits, label_map, min_confidence, labels=labels, answers=answers)
    options = WriteOptions(images_root=images_root, fetch_image=fetch_image)
    keys, warnings = WRITERS[format](dataset, store, options)
    return ExportSummary(
        format=format,
        destination=store.root_uri,
        images=len(dataset.images),
        boxes=dataset.n_boxes,
        categories=dataset.categories,
        files=len(keys),
        dropped_by_label_map=dataset.dropped_by_label_map,
        below_min_confidence=dataset.below_min_confidence,
        warnings=dataset.warnings + warnings,
        # Images per named split; an export of one manifest has none.
        splits={
            split: sum(1 for i in dataset.images if i.split == split)
            for split in filter(None, dataset.splits)
        },
    )


def export_lines(lines: Iterable[AugmentedLine], format: str, store: ObjectStore, **options) -> ExportSummary:
    """Write the lines of one manifest in `format`; `options` as for `export_splits`."""
    return export_splits({"": lines}, format, store, **options)

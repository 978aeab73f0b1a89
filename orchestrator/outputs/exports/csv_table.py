"""CSV of every box: `annotations.csv`, or `annotations_<split>.csv` per split.

Columns `image,label,xmin,ymin,xmax,ymax,confidence`. `image` is the source-ref; coordinates are
Ground Truth's 0-based pixels with `xmax = left + width` and `ymax = top + height` (exclusive
edges). An image without boxes gets one row with only `image` filled, so negatives survive a
round trip through the table.
"""

from __future__ import annotations

import csv
import io

from orchestrator.outputs.exports.dataset import Dataset, WriteOptions
from orchestrator.storage import ObjectStore

COLUMNS = ["image", "label", "xmin", "ymin", "xmax", "ymax", "confidence"]


def file_name(split: str) -> str:
    return f"annotations_{split}.csv" if split else "annotations.csv"


def write_csv(dataset: Dataset, store: ObjectStore, options: WriteOptions) -> tuple[list[str], list[str]]:
    """Write one CSV per split; returns the keys written and warnings (none)."""
    keys = []
    for split in dataset.splits:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for image in (image for image in dataset.images if image.split == split):
            if not image.boxes:
                writer.writerow([image.source_ref] + [""] * (len(COLUMNS) - 1))
            for b in image.boxes:
                writer.writerow(
                    [
                        image.source_ref,
                        b.label,
                        b.left,
                        b.top,
                        b.left + b.width,
                        b.top + b.height,
                        b.confidence,
                    ]
                )
        store.put(file_name(split), buffer.getvalue().encode(), "text/csv")
        keys.append(file_name(split))
    return keys, []

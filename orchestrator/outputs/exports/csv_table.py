"""One CSV of every box: `image,label,xmin,ymin,xmax,ymax,confidence`.

`image` is the source-ref; coordinates are Ground Truth's 0-based pixels with `xmax = left +
width` and `ymax = top + height` (exclusive edges). An image without boxes gets one row with
only `image` filled, so negatives survive a round trip through the table.
"""

from __future__ import annotations

import csv
import io

from orchestrator.outputs.exports.dataset import Dataset
from orchestrator.storage import ObjectStore

FILE_NAME = "annotations.csv"
COLUMNS = ["image", "label", "xmin", "ymin", "xmax", "ymax", "confidence"]


def write_csv(dataset: Dataset, store: ObjectStore) -> tuple[list[str], list[str]]:
    """Write `annotations.csv`; returns the keys written and warnings (none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for image in dataset.images:
        if not image.boxes:
            writer.writerow([image.source_ref] + [""] * (len(COLUMNS) - 1))
        for b in image.boxes:
            writer.writerow(
                [image.source_ref, b.label, b.left, b.top, b.left + b.width, b.top + b.height, b.confidence]
            )
    store.put(FILE_NAME, buffer.getvalue().encode(), "text/csv")
    return [FILE_NAME], []

"""YOLO (Ultralytics) labels: `labels/<stem>.txt` per image, `classes.txt`, `data.yaml`, `images.csv`.

Each label line is `class cx cy w h`, the box centre and size divided by the image size (six
decimals, clipped to [0, 1]); class is the 0-based index in `classes.txt`. An image without boxes
gets an empty file (a background image). Images are not downloaded: `images.csv` names the file
each source-ref must be saved as under `images/` so its stem matches its label file. Images of
unknown size cannot be normalized and are skipped with a warning.
"""

from __future__ import annotations

import csv
import io
import json

from orchestrator.outputs.exports.dataset import Dataset, ExportBox, ExportImage
from orchestrator.storage import ObjectStore, join_key

LABELS = "labels"


def _unit(value: float) -> str:
    return f"{min(max(value, 0.0), 1.0):.6f}"


def yolo_line(box: ExportBox, class_index: int, width: int, height: int) -> str:
    cx = (box.left + box.width / 2) / width
    cy = (box.top + box.height / 2) / height
    return f"{class_index} {_unit(cx)} {_unit(cy)} {_unit(box.width / width)} {_unit(box.height / height)}"


def yolo_labels(image: ExportImage, width: int, height: int, categories: list[str]) -> str:
    index = {name: i for i, name in enumerate(categories)}
    return "".join(yolo_line(b, index[b.label], width, height) + "\n" for b in image.boxes)


def data_yaml(categories: list[str]) -> str:
    # JSON strings are valid double-quoted YAML scalars, so class names need no YAML library.
    names = "".join(f"  {i}: {json.dumps(name, ensure_ascii=False)}\n" for i, name in enumerate(categories))
    return (
        "# Save each image as images/<image> (see images.csv); labels/ holds the boxes.\n"
        "path: .\ntrain: images\nval: images\n"
        f"nc: {len(categories)}\nnames:\n{names}"
    )


def write_yolo(dataset: Dataset, store: ObjectStore) -> tuple[list[str], list[str]]:
    """Write the label files, classes.txt, data.yaml and images.csv; returns keys written and warnings."""
    keys, warnings = [], []
    index = io.StringIO()
    writer = csv.writer(index, lineterminator="\n")
    writer.writerow(["image", "label_file", "source-ref"])
    for image in dataset.images:
        if not image.width or not image.height:
            warnings.append(f"{image.source_ref}: image size unknown, no YOLO label file written")
            continue
        key = join_key(LABELS, image.stem + ".txt")
        store.put(
            key, yolo_labels(image, image.width, image.height, dataset.categories).encode(), "text/plain"
        )
        keys.append(key)
        writer.writerow([image.stem + image.extension, key, image.source_ref])
    files = {
        "classes.txt": "".join(name + "\n" for name in dataset.categories),
        "data.yaml": data_yaml(dataset.categories),
        "images.csv": index.getvalue(),
    }
    for key, text in files.items():
        store.put(key, text.encode(), "text/plain" if key != "images.csv" else "text/csv")
        keys.append(key)
    return keys, warnings

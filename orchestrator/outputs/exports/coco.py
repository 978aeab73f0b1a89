"""COCO detection JSON: one `annotations.json` for the whole manifest.

`file_name` is the image's source-ref (an `s3://` URI stays as it is; nothing is downloaded),
`bbox` is `[x, y, width, height]` in pixels with a top-left origin, `score` is the crowd's
confidence, and category ids start at 1 in class-list order. Images whose size is unknown get
width and height 0. Loads in pycocotools and faster-coco-eval.
"""

from __future__ import annotations

import json

from orchestrator.outputs.exports.dataset import Dataset
from orchestrator.storage import ObjectStore

FILE_NAME = "annotations.json"


def coco_document(dataset: Dataset) -> dict:
    category_ids = {name: i for i, name in enumerate(dataset.categories, start=1)}
    images, annotations = [], []
    for image_id, image in enumerate(dataset.images, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": image.source_ref,
                "width": image.width or 0,
                "height": image.height or 0,
            }
        )
        for box in image.boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[box.label],
                    "bbox": [box.left, box.top, box.width, box.height],
                    "area": box.width * box.height,
                    "iscrowd": 0,
                    "score": box.confidence,
                }
            )
    return {
        "info": {"description": "labeljob export"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": name, "supercategory": ""} for name, i in category_ids.items()],
    }


def write_coco(dataset: Dataset, store: ObjectStore) -> tuple[list[str], list[str]]:
    """Write `annotations.json`; returns the keys written and warnings."""
    unsized = sum(1 for image in dataset.images if image.width is None)
    warnings = [f"{unsized} image(s) have no known size: width and height written as 0"] if unsized else []
    data = json.dumps(coco_document(dataset), ensure_ascii=False).encode()
    store.put(FILE_NAME, data, "application/json")
    return [FILE_NAME], warnings

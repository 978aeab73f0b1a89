"""COCO detection JSON: `annotations.json`, or `annotations_<split>.json` per split.

`file_name` is the image's path relative to the images root (by default the longest folder
prefix all source-refs share, recorded in `info.images_root`), so the file works once the
images are downloaded under one folder; `source_ref` keeps the full URI. `bbox` is `[x, y,
width, height]` in pixels with a top-left origin, `score` the crowd's confidence, and category
ids start at 1 in class-list order. A per-worker export has each worker's own boxes, with
`worker_id` and no `score`. Images whose size is unknown get width and height 0. Loads in
pycocotools and faster-coco-eval.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from urllib.parse import unquote

from orchestrator.errors import InputError
from orchestrator.outputs.exports.dataset import Dataset, ExportBox, ExportImage, WriteOptions
from orchestrator.storage import ObjectStore


def file_name(split: str) -> str:
    return f"annotations_{split}.json" if split else "annotations.json"


def common_root(source_refs: list[str]) -> str:
    """The longest prefix ending in `/` that every source-ref shares ("" when there is none)."""
    prefix = posixpath.commonprefix(source_refs)
    return prefix[: prefix.rfind("/") + 1]


def images_root(dataset: Dataset, root: str | None) -> str:
    """`root` (a local path taken as its file:// URI; must hold every image) or the images' common root."""
    refs = [image.source_ref for image in dataset.images]
    if root is None:
        return common_root(refs)
    if root and "://" not in root:
        root = Path(root).expanduser().resolve().as_uri()
    root = root if root.endswith("/") or not root else root + "/"
    outside = next((ref for ref in refs if not ref.startswith(root)), None)
    if outside is not None:
        raise InputError(
            f"{outside}: not under --images-root {root}",
            hint="give a prefix every source-ref starts with, or leave --images-root out",
        )
    return root


def _relative(source_ref: str, root: str) -> str:
    """The path of `source_ref` under `root`; file:// URIs are percent-encoded, S3 keys are raw."""
    rest = source_ref[len(root) :]
    return unquote(rest) if source_ref.startswith("file://") else rest


def _annotation(number: int, image_id: int, category_id: int, box: ExportBox) -> dict:
    annotation = {
        "id": number,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [box.left, box.top, box.width, box.height],
        "area": box.width * box.height,
        "iscrowd": 0,
    }
    if box.confidence is not None:
        annotation["score"] = box.confidence
    if box.worker_id is not None:
        annotation["worker_id"] = box.worker_id
    return annotation


def coco_document(dataset: Dataset, images: list[ExportImage], root: str) -> dict:
    category_ids = {name: i for i, name in enumerate(dataset.categories, start=1)}
    image_rows, annotations = [], []
    for image_id, image in enumerate(images, start=1):
        image_rows.append(
            {
                "id": image_id,
                "file_name": _relative(image.source_ref, root),
                "width": image.width or 0,
                "height": image.height or 0,
                "source_ref": image.source_ref,
            }
        )
        for box in image.boxes:
            annotations.append(_annotation(len(annotations) + 1, image_id, category_ids[box.label], box))
    return {
        "info": {"description": "labeljob export", "images_root": root},
        "licenses": [],
        "images": image_rows,
        "annotations": annotations,
        "categories": [{"id": i, "name": name, "supercategory": ""} for name, i in category_ids.items()],
    }


def write_coco(dataset: Dataset, store: ObjectStore, options: WriteOptions) -> tuple[list[str], list[str]]:
    """Write one COCO file per split; returns the keys written and warnings."""
    root = images_root(dataset, options.images_root)
    unsized = sum(1 for image in dataset.images if image.width is None)
    warnings = [f"{unsized} image(s) have no known size: width and height written as 0"] if unsized else []
    keys = []
    for split in dataset.splits:
        images = [image for image in dataset.images if image.split == split]
        data = json.dumps(coco_document(dataset, images, root), ensure_ascii=False).encode()
        store.put(file_name(split), data, "application/json")
        keys.append(file_name(split))
    return keys, warnings

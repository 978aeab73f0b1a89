"""YOLO (Ultralytics): `labels/`, an image list per split, `data.yaml`, `classes.txt`, `images.csv`.

Each label line is `class cx cy w h`, the box centre and size divided by the image size (six
decimals, clipped to [0, 1]); class is the 0-based index in `classes.txt`. An image without boxes
gets an empty file (a background image). Ultralytics finds an image's labels by replacing its
`images` folder with `labels`, so an image goes to `images/<split>/<stem><ext>` and its labels
to `labels/<split>/<stem>.txt` (no `<split>/` for an export of one manifest).

`data.yaml` points `train`, `val` and `test` at the image lists of the splits named so
(`train.txt`, `validation.txt`, ...; `images.txt` for one manifest), whose `./` lines Ultralytics
resolves against the list's folder, and has no `path`, so Ultralytics takes this file's folder.
With an image reader the images are copied into place; otherwise `images.csv` says which
source-ref goes where. Images of unknown size cannot be normalized and are skipped with a warning.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from orchestrator.errors import InputError, StorageError
from orchestrator.outputs.exports.dataset import Dataset, ExportBox, ExportImage, WriteOptions
from orchestrator.storage import ObjectStore, join_key

LABELS = "labels"
IMAGES = "images"
# The split names Ultralytics' `train`, `val` and `test` keys take.
ROLES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
# Copying images is latency-bound on S3.
COPY_THREADS = 16


def _unit(value: float) -> str:
    return f"{min(max(value, 0.0), 1.0):.6f}"


def yolo_line(box: ExportBox, class_index: int, width: int, height: int) -> str:
    cx = (box.left + box.width / 2) / width
    cy = (box.top + box.height / 2) / height
    return f"{class_index} {_unit(cx)} {_unit(cy)} {_unit(box.width / width)} {_unit(box.height / height)}"


def yolo_labels(image: ExportImage, width: int, height: int, categories: list[str]) -> str:
    index = {name: i for i, name in enumerate(categories)}
    return "".join(yolo_line(b, index[b.label], width, height) + "\n" for b in image.boxes)


def split_roles(splits: list[str]) -> dict[str, str]:
    """Ultralytics' key (`train`, `val`, `test`) for each split; InputError for a name it has none for."""
    if splits == [""]:
        return {"train": "", "val": ""}
    roles: dict[str, str] = {}
    for split in splits:
        role = ROLES.get(split.lower())
        if role is None or role in roles:
            raise InputError(
                f"split {split!r}: "
                + ("not a train, val or test split" if role is None else f"a second {role}"),
                hint="name the manifests train, validation (or val) and test: train.manifest, ...",
            )
        roles[role] = split
    if "train" not in roles:
        raise InputError("no train split among " + ", ".join(splits), hint="add train.manifest")
    return roles


def list_name(split: str) -> str:
    return f"{split or IMAGES}.txt"


def data_yaml(categories: list[str], roles: dict[str, str]) -> str:
    # JSON strings are valid double-quoted YAML scalars, so class names need no YAML library.
    names = "".join(f"  {i}: {json.dumps(name, ensure_ascii=False)}\n" for i, name in enumerate(categories))
    lists = "".join(f"{role}: {list_name(split)}\n" for role, split in roles.items())
    return (
        "# Each list names its images as ./images/...; labels/ mirrors images/.\n"
        f"{lists}nc: {len(categories)}\nnames:\n{names}"
    )


def _copy(store: ObjectStore, fetch: Callable[[str], bytes], image: ExportImage, key: str) -> str | None:
    """Copy one image to `key`; a warning when it cannot be read."""
    try:
        store.put(key, fetch(image.source_ref))
    except StorageError as exc:
        return f"{image.source_ref}: not copied ({exc.message}); left out of the image list"
    return None


def write_yolo(dataset: Dataset, store: ObjectStore, options: WriteOptions) -> tuple[list[str], list[str]]:
    """Write labels, image lists, data.yaml, classes.txt and images.csv; returns keys and warnings."""
    roles = split_roles(dataset.splits)
    keys, warnings = [], []
    if "val" not in roles:
        roles["val"] = roles["train"]
        warnings.append(f"no validation split: data.yaml validates on {list_name(roles['train'])}")
    placed: list[tuple[ExportImage, str]] = []
    for image in dataset.images:
        if not image.width or not image.height:
            warnings.append(f"{image.source_ref}: image size unknown, no YOLO label file written")
            continue
        key = join_key(LABELS, image.split, image.stem + ".txt")
        store.put(
            key, yolo_labels(image, image.width, image.height, dataset.categories).encode(), "text/plain"
        )
        keys.append(key)
        placed.append((image, join_key(IMAGES, image.split, image.stem + image.extension)))
    if options.fetch_image is not None:
        copy = partial(_copy, store, options.fetch_image)
        with ThreadPoolExecutor(max_workers=COPY_THREADS) as pool:
            failed = list(pool.map(copy, [image for image, _ in placed], [key for _, key in placed]))
        warnings += [warning for warning in failed if warning]
        keys += [key for (_, key), warning in zip(placed, failed, strict=True) if not warning]
        placed = [item for item, warning in zip(placed, failed, strict=True) if not warning]
    index = io.StringIO()
    writer = csv.writer(index, lineterminator="\n")
    writer.writerow(["image", "label_file", "source-ref"])
    files = {}
    for split in dataset.splits:
        images = [(image, key) for image, key in placed if image.split == split]
        files[list_name(split)] = "".join(f"./{key}\n" for _, key in images)
        for image, key in images:
            writer.writerow([key, join_key(LABELS, image.split, image.stem + ".txt"), image.source_ref])
    files |= {
        "classes.txt": "".join(name + "\n" for name in dataset.categories),
        "data.yaml": data_yaml(dataset.categories, roles),
        "images.csv": index.getvalue(),
    }
    for key, text in files.items():
        store.put(key, text.encode(), "text/csv" if key.endswith(".csv") else "text/plain")
        keys.append(key)
    return keys, warnings

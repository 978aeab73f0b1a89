"""Pascal VOC XML: one `Annotations/<stem>.xml` per image.

Coordinates follow the VOC devkit: 1-based pixel indices, inclusive, so a Ground Truth box
`left, top, width, height` becomes `xmin = left + 1`, `ymin = top + 1`, `xmax = left + width`,
`ymax = top + height`. `<filename>` is the name to give the downloaded image in `JPEGImages/`,
`<path>` its source-ref. VOC has no confidence; filter with `--min-confidence` instead. An
export of several splits lists each split's images in `ImageSets/Main/<split>.txt`, as the
devkit does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from orchestrator.outputs.exports.dataset import Dataset, ExportImage, WriteOptions
from orchestrator.storage import ObjectStore, join_key

FOLDER = "Annotations"
IMAGE_SETS = "ImageSets/Main"


def _add(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = str(text)
    return element


def voc_xml(image: ExportImage) -> bytes:
    root = ET.Element("annotation")
    _add(root, "folder", "JPEGImages")
    _add(root, "filename", image.stem + image.extension)
    _add(root, "path", image.source_ref)
    _add(_add(root, "source"), "database", "labeljob")
    size = _add(root, "size")
    _add(size, "width", image.width or 0)
    _add(size, "height", image.height or 0)
    _add(size, "depth", image.depth or 3)
    _add(root, "segmented", 0)
    for box in image.boxes:
        obj = _add(root, "object")
        _add(obj, "name", box.label)
        _add(obj, "pose", "Unspecified")
        _add(obj, "truncated", 0)
        _add(obj, "difficult", 0)
        bndbox = _add(obj, "bndbox")
        _add(bndbox, "xmin", box.left + 1)
        _add(bndbox, "ymin", box.top + 1)
        _add(bndbox, "xmax", box.left + box.width)
        _add(bndbox, "ymax", box.top + box.height)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_voc(dataset: Dataset, store: ObjectStore, options: WriteOptions) -> tuple[list[str], list[str]]:
    """Write one XML file per image, and the image sets of the splits; returns keys written and warnings."""
    keys = []
    for image in dataset.images:
        key = join_key(FOLDER, image.stem + ".xml")
        store.put(key, voc_xml(image), "application/xml")
        keys.append(key)
    for split in filter(None, dataset.splits):
        key = join_key(IMAGE_SETS, split + ".txt")
        stems = "".join(image.stem + "\n" for image in dataset.images if image.split == split)
        store.put(key, stems.encode(), "text/plain")
        keys.append(key)
    unsized = sum(1 for image in dataset.images if image.width is None)
    warnings = (
        [f"{unsized} image(s) have no known size: <width> and <height> written as 0"] if unsized else []
    )
    return keys, warnings

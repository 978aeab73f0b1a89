"""What every export format writes: images, their boxes and one class list, with safe file names.

Built from augmented manifest lines after the label map and the confidence threshold are applied.
Boxes stay in Ground Truth's pixels (top-left origin, `left, top, width, height`); each format
converts them itself.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from orchestrator.outputs.augmented_manifest import AugmentedLine
from orchestrator.outputs.exports.label_map import LabelMap

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSION = re.compile(r"^\.[A-Za-z0-9]{1,5}$")
MAX_STEM = 100


@dataclass(frozen=True)
class ExportBox:
    label: str
    left: int
    top: int
    width: int
    height: int
    confidence: float


@dataclass
class ExportImage:
    """One image: its source-ref, a collision-free file stem, its size if known, and its boxes."""

    source_ref: str
    stem: str
    extension: str
    width: int | None
    height: int | None
    depth: int | None
    boxes: list[ExportBox]


@dataclass
class Dataset:
    images: list[ExportImage]
    categories: list[str]
    dropped_by_label_map: int = 0
    below_min_confidence: int = 0

    @property
    def n_boxes(self) -> int:
        return sum(len(image.boxes) for image in self.images)


def _split_name(source_ref: str) -> tuple[str, str]:
    """The sanitized stem and extension of the last path segment of a URI or path."""
    # file:// URIs are percent-encoded; S3 keys are raw (a `#` or `?` in them is part of the name).
    path = unquote(urlparse(source_ref).path) if source_ref.startswith("file://") else source_ref
    name = posixpath.basename(path)
    stem, ext = posixpath.splitext(name)
    if not _EXTENSION.match(ext):
        stem, ext = name, ""
    stem = _UNSAFE.sub("_", stem).lstrip(".")[:MAX_STEM] or "image"
    return stem, ext.lower()


def file_stems(source_refs: list[str]) -> list[tuple[str, str]]:
    """A file stem and extension per source-ref, unique ignoring case.

    Images whose names clash get a short hash of their source-ref appended (`img-1a2b3c4d`), so
    a name depends only on the images that share it; a source-ref listed twice gets `-2`, `-3`.
    """
    names = [_split_name(ref) for ref in source_refs]
    refs_by_stem: dict[str, set[str]] = {}
    for ref, (stem, _) in zip(source_refs, names, strict=True):
        refs_by_stem.setdefault(stem.lower(), set()).add(ref)
    result, used = [], set()
    for ref, (stem, ext) in zip(source_refs, names, strict=True):
        if len(refs_by_stem[stem.lower()]) > 1:
            stem = f"{stem}-{hashlib.sha1(ref.encode(), usedforsecurity=False).hexdigest()[:8]}"
        unique, n = stem, 1
        while unique.lower() in used:
            n += 1
            unique = f"{stem}-{n}"
        used.add(unique.lower())
        result.append((unique, ext))
    return result


def _categories(lines: list[AugmentedLine], label_map: LabelMap) -> list[str]:
    """Class names in class-id order, mapped; a merged class takes its first source's place."""
    pairs = sorted({(int(k), v) for line in lines for k, v in line.metadata.class_map.items()})
    names = [label_map.get(name, name) for _, name in pairs]
    return list(dict.fromkeys(name for name in names if name is not None))


def build_dataset(
    lines: Iterable[AugmentedLine], label_map: LabelMap | None = None, min_confidence: float | None = None
) -> Dataset:
    """The export's images and class list; boxes below `min_confidence` or mapped to nothing are left out."""
    lines = list(lines)
    label_map = label_map or {}
    dataset = Dataset(images=[], categories=_categories(lines, label_map))
    stems = file_stems([line.source_ref for line in lines])
    dropped: Counter[str] = Counter()
    for line, (stem, ext) in zip(lines, stems, strict=True):
        boxes = []
        for annotation, obj in zip(line.label.annotations, line.metadata.objects, strict=True):
            label = label_map.get(line.class_name(annotation.class_id), line.class_name(annotation.class_id))
            if label is None:
                dropped["label_map"] += 1
                continue
            if min_confidence is not None and obj.confidence < min_confidence:
                dropped["confidence"] += 1
                continue
            boxes.append(
                ExportBox(
                    label,
                    annotation.left,
                    annotation.top,
                    annotation.width,
                    annotation.height,
                    obj.confidence,
                )
            )
        size = line.label.image_size[0] if line.label.image_size else None
        dataset.images.append(
            ExportImage(
                source_ref=line.source_ref,
                stem=stem,
                extension=ext,
                width=size.width if size else None,
                height=size.height if size else None,
                depth=size.depth if size else None,
                boxes=boxes,
            )
        )
    dataset.dropped_by_label_map = dropped["label_map"]
    dataset.below_min_confidence = dropped["confidence"]
    return dataset

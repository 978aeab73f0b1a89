"""What every export format writes: images, their boxes and one class list, with safe file names.

Built from augmented manifest lines (one list per split) after the label map and the confidence
threshold are applied. Boxes stay in Ground Truth's pixels (top-left origin, `left, top, width,
height`); each format converts them itself. With workers' answers, an image's boxes are each
worker's own, carrying the worker id, instead of the consolidated ones.

The class list is the job's label list, so a class has the same id in every split and format: the
labels given, else the manifest's `class-map`s, whose ids are indexes in that list. Ground Truth
writes only the classes a line uses, so a split that never saw a class cannot name it and the
labels must be given.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlparse

from orchestrator.consolidation import ObjectAnswers, WorkerAnswer
from orchestrator.errors import InputError
from orchestrator.outputs.augmented_manifest import AugmentedLine
from orchestrator.outputs.exports.label_map import LabelMap

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSION = re.compile(r"^\.[A-Za-z0-9]{1,5}$")
MAX_STEM = 100


@dataclass(frozen=True)
class ExportBox:
    """A consolidated box (with its confidence) or one worker's box (with the worker id)."""

    label: str
    left: float
    top: float
    width: float
    height: float
    confidence: float | None
    worker_id: str | None = None


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
    split: str = ""


@dataclass(frozen=True)
class WriteOptions:
    """What some formats take besides the dataset: COCO's images root, YOLO's image reader."""

    images_root: str | None = None
    # Reads an image's bytes by source-ref; given, YOLO copies the images beside their labels.
    fetch_image: Callable[[str], bytes] | None = None


@dataclass
class Dataset:
    images: list[ExportImage]
    categories: list[str]
    # In export order; `[""]` for an export of one manifest.
    splits: list[str] = field(default_factory=lambda: [""])
    dropped_by_label_map: int = 0
    below_min_confidence: int = 0
    warnings: list[str] = field(default_factory=list)

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


def class_list(lines: list[AugmentedLine], labels: list[str] | None) -> tuple[list[str], list[str]]:
    """The job's class names in class-id order, and warnings; see the module docstring."""
    names_by_id: dict[int, set[str]] = {}
    for line in lines:
        for key, name in line.metadata.class_map.items():
            names_by_id.setdefault(int(key), set()).add(name)
    if labels is not None:
        unknown = sorted({name for names in names_by_id.values() for name in names} - set(labels))
        if unknown:
            raise InputError(
                f"class {unknown[0]!r} of the manifest is not in the job's labels ({', '.join(labels)})",
                hint="give the label list of the job that produced this manifest",
            )
        return list(labels), []
    ids_by_name: dict[str, set[int]] = {}
    for class_id, names in names_by_id.items():
        for name in names:
            ids_by_name.setdefault(name, set()).add(class_id)
    if any(len(names) > 1 for names in names_by_id.values()) or any(len(i) > 1 for i in ids_by_name.values()):
        # Lines of several jobs: no one label list; names decide, each at its first id.
        pairs = sorted((class_id, name) for class_id, names in names_by_id.items() for name in names)
        merged = list(dict.fromkeys(name for _, name in pairs))
        return merged, [
            f"the class-maps of these lines disagree on class ids; classes are {', '.join(merged)}"
        ]
    missing = sorted(set(range(max(names_by_id, default=-1) + 1)) - set(names_by_id))
    if missing:
        raise InputError(
            f"class id {missing[0]} has no name in the manifest's class-map "
            f"(no line uses it), so the classes after it would change ids",
            hint="give the job's labels with --labels (its spec's list or Ground Truth's label file)",
        )
    return [next(iter(names_by_id[i])) for i in sorted(names_by_id)], []


def _mapped(names: list[str], label_map: LabelMap) -> list[str]:
    """Class names after the label map; a merged class takes its first source's place."""
    return list(dict.fromkeys(n for n in (label_map.get(name, name) for name in names) if n is not None))


def _worker_boxes(answers: list[WorkerAnswer]) -> list[ExportBox]:
    return [
        ExportBox(box.label, box.left, box.top, box.width, box.height, None, answer.worker_id)
        for answer in answers
        for box in answer.boxes
    ]


def _consolidated_boxes(line: AugmentedLine) -> list[ExportBox]:
    return [
        ExportBox(
            line.class_name(annotation.class_id),
            annotation.left,
            annotation.top,
            annotation.width,
            annotation.height,
            obj.confidence,
        )
        for annotation, obj in zip(line.label.annotations, line.metadata.objects, strict=True)
    ]


def build_dataset(
    splits: Mapping[str, Iterable[AugmentedLine]],
    label_map: LabelMap | None = None,
    min_confidence: float | None = None,
    *,
    labels: list[str] | None = None,
    answers: Iterable[ObjectAnswers] | None = None,
) -> Dataset:
    """The export's images, split by split, and its class list.

    Boxes below `min_confidence` or mapped to nothing are left out. With `answers`, each image
    gets its workers' boxes (matched by source-ref) instead of the consolidated ones.
    """
    named = [(split, line) for split, lines in splits.items() for line in lines]
    label_map = label_map or {}
    names, warnings = class_list([line for _, line in named], labels)
    dataset = Dataset(images=[], categories=_mapped(names, label_map), splits=list(splits), warnings=warnings)
    by_ref = None if answers is None else {obj.source_ref: obj.answers for obj in answers}
    stems = file_stems([line.source_ref for _, line in named])
    dropped: Counter[str] = Counter()
    for (split, line), (stem, ext) in zip(named, stems, strict=True):
        if by_ref is None:
            raw = _consolidated_boxes(line)
        else:
            raw = _worker_boxes(by_ref.get(line.source_ref, []))
        boxes = []
        for box in raw:
            label = label_map.get(box.label, box.label)
            if label is None:
                dropped["label_map"] += 1
            elif label not in dataset.categories:
                dropped["unknown_label"] += 1  # a worker's label the job's class list lacks
            elif (
                min_confidence is not None and box.confidence is not None and box.confidence < min_confidence
            ):
                dropped["confidence"] += 1
            else:
                boxes.append(replace(box, label=label))
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
                split=split,
            )
        )
    if by_ref is not None:
        unmatched = len(set(by_ref) - {image.source_ref for image in dataset.images})
        if unmatched:
            warnings.append(f"{unmatched} answered image(s) are not in the manifest: left out")
    if dropped["unknown_label"]:
        warnings.append(
            f"{dropped['unknown_label']} worker box(es) with a label not in the classes: left out"
        )
    dataset.dropped_by_label_map = dropped["label_map"]
    dataset.below_min_confidence = dropped["confidence"]
    return dataset

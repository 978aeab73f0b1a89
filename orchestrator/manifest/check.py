"""Checking manifests line by line, and the dataset health of labeled ones (`labeljob manifest check`)."""

from __future__ import annotations

import contextlib
import posixpath
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import AccessDenied, NotFound
from orchestrator.manifest.build import map_in_order
from orchestrator.manifest.jsonl import DEFAULT_WORKERS, parse_line, read_lines
from orchestrator.storage import (
    ObjectStore,
)

# Dataset health thresholds.
MIN_IMAGES_PER_LABEL = 50
MIN_LABEL_BALANCE = 0.5
MIN_IMAGE_SIDE = 256
MIN_BOX_WIDTH = 30
# Ground Truth's limits on an input manifest (docs/groundtruth.md, "Limits").
GT_MAX_LINE_CHARS = 100_000
GT_MAX_OBJECTS = 100_000
_MAX_KEPT_MESSAGES = 1000


@dataclass
class CheckReport:
    """Everything `manifest check` found; `errors` and `warnings` keep the first 1,000 of each."""

    manifests: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    warnings: list[str] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    health: list[dict[str, Any]] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < _MAX_KEPT_MESSAGES:
            self.errors.append(message)

    def warn(self, message: str) -> None:
        if len(self.warnings) < _MAX_KEPT_MESSAGES:
            self.warnings.append(message)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.error_count == 0,
            "manifests": self.manifests,
            "error_count": self.error_count,
            "errors": self.errors,
            "warnings": self.warnings,
            "splits": self.splits,
            "health": self.health,
        }


def check_manifests(
    manifests: Iterable[tuple[str, ObjectStore, str]],
    *,
    verify: Callable[[str], str | None] | None = None,
    workers: int = DEFAULT_WORKERS,
    on_line: Callable[[], None] | None = None,
) -> CheckReport:
    """Check every line of each `(name, store, key)` manifest, and report the health of labeled ones.

    Errors read `<name>:<line>: <message>`; a manifest that cannot be read is one error, and the others
    are still checked. `verify`, from `object_checker`, checks that each object exists, on `workers`
    threads. Split sizes come from a `split` key on the lines or, with several manifests, from their
    file names. Memory grows with the number of lines only by the source-refs kept to find duplicates.
    """
    manifests = list(manifests)
    report = CheckReport()
    first_seen: dict[str, str] = {}
    health: dict[str, _Health] = {}
    splits: Counter[str] = Counter()
    for name, store, key in manifests:
        stats = {"manifest": name, "lines": 0, "objects": 0}
        report.manifests.append(stats)
        file_split = _split_name(name) if len(manifests) > 1 else None
        rows: Iterator[tuple[int, dict[str, Any], str | None]]
        if verify is None:
            rows = (
                (number, row, None)
                for number, row in _checked_lines(name, store, key, stats, report, on_line)
            )
        else:
            rows = map_in_order(
                lambda item: (item[0], item[1], verify(item[1]["source-ref"])),
                _checked_lines(name, store, key, stats, report, on_line),
                workers,
            )
        try:
            with contextlib.closing(rows):
                for number, row, missing in rows:
                    where = f"{name}:{number}"
                    stats["objects"] += 1
                    if missing:
                        report.error(f"{where}: {missing}")
                    ref = row["source-ref"]
                    if ref in first_seen:
                        report.error(f"{where}: duplicate source-ref {ref}, first at {first_seen[ref]}")
                    else:
                        first_seen[ref] = where
                    split = row["split"] if isinstance(row.get("split"), str) else file_split
                    if split:
                        splits[split] += 1
                    for attr in label_attributes(row):
                        problem = health.setdefault(attr, _Health(attr)).add(row)
                        if problem:
                            report.error(f"{where}: {attr}{problem}")
        except (NotFound, AccessDenied) as exc:
            report.error(exc.message)
            continue
        if stats["objects"] > GT_MAX_OBJECTS:
            report.warn(f"{name}: {stats['objects']} objects, over Ground Truth's 100,000 per job")
    report.errors.sort(key=_error_order)
    report.splits = dict(sorted(splits.items()))
    report.health = [stats.report() for stats in health.values()]
    return report


def _checked_lines(
    name: str,
    store: ObjectStore,
    key: str,
    stats: dict[str, Any],
    report: CheckReport,
    on_line: Callable[[], None] | None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The well-formed lines of one manifest; the others become errors in `report`."""
    for number, raw in read_lines(store, key):
        stats["lines"] = number
        if on_line:
            on_line()
        if len(raw) > GT_MAX_LINE_CHARS and len(raw.decode("utf-8", "replace")) > GT_MAX_LINE_CHARS:
            report.warn(f"{name}:{number}: longer than Ground Truth's limit of 100,000 characters")
        try:
            row = parse_line(raw, first=number == 1)
        except ValueError as exc:
            report.error(f"{name}:{number}: {exc}")
            continue
        if row is not None:
            yield number, row


def _split_name(name: str) -> str:
    base = posixpath.basename(name.rstrip("/"))
    for suffix in (".manifest", ".jsonl", ".json"):
        base = base.removesuffix(suffix)
    return base


def _error_order(message: str) -> tuple[str, int]:
    # "<name>:<line>: ..." sorts by file, then by line number as a number.
    match = re.match(r"(.*?):(\d+): ", message)
    return (match.group(1), int(match.group(2))) if match else (message, 0)


def label_attributes(row: dict[str, Any]) -> list[str]:
    """The label attributes of an augmented manifest line: `<attr>` with `annotations` and
    `<attr>-metadata` with `class-map`."""
    return [
        attr
        for attr, value in row.items()
        if isinstance(value, dict)
        and "annotations" in value
        and isinstance(row.get(f"{attr}-metadata"), dict)
        and "class-map" in row[f"{attr}-metadata"]
    ]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Health:
    """Per-label counts and quality flags of one label attribute over all lines that carry it."""

    def __init__(self, attr: str) -> None:
        self.attr = attr
        self.images = 0
        self.images_without_boxes = 0
        self.images_without_size = 0
        self.small_images = 0
        self.label_images: Counter[str] = Counter()
        self.label_boxes: Counter[str] = Counter()
        self.narrow_boxes = 0
        self.boxes_outside = 0

    def add(self, row: dict[str, Any]) -> str | None:
        """Count one line; returns what is malformed in it (after the attribute name), or None."""
        value, class_map = row[self.attr], row[f"{self.attr}-metadata"]["class-map"]
        annotations = value["annotations"]
        if not isinstance(class_map, dict):
            return "-metadata.class-map: must be an object"
        if not isinstance(annotations, list):
            return ".annotations: must be an array"
        for i, box in enumerate(annotations):
            if not isinstance(box, dict):
                return f".annotations[{i}]: must be an object"
            for name in ("class_id", "left", "top", "width", "height"):
                if not _number(box.get(name)):
                    return f".annotations[{i}]: {name!r} must be a number"
            if box["width"] < 0 or box["height"] < 0:
                return f".annotations[{i}]: negative width or height"
        size = value.get("image_size")
        width = height = None
        if isinstance(size, list) and size and isinstance(size[0], dict):
            width, height = size[0].get("width"), size[0].get("height")
            if not (_number(width) and _number(height)):
                return ".image_size[0]: 'width' and 'height' must be numbers"

        self.images += 1
        if width is None or height is None:
            self.images_without_size += 1
        elif min(width, height) < MIN_IMAGE_SIDE:
            self.small_images += 1
        if not annotations:
            self.images_without_boxes += 1
        labels = set()
        for box in annotations:
            label = str(class_map.get(str(int(box["class_id"])), box["class_id"]))
            labels.add(label)
            self.label_boxes[label] += 1
            if box["width"] < MIN_BOX_WIDTH:
                self.narrow_boxes += 1
            if (
                width is not None
                and height is not None
                and (
                    box["left"] < 0
                    or box["top"] < 0
                    or box["left"] + box["width"] > width
                    or box["top"] + box["height"] > height
                )
            ):
                self.boxes_outside += 1
        self.label_images.update(labels)
        return None

    def report(self) -> dict[str, Any]:
        labels = sorted(self.label_images, key=lambda label: (-self.label_images[label], label))
        balance = None
        if labels:
            common, rare = labels[0], labels[-1]
            ratio = self.label_images[rare] / self.label_images[common]
            balance = {
                "rarest": rare,
                "most_common": common,
                "ratio": round(ratio, 4),
                "below_1_to_2": ratio < MIN_LABEL_BALANCE,
            }
        return {
            "label_attribute": self.attr,
            "images": self.images,
            "boxes": sum(self.label_boxes.values()),
            "labels": [
                {"label": label, "images": self.label_images[label], "boxes": self.label_boxes[label]}
                for label in labels
            ],
            f"labels_under_{MIN_IMAGES_PER_LABEL}_images": [
                label for label in labels if self.label_images[label] < MIN_IMAGES_PER_LABEL
            ],
            "balance": balance,
            "images_without_boxes": self.images_without_boxes,
            f"images_under_{MIN_IMAGE_SIDE}_px": self.small_images,
            "images_without_size": self.images_without_size,
            f"boxes_narrower_than_{MIN_BOX_WIDTH}_px": self.narrow_boxes,
            "boxes_outside_image": self.boxes_outside,
        }

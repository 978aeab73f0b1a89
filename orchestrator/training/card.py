"""A dataset card for a labeled manifest, in the sections of a Hugging Face dataset card (docs/training.md).

Everything in it is measured from the manifest, `manifest check` and, for a job of the workspace,
its record and workers report; what labeljob cannot know (the licence, the curators) is left as a
field to fill in.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.errors import LabeljobError
from orchestrator.manifest import MIN_IMAGES_PER_LABEL, check_manifests
from orchestrator.storage import open_object
from orchestrator.training.data import class_names, detect_attribute, read_source, resolve_source
from orchestrator.training.png import bar_chart_png

if TYPE_CHECKING:
    from orchestrator.jobs import JobRecord, JobStore
    from orchestrator.training.data import TrainingSource

# Bins of a box's size, sqrt(width x height) in pixels; 32 and 96 are COCO's small/medium/large limits.
SIZE_EDGES = (0, 16, 32, 64, 96, 128, 256, 512)
MAX_LISTED_ISSUES = 20
TO_FILL = "TO FILL IN"


@dataclass
class DatasetCard:
    markdown: str
    histogram_png: bytes
    images: int
    classes: int


def size_bins(lines: list[dict], attribute: str) -> list[tuple[str, int]]:
    """Boxes per size bin, as (`"16-32 px"`, count)."""
    counts = [0] * len(SIZE_EDGES)
    for line in lines:
        for box in (line.get(attribute) or {}).get("annotations") or []:
            side = math.sqrt(max(0.0, float(box.get("width", 0))) * max(0.0, float(box.get("height", 0))))
            counts[sum(1 for edge in SIZE_EDGES[1:] if side >= edge)] += 1
    names = [f"{a}-{b} px" for a, b in zip(SIZE_EDGES, SIZE_EDGES[1:], strict=False)] + [
        f"{SIZE_EDGES[-1]}+ px"
    ]
    return list(zip(names, counts, strict=True))


def build_card(source: str, jobs: JobStore, *, histogram_name: str, boto3_session=None) -> DatasetCard:
    """The card of a job of the workspace (by name) or of a manifest, with its box-size histogram."""
    src = resolve_source(source, jobs)
    unreadable: list[str] = []
    lines = read_source(src.manifest, boto3_session, unreadable)
    attribute = src.label_attribute or detect_attribute(lines)
    classes = src.classes or class_names(lines, attribute)
    report = check_manifests([(src.manifest, *open_object(src.manifest, boto3_session))])
    health = next((h for h in report.health if h["label_attribute"] == attribute), None) or {}
    per_label = {row["label"]: row for row in health.get("labels", [])}
    bins = size_bins(lines, attribute)
    sections = [
        _front_matter(src, len(lines)),
        f"# Dataset Card for {src.name}\n",
        "## Dataset Description\n",
        f"- **Source:** `{src.manifest}`" + (f" (labeljob job `{src.name}`)" if src.record else ""),
        f"- **Task:** object detection, boxes under the label attribute `{attribute}`",
        f"- **Images:** {len(lines)}; **boxes:** {health.get('boxes', 0)}; **classes:** {len(classes)}",
        f"- **Licence:** {TO_FILL} (also `license:` above)\n",
        "## Dataset Structure\n",
        "### Data Fields\n",
        f"Ground Truth's augmented manifest: `source-ref`, `{attribute}` (`image_size`, `annotations` of "
        f"`class_id`, `left`, `top`, `width`, `height` in pixels) and `{attribute}-metadata` (`class-map`, "
        "`objects[].confidence`, `human-annotated`, `creation-date`, `job-name`).\n",
        "### Classes\n",
        "| class_id | class | images | boxes |",
        "|---|---|---|---|",
        *(_class_row(i, name, per_label.get(name, {})) for i, name in enumerate(classes)),
        "",
        "### Data Splits\n",
        "| split | images |",
        "|---|---|",
        *(
            f"| {name} | {count} |"
            for name, count in (report.splits or {"all (no split key)": len(lines)}).items()
        ),
        "",
        "### Box Sizes\n",
        f"![Boxes per size bin, sqrt(width x height)]({histogram_name})\n",
        "| size | boxes |",
        "|---|---|",
        *(f"| {name} | {count} |" for name, count in bins),
        "",
        "## Dataset Creation\n",
        "### Annotations\n",
        *_label_sources(src.record, lines, attribute, boto3_session),
        "",
        "## Considerations for Using the Data\n",
        "### Other Known Limitations\n",
        *_known_issues(report.as_dict(), health),
        "",
        "## Additional Information\n",
        f"- **Dataset curators:** {TO_FILL}",
        f"- **Licensing information:** {TO_FILL}",
        f"- **Citation information:** {TO_FILL}",
    ]
    markdown = "\n".join(sections) + "\n"
    return DatasetCard(markdown, bar_chart_png([count for _, count in bins]), len(lines), len(classes))


def _class_row(class_id: int, name: str, counts: dict) -> str:
    return f"| {class_id} | {name} | {counts.get('images', 0)} | {counts.get('boxes', 0)} |"


def _front_matter(src: TrainingSource, images: int) -> str:
    size = next(
        name for limit, name in ((1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K")) if images < limit
    )
    return (
        "---\n"
        f"license: other  # {TO_FILL}: the licence of the images and of the labels\n"
        f"pretty_name: {src.name}\n"
        "task_categories:\n- object-detection\n"
        f"size_categories:\n- {size if images < 1e5 else 'n>100K'}\n"
        "---\n"
    )


def _label_sources(record: JobRecord | None, lines: list[dict], attribute: str, boto3_session) -> list[str]:
    metadata = [line.get(f"{attribute}-metadata") or {} for line in lines]
    human = Counter(str(m.get("human-annotated", "unknown")) for m in metadata)
    dates = sorted(str(m["creation-date"]) for m in metadata if m.get("creation-date"))
    adjusted = Counter(str(m["adjustment-status"]) for m in metadata if m.get("adjustment-status"))
    out = [
        "- **Labeling jobs:** " + ", ".join(sorted({str(m.get("job-name", "unknown")) for m in metadata})),
        "- **Human-annotated:** " + ", ".join(f"{k} {v}" for k, v in sorted(human.items())),
    ]
    if dates:
        out.append(f"- **Labeled between:** {dates[0]} and {dates[-1]}")
    if record is None:
        out.append(
            "- **Workforce, workers, consolidation:** not in the manifest; labeljob records them for its jobs"
        )
    else:
        spec = record.job_spec
        team = f", team {spec.workforce.team}" if spec.workforce.team else ""
        out += [
            f"- **Workforce:** {record.backend} ({spec.workforce.type}{team})",
            f"- **Workers:** {spec.task.workers_per_object} an image; {_worker_count(record, boto3_session)}",
            "- **Consolidation:** " + _consolidation(record),
        ]
    reviews = []
    if record is not None and record.job_spec.mturk is not None:
        reviews.append(f"MTurk review policy `{record.job_spec.mturk.review_policy}`")
    if adjusted:
        reviews.append("adjustment job: " + ", ".join(f"{k} {v}" for k, v in sorted(adjusted.items())))
    out.append("- **Review decisions:** " + ("; ".join(reviews) if reviews else "none recorded"))
    return out


def _consolidation(record: JobRecord) -> str:
    spec = record.job_spec
    if spec.groundtruth is not None and spec.groundtruth.consolidation == "aws":
        return "Ground Truth's ACS-BoundingBox (AWS)"
    c = spec.consolidation
    return (
        f"labeljob IoU voting: iou_threshold {c.iou_threshold}, min_support {c.min_support}, "
        f"coordinates {c.coordinates}, weighting {c.weighting}"
    )


def _worker_count(record: JobRecord, boto3_session) -> str:
    uri = record.outputs.get("workers_report")
    if not uri:
        return "distinct workers not recorded"
    try:
        store, key = open_object(uri, boto3_session)
        rows = list(csv.DictReader(io.StringIO(store.get(key).decode())))
    except LabeljobError as exc:
        return f"workers report unreadable ({exc.message})"
    low = sum(1 for row in rows if row.get("low_quality") == "True")
    return f"{len(rows)} distinct workers, {low} flagged low quality (workers report `{uri}`)"


def _known_issues(report: dict, health: dict) -> list[str]:
    """`manifest check`'s errors, warnings and health flags, one bullet each."""
    issues = [*report["errors"][:MAX_LISTED_ISSUES], *report["warnings"][:MAX_LISTED_ISSUES]]
    if report["error_count"] > MAX_LISTED_ISSUES:
        issues.append(
            f"... {report['error_count'] - MAX_LISTED_ISSUES} more errors (`labeljob manifest check`)"
        )
    under = next((v for k, v in health.items() if k.startswith("labels_under_")), [])
    if under:
        issues.append(f"classes under {MIN_IMAGES_PER_LABEL} images: {', '.join(under)}")
    balance = health.get("balance") or {}
    if balance.get("below_1_to_2"):
        rare, common = balance["rarest"], balance["most_common"]
        issues.append(f"class imbalance: {rare} has {balance['ratio']:.2f} of the images of {common}")
    for key, text in (
        ("images_without_boxes", "images with no box"),
        ("images_without_size", "images without image_size"),
        ("boxes_outside_image", "boxes reaching outside their image"),
    ):
        if health.get(key):
            issues.append(f"{health[key]} {text}")
    for key, value in health.items():
        if value and key.startswith(("images_under_", "boxes_narrower_than_")):
            issues.append(f"{value} {key.replace('_', ' ')}")
    return [f"- {issue}" for issue in issues] or ["- none found by `labeljob manifest check`"]

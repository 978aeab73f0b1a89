"""`labeljob consolidate` and `labeljob export`: from worker answers to training-ready files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from orchestrator.cli._state import State, state
from orchestrator.consolidation import AnswerReport
from orchestrator.errors import InputError, UsageError
from orchestrator.outputs import (
    FORMATS,
    OUTPUT_MANIFEST_KEY,
    OutputTargets,
    consolidate_and_write,
    detect_attr,
    export_lines,
    job_output_folder,
    load_label_map,
    parse_label_categories,
    read_answers,
    read_augmented_manifest,
    read_source_lines,
)
from orchestrator.spec import ConsolidationSpec
from orchestrator.storage import is_s3_uri, open_object, open_store

MAX_LISTED_BAD_LINES = 10
DEFAULT_ATTR = "bbox"


def _session(st: State, *uris: str | None):
    """The run's boto3 session when any location is on S3; None keeps local runs free of AWS."""
    return st.session if any(uri and is_s3_uri(uri) for uri in uris) else None


def _params(**values) -> ConsolidationSpec:
    try:
        return ConsolidationSpec(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "--" + str(err["loc"][0]).replace("_", "-")
        raise UsageError(f"{name}: {err['msg']}") from None


def consolidate(
    ctx: typer.Context,
    input: Annotated[
        str,
        typer.Argument(
            help="A consolidation payload (JSON array or JSON Lines) or a Ground Truth job's output "
            "folder; a path or s3:// URI.",
            metavar="INPUT",
        ),
    ],
    out: Annotated[str, typer.Option("--out", help="The augmented manifest to write.", metavar="OUTPUT")],
    labels: Annotated[
        str,
        typer.Option(
            "--labels", help="Label categories file (Ground Truth's, or a JSON list).", metavar="LABELS"
        ),
    ],
    attr: Annotated[
        str | None,
        typer.Option(
            "--attr", help="Label attribute in the output; default: the job's own, else bbox.", metavar="ATTR"
        ),
    ] = None,
    job_name: Annotated[
        str | None,
        typer.Option("--job-name", help="Job name in the metadata; default: INPUT's name.", metavar="NAME"),
    ] = None,
    workers_report: Annotated[
        str | None,
        typer.Option("--workers-report", help="Write per-worker agreement to this CSV.", metavar="CSV"),
    ] = None,
    iou_threshold: Annotated[float, typer.Option(help="IoU for two boxes to be one object.")] = 0.5,
    min_support: Annotated[float, typer.Option(help="Share of (weighted) workers a box needs.")] = 0.5,
    coordinates: Annotated[
        str, typer.Option(help="How member boxes are combined.", metavar="median|mean")
    ] = "median",
    weighting: Annotated[
        str, typer.Option(help="Worker weights from agreement, or none.", metavar="none|agreement")
    ] = "agreement",
    input_manifest: Annotated[
        str | None,
        typer.Option(
            help="The job's input manifest: source-refs and keys to pass through, by line index.",
            metavar="MANIFEST",
        ),
    ] = None,
) -> None:
    """Consolidate workers' boxes by IoU voting into an augmented manifest in Ground Truth's format."""
    st = state(ctx)
    params = _params(
        iou_threshold=iou_threshold, min_support=min_support, coordinates=coordinates, weighting=weighting
    )
    session = _session(st, input, out, labels, workers_report, input_manifest)
    label_store, label_key = open_object(labels, session)
    label_list = parse_label_categories(label_store.get(label_key), label_store.uri(label_key))
    report = AnswerReport()
    source_lines: dict[str, dict] = {}
    if input_manifest:
        source_lines = read_source_lines(*open_object(input_manifest, session))
    folder = job_output_folder(input, session)
    if folder is not None and not input_manifest:
        if not folder.exists(OUTPUT_MANIFEST_KEY):
            raise InputError(
                f"{folder.uri(OUTPUT_MANIFEST_KEY)}: not found",
                hint="give the job's input manifest with --input-manifest",
            )
        source_lines = read_source_lines(folder, OUTPUT_MANIFEST_KEY)
    source_refs = {object_id: line["source-ref"] for object_id, line in source_lines.items()}
    objects = read_answers(input, source_refs, label_list, report, session)
    attr = attr or next(filter(None, map(detect_attr, source_lines.values())), None) or DEFAULT_ATTR
    name = job_name or Path(input.rstrip("/")).stem
    targets = OutputTargets(
        manifest=open_object(out, session),
        workers_report=open_object(workers_report, session) if workers_report else None,
    )
    outputs = consolidate_and_write(
        objects,
        source_lines,
        label_list,
        attr=attr,
        job_name=name,
        targets=targets,
        params=params,
        report=report,
    )
    if report.problems:
        st.output.warn(f"{report.problems} answer problem(s) repaired or dropped; see `repairs`")
    st.output.data(outputs.summary)


def export(
    ctx: typer.Context,
    manifest: Annotated[
        str, typer.Argument(help="An augmented manifest (path or s3:// URI).", metavar="MANIFEST")
    ],
    fmt: Annotated[str, typer.Option("--format", help="Export format.", metavar="coco|voc|yolo|csv")],
    out: Annotated[str, typer.Option("--out", help="Folder or s3:// prefix to write into.", metavar="DIR")],
    label_map: Annotated[
        str | None,
        typer.Option(
            "--label-map", help="CSV of from,to rows; an empty `to` drops the class.", metavar="CSV"
        ),
    ] = None,
    min_confidence: Annotated[
        float | None,
        typer.Option("--min-confidence", min=0.0, max=1.0, help="Leave out less confident boxes."),
    ] = None,
    attr: Annotated[
        str | None,
        typer.Option("--attr", help="Label attribute to export; default: detected.", metavar="ATTR"),
    ] = None,
) -> None:
    """Export an augmented manifest to COCO JSON, Pascal VOC XML, YOLO text files or CSV."""
    if fmt not in FORMATS:
        raise UsageError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    st = state(ctx)
    session = _session(st, manifest, out, label_map)
    mapping = load_label_map(*open_object(label_map, session)) if label_map else None
    bad_lines: list[InputError] = []
    lines = [line for _, line in read_augmented_manifest(*open_object(manifest, session), attr, bad_lines)]
    for problem in bad_lines[:MAX_LISTED_BAD_LINES]:
        st.output.warn(f"skipped {problem.message}")
    if len(bad_lines) > MAX_LISTED_BAD_LINES:
        st.output.warn(f"skipped {len(bad_lines) - MAX_LISTED_BAD_LINES} more bad line(s)")
    if not lines:
        raise InputError(
            f"{manifest}: no valid bounding-box line to export",
            hint=bad_lines[0].message if bad_lines else "is it an augmented (output) manifest?",
        )
    summary = export_lines(
        lines, fmt, open_store(out, session), label_map=mapping, min_confidence=min_confidence
    )
    for warning in summary.warnings:
        st.output.warn(warning)
    st.output.data({**summary.as_dict(), "skipped_lines": len(bad_lines)})

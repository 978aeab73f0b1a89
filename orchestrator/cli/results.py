"""`labeljob consolidate` and `labeljob export`: from worker answers to training-ready files."""

from __future__ import annotations

import gc
import posixpath
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from orchestrator.cli._state import State, state
from orchestrator.errors import InputError, UsageError
from orchestrator.spec import ConsolidationSpec
from orchestrator.storage import (
    S3Store,
    is_s3_uri,
    open_object,
    open_store,
    s3_client,
    split_s3_uri,
)

if TYPE_CHECKING:
    from orchestrator.consolidation import AnswerColumns, AnswerReport, ObjectAnswers

# Consolidation and outputs are imported inside the commands: `labeljob --help` loads this module.
MAX_LISTED_BAD_LINES = 10
DEFAULT_ATTR = "bbox"


def _labels(uri: str, session) -> list[str]:
    from orchestrator.outputs import parse_label_categories

    store, key = open_object(uri, session)
    return parse_label_categories(store.get(key), store.uri(key))


def _read_answers(
    input: str,
    input_manifest: str | None,
    labels: list[str] | None,
    report: AnswerReport,
    session,
    *,
    columns: bool = False,
) -> tuple[AnswerColumns | list[ObjectAnswers], dict[str, dict]]:
    """Workers' raw answers from a payload file or a job folder, and the source lines by object id;
    with `columns`, a payload's answers stay columns (consolidation takes them without models)."""
    from orchestrator.outputs import (
        OUTPUT_MANIFEST_KEY,
        job_output_folder,
        read_answer_columns,
        read_answers,
        read_source_lines,
    )

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
    read = read_answer_columns if columns else read_answers
    return read(input, source_refs, labels, report, session), source_lines


@contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Reading and voting make millions of containers that hold no cycles (parsed JSON, answers,
    results): the cyclic collector's passes over them took a sixth of `consolidate`'s CPU time on a
    payload of 250,000 boxes and freed nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # The first allocation after `enable` would start a collection that walks every object still
        # alive (a tenth of a second at 250,000 boxes, just before the command exits): those are frozen.
        gc.freeze()
        if enabled:
            gc.enable()


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
    needs_more: Annotated[
        str | None,
        typer.Option(
            "--needs-more",
            help="Write one JSON line per object the adaptive stopping rule wants another answer for.",
            metavar="FILE",
        ),
    ] = None,
    min_workers: Annotated[
        int, typer.Option(help="Answers every object gets before the rule decides (with --needs-more).")
    ] = 2,
    max_workers: Annotated[
        int, typer.Option(help="Answers after which an object is settled (with --needs-more).")
    ] = 7,
    edge_tolerance: Annotated[
        float,
        typer.Option(help="Looser boxes than this ask for another answer: lower = tighter, more answers."),
    ] = 0.12,
) -> None:
    """Consolidate workers' boxes by IoU voting into an augmented manifest in Ground Truth's format."""
    from orchestrator.consolidation import AnswerReport, StoppingRule
    from orchestrator.outputs import OutputTargets, consolidate_and_write, detect_attr

    st = state(ctx)
    params = _params(
        iou_threshold=iou_threshold, min_support=min_support, coordinates=coordinates, weighting=weighting
    )
    stopping = None
    if needs_more:
        try:
            stopping = StoppingRule(
                min_workers=min_workers,
                max_workers=max_workers,
                edge_tolerance=edge_tolerance,
                iou_threshold=params.iou_threshold,
                min_support=params.min_support,
                coordinates=params.coordinates,
            )
        except ValueError as exc:
            raise UsageError(f"--{str(exc).split()[0].replace('_', '-')}: {exc}") from None
    session = st.session_for(input, out, labels, workers_report, input_manifest, needs_more)
    label_list = _labels(labels, session)
    report = AnswerReport()
    with st.output.progress("reading answers") as bar, _without_cyclic_gc():
        objects, source_lines = _read_answers(
            input, input_manifest, label_list, report, session, columns=True
        )
        attr = attr or next(filter(None, map(detect_attr, source_lines.values())), None) or DEFAULT_ATTR
        name = job_name or Path(input.rstrip("/")).stem
        targets = OutputTargets(
            manifest=open_object(out, session),
            workers_report=open_object(workers_report, session) if workers_report else None,
            needs_more=open_object(needs_more, session) if needs_more else None,
        )
        bar.update(description=f"voting on {len(objects):,} objects and writing the outputs")
        outputs = consolidate_and_write(
            objects,
            source_lines,
            label_list,
            attr=attr,
            job_name=name,
            targets=targets,
            params=params,
            report=report,
            stopping=stopping,
        )
    if report.problems:
        st.output.warn(f"{report.problems} answer problem(s) repaired or dropped; see `repairs`")
    st.output.data(outputs.summary)


def _image_reader(st: State, source_refs: list[str]) -> Callable[[str], bytes]:
    """Reads an image by source-ref, from S3 through one client for every copying thread.

    A boto3 client may be shared by threads; creating clients from one session in many threads may not.
    """
    client = s3_client(st.session) if any(map(is_s3_uri, source_refs)) else None

    def read(uri: str) -> bytes:
        if is_s3_uri(uri):
            bucket, key = split_s3_uri(uri)
            return S3Store(bucket, "", client).get(key)
        store, key = open_object(uri)
        return store.get(key)

    return read


def _split_names(manifests: list[str]) -> list[str]:
    """Each manifest's split, its file name without extension; "" for a single manifest."""
    if len(manifests) == 1:
        return [""]
    names = [posixpath.splitext(posixpath.basename(uri.rstrip("/")))[0] for uri in manifests]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise UsageError(f"two manifests are named {twice!r}: each split needs its own file name")
    return names


def export(
    ctx: typer.Context,
    manifests: Annotated[
        list[str],
        typer.Argument(
            help="Augmented manifests (paths or s3:// URIs); several are splits named after their "
            "files (train.manifest, validation.manifest).",
            metavar="MANIFEST",
        ),
    ],
    fmt: Annotated[str, typer.Option("--format", help="Export format.", metavar="coco|voc|yolo|csv")],
    out: Annotated[str, typer.Option("--out", help="Folder or s3:// prefix to write into.", metavar="DIR")],
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help="The job's label categories file (Ground Truth's, or a JSON list): class ids; "
            "default: the manifests' class-maps.",
            metavar="LABELS",
        ),
    ] = None,
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
    images_root: Annotated[
        str | None,
        typer.Option(
            "--images-root",
            help="COCO: file_name is relative to this prefix; default: the source-refs' common folder.",
            metavar="PREFIX",
        ),
    ] = None,
    per_worker: Annotated[
        bool, typer.Option("--per-worker", help="COCO: each worker's own boxes, with worker_id.")
    ] = False,
    answers: Annotated[
        str | None,
        typer.Option(
            "--answers",
            help="With --per-worker: a consolidation payload or a job's output folder, as for consolidate.",
            metavar="INPUT",
        ),
    ] = None,
    input_manifest: Annotated[
        str | None,
        typer.Option(
            help="With --answers naming a job folder: the job's input manifest (object ids).",
            metavar="MANIFEST",
        ),
    ] = None,
    copy_images: Annotated[
        bool, typer.Option("--copy-images", help="YOLO: copy the images into DIR/images/ (DIR local).")
    ] = False,
) -> None:
    """Export augmented manifests to COCO JSON, Pascal VOC XML, YOLO text files or CSV."""
    from orchestrator.consolidation import AnswerReport
    from orchestrator.outputs import FORMATS, export_splits, load_label_map, read_augmented_manifest

    if fmt not in FORMATS:
        raise UsageError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    for given, option, only in (
        (images_root is not None, "--images-root", "coco"),
        (per_worker, "--per-worker", "coco"),
        (copy_images, "--copy-images", "yolo"),
    ):
        if given and fmt != only:
            raise UsageError(f"{option} is for --format {only}")
    if per_worker != (answers is not None):
        raise UsageError("--per-worker and --answers go together: the workers' boxes come from --answers")
    if copy_images and is_s3_uri(out):
        raise UsageError("--copy-images writes into a local folder", hint="give --out a local path")
    st = state(ctx)
    session = st.session_for(*manifests, out, labels, label_map, answers, input_manifest)
    label_list = _labels(labels, session) if labels else None
    mapping = load_label_map(*open_object(label_map, session)) if label_map else None
    bad_lines: list[InputError] = []
    splits: dict[str, list] = {}
    with st.output.progress("reading the manifests") as bar:
        for split, uri in zip(_split_names(manifests), manifests, strict=True):
            splits[split] = []
            for _, line in read_augmented_manifest(*open_object(uri, session), attr, bad_lines):
                splits[split].append(line)
                bar.advance()
    for problem in bad_lines[:MAX_LISTED_BAD_LINES]:
        st.output.warn(f"skipped {problem.message}")
    if len(bad_lines) > MAX_LISTED_BAD_LINES:
        st.output.warn(f"skipped {len(bad_lines) - MAX_LISTED_BAD_LINES} more bad line(s)")
    empty = next((uri for uri, lines in zip(manifests, splits.values(), strict=True) if not lines), None)
    if empty is not None:
        raise InputError(
            f"{empty}: no valid bounding-box line to export",
            hint=bad_lines[0].message if bad_lines else "is it an augmented (output) manifest?",
        )
    worker_answers = None
    if answers:
        report = AnswerReport()
        worker_answers, _ = _read_answers(answers, input_manifest, label_list, report, session)
        if report.problems:
            st.output.warn(f"{report.problems} answer problem(s) repaired or dropped")
    refs = [line.source_ref for lines in splits.values() for line in lines]
    with st.output.progress(f"writing {len(refs):,} images as {fmt}"):
        summary = export_splits(
            splits,
            fmt,
            open_store(out, session),
            labels=label_list,
            label_map=mapping,
            min_confidence=min_confidence,
            images_root=images_root,
            answers=worker_answers,
            fetch_image=_image_reader(st, refs) if copy_images else None,
        )
    for warning in summary.warnings:
        st.output.warn(warning)
    st.output.data({**summary.as_dict(), "skipped_lines": len(bad_lines)})

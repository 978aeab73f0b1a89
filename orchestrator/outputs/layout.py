"""Ground Truth's output layout under `<output prefix>/<job name>/`, which every backend writes.

    manifests/output/output.manifest
    annotations/worker-response/iteration-<N>/<datasetObjectId>/<YYYY-MM-DD_HH:MM:SS>.json
    annotations/consolidated-annotation/consolidation-response/iteration-<N>/<YYYY-MM-DD_HH:MM:SS>.json
    reports/workers.csv          (ours: per-worker agreement; Ground Truth has no such file)

Every function takes a store rooted at the job folder. A worker-response file holds Ground
Truth's JSON, field for field as docs/groundtruth.md shows it:

    {"answers": [{"acceptanceTime": "2026-11-23T11:59:52.623Z",
                  "answerContent": {"annotatedResult": {"boundingBoxes", "inputImageProperties"}},
                  "submissionTime": "2026-11-23T12:00:05.123Z", "timeSpentInSeconds": 12.5,
                  "workerId": "...", "workerMetadata": null}]}

Times are UTC with milliseconds and `Z`; a field labeljob does not know is null. Files written
before labeljob wrote every field (no `acceptanceTime`, `submissionTime` as Python's ISO format)
are read the same way.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from orchestrator.consolidation import (
    AnswerColumns,
    AnswerReport,
    ObjectAnswers,
    WorkerAnswer,
    parse_consolidation_columns,
    parse_worker_responses,
)
from orchestrator.errors import InputError, NotFound
from orchestrator.storage import ObjectStore, is_s3_uri, join_key, list_or_empty, open_object, open_store

OUTPUT_MANIFEST_KEY = "manifests/output/output.manifest"
WORKER_RESPONSE_PREFIX = "annotations/worker-response/"
CONSOLIDATION_RESPONSE_PREFIX = "annotations/consolidated-annotation/consolidation-response/"
WORKERS_REPORT_KEY = "reports/workers.csv"
# The `name` of the template's <crowd-bounding-box>; the parser accepts any name.
ANSWER_NAME = "annotatedResult"
# S3 GETs are latency-bound; a few in flight make reading a large job's answers minutes faster.
READ_THREADS = 16

_RESPONSE_KEY = re.compile(r"^iteration-(\d+)/([^/]+)/([^/]+\.json)$")


def file_timestamp(when: datetime) -> str:
    """Ground Truth's file-name timestamp, UTC: `2020-12-28_18:59:58`."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d_%H:%M:%S")


def worker_response_key(dataset_object_id: str, when: datetime, iteration: int = 1) -> str:
    if not dataset_object_id or "/" in dataset_object_id or dataset_object_id in (".", ".."):
        raise ValueError(f"dataset object id {dataset_object_id!r} cannot be a folder name")
    name = file_timestamp(when) + ".json"
    return join_key(WORKER_RESPONSE_PREFIX, f"iteration-{iteration}", dataset_object_id, name)


def _number(value: float) -> int | float:
    # Ground Truth writes integer pixels; keep a fractional value from another tool as it is.
    return int(value) if float(value).is_integer() else value


def worker_response_entry(answer: WorkerAnswer) -> dict:
    """One worker's answer in Ground Truth's worker-response shape; unknown fields are left out."""
    result: dict = {
        "boundingBoxes": [
            {
                "height": _number(box.height),
                "label": box.label,
                "left": _number(box.left),
                "top": _number(box.top),
                "width": _number(box.width),
            }
            for box in answer.boxes
        ]
    }
    if answer.image_width is not None and answer.image_height is not None:
        result["inputImageProperties"] = {"height": answer.image_height, "width": answer.image_width}
    submitted = _parse_time(answer.submitted_at)
    accepted = _parse_time(answer.accepted_at)
    if accepted is None and submitted is not None and answer.time_spent_seconds is not None:
        # Ground Truth's time spent runs from acceptance to submission, so one gives the other.
        with contextlib.suppress(OverflowError):
            accepted = submitted - timedelta(seconds=answer.time_spent_seconds)
    spent = answer.time_spent_seconds
    return {
        "acceptanceTime": _gt_time(accepted, answer.accepted_at),
        "answerContent": {ANSWER_NAME: result},
        "submissionTime": _gt_time(submitted, answer.submitted_at),
        "timeSpentInSeconds": round(spent, 3) if spent is not None else None,
        "workerId": answer.worker_id,
        "workerMetadata": answer.worker_metadata,
    }


def _parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time as an aware datetime (UTC when it has no offset), or None."""
    try:
        when = datetime.fromisoformat(value or "")
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _gt_time(when: datetime | None, original: str | None) -> str | None:
    """Ground Truth's time format, `2020-12-28T18:59:58.321Z`; a time that is not ISO 8601 stays as given."""
    if when is None:
        return original
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _latest_submission(obj: ObjectAnswers) -> datetime | None:
    times = [t for t in (_parse_time(answer.submitted_at) for answer in obj.answers) if t is not None]
    return max(times) if times else None


def write_worker_responses(
    store: ObjectStore, objects: Iterable[ObjectAnswers], *, iteration: int = 1, now: datetime | None = None
) -> list[str]:
    """Store each object's answers as one worker-response file; returns the keys written.

    The file is named after the latest submission time of its answers (or `now` when none has
    one), so a repeated poll that hands over the same answers rewrites the same file. When the
    file exists already, answers are merged into it by worker id and it is rewritten only if
    that changed it.
    """
    now = now or datetime.now(UTC)
    written = []
    for obj in objects:
        if not obj.answers:
            continue
        key = worker_response_key(obj.dataset_object_id, _latest_submission(obj) or now, iteration)
        entries = {entry["workerId"]: entry for entry in map(worker_response_entry, obj.answers)}
        try:
            existing = json.loads(store.get(key))["answers"]
        except NotFound:
            existing = None
        except (ValueError, KeyError, TypeError):
            existing = None  # a torn or foreign file: replace it with what we know
        if existing is not None:
            merged = {entry.get("workerId"): entry for entry in existing}
            merged.update(entries)
            if list(merged.values()) == existing:
                continue
            entries = merged
        _put_answers(store, key, list(entries.values()))
        written.append(key)
    return written


def _natural(object_id: str) -> tuple[int, int, str]:
    return (0, int(object_id), "") if object_id.isdigit() else (1, 0, object_id)


def _put_answers(store: ObjectStore, key: str, entries: list[dict]) -> None:
    store.put(key, json.dumps({"answers": entries}, ensure_ascii=False).encode(), "application/json")


def drop_worker_responses(store: ObjectStore, worker_ids: Iterable[str]) -> int:
    """Remove these workers' answers from every worker-response file (a file left with none is
    deleted); returns the answers removed. Reads every file, so it runs only when workers are named."""
    dropped = set(worker_ids)
    if not dropped:
        return 0
    removed = 0
    for info in list_or_empty(store, WORKER_RESPONSE_PREFIX):
        try:
            answers = json.loads(store.get(info.key))["answers"]
            kept = [entry for entry in answers if entry.get("workerId") not in dropped]
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a torn or foreign file: read_worker_responses repairs or counts it
        if len(kept) == len(answers):
            continue
        removed += len(answers) - len(kept)
        if kept:
            _put_answers(store, info.key, kept)
        else:
            store.delete(info.key)
    return removed


def read_worker_responses(
    store: ObjectStore, source_refs: Mapping[str, str], labels: list[str] | None, report: AnswerReport
) -> list[ObjectAnswers]:
    """`read_worker_response_columns` as `ObjectAnswers`, for the callers that take single objects."""
    return read_worker_response_columns(store, source_refs, labels, report).objects()


def read_worker_response_columns(
    store: ObjectStore, source_refs: Mapping[str, str], labels: list[str] | None, report: AnswerReport
) -> AnswerColumns:
    """Every object's answers from `annotations/worker-response/`, in id order, as columns.

    Only an object's latest iteration counts: a later one is a new labeling round of the object (a
    reviewer rejected the earlier answers, docs/review.md). Within it, a worker's answer in a later
    file replaces the same worker's earlier one. `source_refs` maps
    each dataset object id (the input manifest line index) to its source-ref; an object without
    one is an InputError, because the manifest given does not belong to this job. Malformed
    answers, and files that are not JSON, are repaired or dropped and counted in `report`.
    """
    files: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for info in list_or_empty(store, WORKER_RESPONSE_PREFIX):
        match = _RESPONSE_KEY.match(info.key[len(WORKER_RESPONSE_PREFIX) :])
        if match:
            files[match.group(2)].append((int(match.group(1)), match.group(3), info.key))
    unknown = sorted(set(files) - set(source_refs), key=_natural)
    if unknown:
        raise InputError(
            f"{store.uri(WORKER_RESPONSE_PREFIX)}: object {unknown[0]} has worker responses but no line "
            f"in the manifest ({len(source_refs)} lines)",
            hint="give the job's own input manifest (--input-manifest); object ids are its line indexes",
        )
    for object_id, found in files.items():
        latest = max(iteration for iteration, _, _ in found)
        files[object_id] = [entry for entry in found if entry[0] == latest]
    ids = sorted(files, key=_natural)
    keys = [key for object_id in ids for _, _, key in sorted(files[object_id])]
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        contents = dict(zip(keys, pool.map(store.get, keys), strict=True))
    responses = (
        (
            object_id,
            source_refs[object_id],
            ((store.uri(key), contents.pop(key)) for _, _, key in sorted(files[object_id])),
        )
        for object_id in ids
    )
    return parse_worker_responses(responses, labels, report)


def job_output_folder(uri: str, boto3_session=None) -> ObjectStore | None:
    """The store of a Ground Truth job's output folder at `uri`, or None when `uri` names a file.

    InputError for a local folder without worker responses (on S3 a prefix without them is a file).
    """
    if is_s3_uri(uri):
        store = open_store(uri, boto3_session)
        return store if next(iter(store.list(WORKER_RESPONSE_PREFIX)), None) else None
    if not Path(uri).is_dir():
        return None
    store = open_store(uri)
    if next(iter(list_or_empty(store, WORKER_RESPONSE_PREFIX)), None) is None:
        raise InputError(
            f"{store.uri(WORKER_RESPONSE_PREFIX)}: no worker responses",
            hint="give a payload file or a Ground Truth job's folder: <S3OutputPath>/<job name>/",
        )
    return store


def read_object(uri: str, boto3_session=None) -> bytes:
    store, key = open_object(uri, boto3_session)
    return store.get(key)


def read_answers(
    uri: str,
    source_refs: Mapping[str, str],
    labels: list[str],
    report: AnswerReport,
    boto3_session=None,
) -> list[ObjectAnswers]:
    """Worker answers from a consolidation payload file or a Ground Truth job's output folder.

    `source_refs` maps object ids (input line indexes) to source-refs; only a folder needs it.
    """
    return read_answer_columns(uri, source_refs, labels, report, boto3_session).objects()


def read_answer_columns(
    uri: str,
    source_refs: Mapping[str, str],
    labels: list[str],
    report: AnswerReport,
    boto3_session=None,
) -> AnswerColumns:
    """`read_answers` as columns for `consolidate_and_write` (no model per box)."""
    folder = job_output_folder(uri, boto3_session)
    if folder is None:
        return parse_consolidation_columns(
            read_object(uri, boto3_session), labels, report, fetch=lambda ref: read_object(ref, boto3_session)
        )
    return read_worker_response_columns(folder, source_refs, labels, report)


def consolidation_entry(dataset_object_id: str, content: dict) -> dict:
    """One element of a post-annotation Lambda's response (and of a consolidation-response file)."""
    return {"datasetObjectId": dataset_object_id, "consolidatedAnnotation": {"content": content}}


def write_consolidation_response(
    store: ObjectStore, entries: list[dict], when: datetime, iteration: int = 1
) -> str:
    """Write the consolidation response of one iteration; returns its URI."""
    key = join_key(CONSOLIDATION_RESPONSE_PREFIX, f"iteration-{iteration}", file_timestamp(when)) + ".json"
    store.put(key, json.dumps(entries, ensure_ascii=False).encode(), "application/json")
    return store.uri(key)

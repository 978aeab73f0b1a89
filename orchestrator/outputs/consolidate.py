"""The one finish path: consolidate a job's answers and write its outputs.

Every backend (portal, Ground Truth, MTurk), the job poller and `labeljob consolidate` end here,
so consolidation and output writing exist once. For a job whose answers are stored in the job
folder (`<output>/<job name>/annotations/worker-response/`):

    store = open_store(job_output_prefix(spec), boto3_session)
    source_lines = read_source_lines(*open_object(spec.input_manifest, boto3_session))
    report = AnswerReport()
    refs = {object_id: line["source-ref"] for object_id, line in source_lines.items()}
    objects = read_worker_responses(store, refs, spec.labels, report)
    outputs = consolidate_and_write(
        objects, source_lines, spec.labels, attr=spec.label_attribute, job_name=spec.name,
        targets=OutputTargets.job(store), params=spec.consolidation, report=report)
    record.outputs.update(outputs.paths)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from orchestrator.consolidation import (
    AnswerColumns,
    AnswerReport,
    GoldScore,
    IoUVote,
    ObjectAnswers,
    ObjectResult,
    StopDecision,
    StoppingRule,
    WorkerQuality,
)
from orchestrator.errors import InputError
from orchestrator.manifest import read_manifest, write_jsonl
from orchestrator.outputs.augmented_manifest import (
    augmented_line,
    augmented_line_text,
    creation_date,
    write_augmented_manifest,
    write_workers_report,
)
from orchestrator.outputs.layout import (
    OUTPUT_MANIFEST_KEY,
    WORKER_RESPONSE_PREFIX,
    WORKERS_REPORT_KEY,
    consolidation_entry,
    write_consolidation_response,
    write_worker_responses,
)
from orchestrator.spec import ConsolidationSpec, JobSpec
from orchestrator.storage import ObjectStore

Target = tuple[ObjectStore, str]


@dataclass(frozen=True)
class OutputTargets:
    """Where the outputs go: each file as (store, key).

    `job_folder`, when set, is the store rooted at `<output>/<job name>/`; the consolidation
    response is written there, and the worker responses too if `write_worker_responses` (leave
    it False when the backend or Ground Truth has written them already). `needs_more` receives one
    JSON line per object the stopping rule wants another answer for.
    """

    manifest: Target
    workers_report: Target | None = None
    needs_more: Target | None = None
    job_folder: ObjectStore | None = None
    write_worker_responses: bool = False

    @classmethod
    def job(cls, store: ObjectStore, *, write_worker_responses: bool = False) -> OutputTargets:
        """Ground Truth's layout in the job folder `store`, plus `reports/workers.csv`."""
        return cls(
            manifest=(store, OUTPUT_MANIFEST_KEY),
            workers_report=(store, WORKERS_REPORT_KEY),
            job_folder=store,
            write_worker_responses=write_worker_responses,
        )


@dataclass
class JobOutputs:
    """What the finish path produced: the results, the URIs it wrote and a summary for people."""

    results: list[ObjectResult]
    workers: dict[str, WorkerQuality]
    paths: dict[str, str]
    summary: dict = field(default_factory=dict)


def _order(source_lines: Mapping[str, dict]):
    position = {object_id: i for i, object_id in enumerate(source_lines)}

    def key(object_id: str) -> tuple:
        if object_id in position:
            return (0, position[object_id], "")
        return (1, int(object_id), "") if object_id.isdigit() else (2, 0, object_id)

    return key


def stopping_rule(spec: JobSpec) -> StoppingRule | None:
    """The stopping rule of a job spec's `[task.adaptive]`, voting as its `[consolidation]`; None in
    a fixed-overlap job."""
    adaptive = spec.task.adaptive
    if adaptive is None:
        return None
    return StoppingRule(
        **adaptive.model_dump(),
        iou_threshold=spec.consolidation.iou_threshold,
        min_support=spec.consolidation.min_support,
        coordinates=spec.consolidation.coordinates,
    )


def decide(
    objects: list[ObjectAnswers],
    source_lines: Mapping[str, dict],
    labels: list[str],
    stopping: StoppingRule,
    weights: Mapping[str, float],
) -> list[StopDecision]:
    """The rule's decision for every object, those of `source_lines` without answers too, in the
    input manifest's order."""
    given = {obj.dataset_object_id for obj in objects}
    everything = [
        *objects,
        *(
            ObjectAnswers(dataset_object_id=object_id, source_ref=line.get("source-ref", ""), answers=[])
            for object_id, line in source_lines.items()
            if object_id not in given
        ),
    ]
    order = _order(source_lines)
    return sorted(stopping.fit_predict(everything, weights, labels), key=lambda d: order(d.dataset_object_id))


def consolidate_and_write(
    objects: list[ObjectAnswers] | AnswerColumns,
    source_lines: Mapping[str, dict],
    labels: list[str],
    *,
    attr: str,
    job_name: str,
    targets: OutputTargets,
    params: ConsolidationSpec | None = None,
    report: AnswerReport | None = None,
    created: datetime | None = None,
    stopping: StoppingRule | None = None,
    gold: Mapping[str, GoldScore] | None = None,
) -> JobOutputs:
    """Consolidate `objects` by IoU voting and write the augmented manifest and the reports.

    `source_lines` maps a dataset object id to its input manifest line, whose keys pass through
    to the output; an object missing from it gets `{"source-ref": <its source_ref>}`. Objects
    without any answer get no output line (they count as `unanswered`, as do manifest lines with
    no object). Lines follow the input manifest's order. `report` is the parser's, for the
    summary. `gold` (worker id -> `GoldScore`) puts gold evidence first in the worker weights and
    adds the gold columns to the workers report. Writes, in this order: worker responses (if
    asked), the augmented manifest, the workers report (if a target is given), the consolidation
    response (if `job_folder`), the objects that need more answers (if a target is given).

    With `stopping`, every object (those of `source_lines` without answers too) is decided by the
    rule with the workers' weights from this consolidation; the summary counts them.
    """
    params = params or ConsolidationSpec()
    created = created or datetime.now(UTC)
    answers = objects if isinstance(objects, AnswerColumns) else AnswerColumns.from_objects(objects)
    answered = answers.answered()
    model = IoUVote(**params.model_dump()).fit(answered, labels=labels, gold=gold)
    order = _order(source_lines)
    results = sorted(model.results_, key=lambda r: order(r.dataset_object_id))
    paths: dict[str, str] = {}
    folder = targets.job_folder
    if folder is not None and targets.write_worker_responses:
        write_worker_responses(folder, answered.objects(), now=created)
        paths["worker_responses"] = folder.uri(WORKER_RESPONSE_PREFIX)

    stamp = creation_date(created)
    line_args = [
        (
            source_lines.get(r.dataset_object_id, {"source-ref": r.source_ref}),
            r,
            labels,
            attr,
            job_name,
            stamp,
        )
        for r in results
    ]
    texts = [augmented_line_text(*args) for args in line_args]
    paths["manifest"] = write_augmented_manifest(*targets.manifest, texts)
    if targets.workers_report is not None:
        paths["workers_report"] = write_workers_report(*targets.workers_report, model.workers_, gold)
    if folder is not None:
        lines = [augmented_line(*args) for args in line_args]
        entries = [
            consolidation_entry(
                r.dataset_object_id, {attr: line[attr], f"{attr}-metadata": line[f"{attr}-metadata"]}
            )
            for r, line in zip(results, lines, strict=True)
        ]
        paths["consolidation_response"] = write_consolidation_response(folder, entries, created)

    decisions = []
    if stopping is not None:
        decisions = decide(answers.objects(), source_lines, labels, stopping, model.skills_)
        if targets.needs_more is not None:
            rows = [
                {"datasetObjectId": d.dataset_object_id, "answers": d.answers, "reason": d.reason}
                for d in decisions
                if d.needs_more
            ]
            store, key = targets.needs_more
            write_jsonl(store, key, rows)
            paths["needs_more"] = store.uri(key)

    answered_ids = {r.dataset_object_id for r in results}
    unanswered = len(set(answers.object_ids) | set(source_lines)) - len(answered_ids)
    summary = {
        "job": job_name,
        "objects": len(results),
        "unanswered": unanswered,
        "boxes": sum(len(r.boxes) for r in results),
        "objects_without_boxes": sum(1 for r in results if not r.boxes),
        "workers": len(model.workers_),
        "low_quality_workers": sum(1 for w in model.workers_.values() if w.low_quality),
        "flags": dict(sorted(Counter(flag for r in results for flag in r.flags).items())),
        "repairs": dict(sorted(report.counts.items())) if report else {},
        **(
            {
                "answers": len(answers.worker_ids),
                "settled": sum(not d.needs_more for d in decisions),
                "needs_more": sum(d.needs_more for d in decisions),
            }
            if stopping is not None
            else {}
        ),
        **{f"{name}_uri": uri for name, uri in paths.items()},
    }
    return JobOutputs(results=results, workers=model.workers_, paths=paths, summary=summary)


# ------------------------------------------------------------------------------------ inputs


def parse_label_categories(data: bytes, source: str) -> list[str]:
    """Labels from Ground Truth's label category file, or from a plain JSON list of strings."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{source}: not a JSON label file: {exc}") from None
    items = doc.get("labels") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise InputError(
            f'{source}: expected {{"labels": [{{"label": ...}}]}} or a JSON list of label names',
        )
    labels = [item.get("label") if isinstance(item, dict) else item for item in items]
    bad = [i for i, label in enumerate(labels) if not isinstance(label, str) or not label.strip()]
    if bad:
        raise InputError(f"{source}: label {bad[0]} is not a non-empty string")
    if not labels:
        raise InputError(f"{source}: the label list is empty")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise InputError(f"{source}: duplicate labels: {', '.join(duplicates)}")
    return labels


def read_source_lines(store: ObjectStore, key: str) -> dict[str, dict]:
    """A manifest's lines by dataset object id, the 0-based index of the line (blank lines skipped).

    A bad line is an InputError naming the file and line, since every later id would be wrong.
    """
    lines: dict[str, dict] = {}
    for _, row in read_manifest(store, key):
        lines[str(len(lines))] = row
    return lines

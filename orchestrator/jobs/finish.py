"""Writing the outputs of a job that has ended, the same way for every backend.

Portal and MTurk answers (and Ground Truth's with `--reconsolidate` or `consolidation =
"labeljob"`) are read back from the worker-response layout the job layer stored them in and
consolidated by IoU voting. A Ground Truth job consolidated by AWS keeps Ground Truth's own
`output.manifest`, which is read and validated line by line. Either way the job gets its
augmented manifest, a COCO export, and a `remaining.manifest` of the objects that got no label.

A Ground Truth follow-up job (`launch --more-from`, docs/groundtruth.md) is always consolidated by
labeljob, with the earlier job's answers: one manifest of the earlier job's objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.consolidation import AnswerReport, GoldScore, ObjectAnswers
from orchestrator.errors import InputError, NotFound
from orchestrator.jobs.backend import GOLD_SCORES
from orchestrator.jobs.lifecycle import job_output_prefix
from orchestrator.jobs.store import JobStore
from orchestrator.manifest import write_jsonl
from orchestrator.outputs import (
    OUTPUT_MANIFEST_KEY,
    WORKERS_REPORT_KEY,
    OutputTargets,
    consolidate_and_write,
    export_lines,
    read_augmented_manifest,
    read_source_lines,
    read_worker_response_columns,
    read_worker_responses,
)
from orchestrator.storage import open_object, open_store

if TYPE_CHECKING:
    from orchestrator.jobs.record import JobRecord
    from orchestrator.spec import JobSpec

# Our re-consolidation of a Ground Truth job never overwrites the manifest Ground Truth wrote.
RECONSOLIDATED_MANIFEST_KEY = "manifests/output/labeljob.manifest"
COCO_EXPORT_PREFIX = "exports/coco"
# A follow-up job's manifest line carries the earlier job's object id under this key, and its
# record the manifest's URI under FOLLOWUP_MANIFEST.
FOLLOWUP_ID_KEY = "labeljob-more-from"
FOLLOWUP_MANIFEST = "followup_manifest_uri"


def uses_aws_consolidation(spec: JobSpec, reconsolidate: bool) -> bool:
    return (
        spec.backend == "groundtruth"
        and not reconsolidate
        and spec.groundtruth is not None
        and spec.groundtruth.consolidation == "aws"
        and spec.groundtruth.more_from is None
    )


def finish_job(
    spec: JobSpec, record: JobRecord, jobs: JobStore, *, boto3_session=None, reconsolidate: bool = False
) -> dict[str, str]:
    """Write the outputs of an ended job; returns their URIs, to be kept in the job record.

    The output manifest is copied beside the job record in the workspace, with the
    `remaining.manifest` of objects that got no label, ready to launch again.
    """
    job_folder = open_store(job_output_prefix(spec), boto3_session)
    source_lines = read_source_lines(*open_object(spec.input_manifest, boto3_session))
    paths: dict[str, str] = {}

    if uses_aws_consolidation(spec, reconsolidate):
        manifest_store, manifest_key = _groundtruth_manifest(record, job_folder, boto3_session)
        if not manifest_store.exists(manifest_key):
            if record.status == "completed":
                raise NotFound(
                    f"{manifest_store.uri(manifest_key)}: Ground Truth reported the job Completed "
                    "but its output manifest is not there",
                    hint="output files appear minutes after the job ends; poll again later",
                )
            # A job that failed or was stopped before labeling anything writes no manifest.
            return _write_remaining(spec, jobs, source_lines, labeled=set(), paths=paths)
    else:
        report = AnswerReport()
        refs = {object_id: line["source-ref"] for object_id, line in source_lines.items()}
        if spec.groundtruth is not None and spec.groundtruth.more_from:
            objects = _both_jobs_answers(spec, record, jobs, refs, report, boto3_session)
        else:
            objects = read_worker_response_columns(job_folder, refs, spec.labels, report)
        manifest_store = job_folder
        manifest_key = RECONSOLIDATED_MANIFEST_KEY if spec.backend == "groundtruth" else OUTPUT_MANIFEST_KEY
        targets = OutputTargets(
            manifest=(job_folder, manifest_key),
            workers_report=(job_folder, WORKERS_REPORT_KEY),
            job_folder=job_folder,
        )
        outputs = consolidate_and_write(
            objects,
            source_lines,
            spec.labels,
            attr=spec.label_attribute,
            job_name=spec.name,
            targets=targets,
            params=spec.consolidation,
            report=report,
            # The time the job ended, not now: a finish run again after a crash rewrites the same files.
            created=record.last_progress_at,
            gold={w: GoldScore.from_dict(s) for w, s in record.backend_state.get(GOLD_SCORES, {}).items()},
        )
        paths.update(outputs.paths)
    paths["manifest"] = manifest_store.uri(manifest_key)

    errors: list[InputError] = []
    lines = [
        line
        for _, line in read_augmented_manifest(manifest_store, manifest_key, spec.label_attribute, errors)
    ]
    if errors:
        # A few bad lines from the service must not hold back the good ones; they are relaunched.
        paths["manifest_errors"] = f"{len(errors)} invalid line(s); first: {errors[0].message}"
    paths["workspace_manifest"] = jobs.put_file(
        spec.name, "output.manifest", manifest_store.get(manifest_key), "application/jsonl"
    )
    if lines:
        coco_store = open_store(job_folder.uri(COCO_EXPORT_PREFIX), boto3_session)
        coco = export_lines(lines, "coco", coco_store, labels=spec.labels)
        paths["coco"] = coco.destination
    return _write_remaining(spec, jobs, source_lines, {line.source_ref for line in lines}, paths)


def _write_remaining(
    spec: JobSpec, jobs: JobStore, source_lines: dict[str, dict], labeled: set[str], paths: dict[str, str]
) -> dict[str, str]:
    """Write `remaining.manifest` beside the job record when some objects got no label."""
    remaining = [line for line in source_lines.values() if line["source-ref"] not in labeled]
    if remaining:
        key = JobStore.key(spec.name, "remaining.manifest")
        write_jsonl(jobs.workspace, key, remaining)
        paths["remaining_manifest"] = jobs.workspace.uri(key)
    return paths


def _groundtruth_manifest(record: JobRecord, job_folder, boto3_session):
    """Ground Truth's output manifest: where the service said it is, else where it always writes it."""
    uri = record.backend_state.get("output_manifest_uri")
    if uri:
        return open_object(uri, boto3_session)
    return job_folder, OUTPUT_MANIFEST_KEY


def _both_jobs_answers(
    spec: JobSpec,
    record: JobRecord,
    jobs: JobStore,
    refs: dict[str, str],
    report: AnswerReport,
    boto3_session,
) -> list[ObjectAnswers]:
    """A follow-up job's answers added to its earlier job's, by the earlier job's object ids (`refs`).

    The follow-up's object ids are its own manifest's line indexes, mapped back through the
    FOLLOWUP_ID_KEY each line carries. A worker who answered an object in both jobs counts once,
    with the later answer, as within one job.
    """
    assert spec.groundtruth is not None and spec.groundtruth.more_from
    earlier = jobs.load(spec.groundtruth.more_from)[0].job_spec
    earlier_folder = open_store(job_output_prefix(earlier), boto3_session)
    objects = {
        o.dataset_object_id: o for o in read_worker_responses(earlier_folder, refs, spec.labels, report)
    }
    lines = read_source_lines(*open_object(record.backend_state[FOLLOWUP_MANIFEST], boto3_session))
    followup_refs = {object_id: line["source-ref"] for object_id, line in lines.items()}
    folder = open_store(job_output_prefix(spec), boto3_session)
    for more in read_worker_responses(folder, followup_refs, spec.labels, report):
        object_id = lines[more.dataset_object_id][FOLLOWUP_ID_KEY]
        answers = {a.worker_id: a for a in objects[object_id].answers} if object_id in objects else {}
        for answer in more.answers:
            if answer.worker_id in answers:
                report.add("duplicate_worker_answer", f"object {object_id}", answer.worker_id)
            answers[answer.worker_id] = answer
        objects[object_id] = ObjectAnswers(
            dataset_object_id=object_id, source_ref=refs[object_id], answers=list(answers.values())
        )
    return list(objects.values())

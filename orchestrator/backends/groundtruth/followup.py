"""Follow-up jobs (`launch --more-from`): more answers for the objects an earlier job left unsettled.

A Ground Truth job asks every object for the same number of workers and cannot add any, so adaptive
overlap runs as a second job: the stopping rule (docs/consolidation.md, "Adaptive overlap") reads the
earlier job's worker responses, and the follow-up gets only the objects it wants another answer for.
Each follow-up manifest line carries its earlier object id, which the finish step uses to consolidate
both jobs' answers into one manifest of the earlier job's objects (docs/groundtruth.md).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from orchestrator.errors import InputError, SpecError
from orchestrator.jobs import FOLLOWUP_ID_KEY, ManifestItem, job_output_prefix
from orchestrator.spec import JobSpec, parse_spec
from orchestrator.storage import open_object, open_store

if TYPE_CHECKING:
    from orchestrator.jobs import JobRecord

FLAG = "--more-from"


def more_spec(spec: JobSpec, earlier: JobRecord) -> JobSpec:
    """`spec` turned into a follow-up of `earlier`: its input, its rule (the spec's or `earlier`'s)."""
    problems = []
    if spec.backend != "groundtruth" or spec.groundtruth is None:
        problems.append(("backend", f"{FLAG} needs backend = 'groundtruth' and a [groundtruth] table"))
    if earlier.backend != "groundtruth":
        problems.append((FLAG, f"job {earlier.name} ran on {earlier.backend}, not Ground Truth"))
    if not earlier.terminal:
        problems.append(
            (FLAG, f"job {earlier.name} is still {earlier.status}; follow it up once it has ended")
        )
    previous = earlier.job_spec
    if previous.groundtruth is not None and previous.groundtruth.more_from:
        problems.append(
            (
                FLAG,
                f"job {earlier.name} is itself a follow-up of {previous.groundtruth.more_from}; a follow-up "
                "of a follow-up is not supported",
            )
        )
    if spec.labels != previous.labels:
        problems.append(
            (
                "labels",
                f"must be job {earlier.name}'s {previous.labels}: both jobs' answers are voted together",
            )
        )
    adaptive = spec.task.adaptive or previous.task.adaptive
    if adaptive is None:
        problems.append(
            (
                "task.adaptive",
                f"neither this spec nor job {earlier.name} has one: its stopping rule decides which "
                "objects get more answers",
            )
        )
    if problems:
        raise SpecError(problems, source=f"job spec {spec.name}")
    data = spec.model_dump(mode="json")
    # The earlier job's input: the finish step writes one line per earlier object.
    data["input_manifest"] = previous.input_manifest
    data["task"]["adaptive"] = adaptive.model_dump(mode="json")
    data["groundtruth"]["more_from"] = earlier.name
    return parse_spec(data, source=f"job spec {spec.name}")


def followup_items(spec: JobSpec, earlier: JobSpec, boto3_session=None) -> list[ManifestItem]:
    """The follow-up's objects: the earlier input lines the rule wants another answer for, in order,
    each with its earlier object id under FOLLOWUP_ID_KEY. Reads S3; calls no SageMaker API."""
    from orchestrator.consolidation import AnswerReport, IoUVote
    from orchestrator.outputs import decide, read_source_lines, read_worker_responses, stopping_rule

    rule = stopping_rule(spec)
    assert rule is not None  # more_spec gave it one
    source_lines = read_source_lines(*open_object(spec.input_manifest, boto3_session))
    refs = {object_id: line["source-ref"] for object_id, line in source_lines.items()}
    folder = open_store(job_output_prefix(earlier), boto3_session)
    objects = read_worker_responses(folder, refs, spec.labels, AnswerReport())
    answered = [obj for obj in objects if obj.answers]
    weights = IoUVote(**spec.consolidation.model_dump()).fit(answered, labels=spec.labels).skills_
    unsettled = [
        d.dataset_object_id for d in decide(objects, source_lines, spec.labels, rule, weights) if d.needs_more
    ]
    if not unsettled:
        raise InputError(
            f"every object of job {earlier.name} is settled under the stopping rule: nothing to follow up",
            hint="its outputs are final; a lower task.adaptive.edge_tolerance asks for more answers",
        )
    return [
        ManifestItem(str(index), refs[object_id], {**source_lines[object_id], FOLLOWUP_ID_KEY: object_id})
        for index, object_id in enumerate(unsettled)
    ]


def followup_manifest(items: list[ManifestItem]) -> bytes:
    """The follow-up's input manifest: one line per item, in order (object ids are line indexes)."""
    return "".join(
        json.dumps(item.line, ensure_ascii=False, separators=(",", ":")) + "\n" for item in items
    ).encode()

"""Verification jobs on the portal (docs/portal.md, "Verification jobs").

`labeljob launch SPEC --verify-from JOB [--verify-below C]` turns a portal SPEC into a job on JOB's
output: the lines whose lowest box confidence is below C (every line without C), each shown to the
workers with JOB's boxes already drawn. A worker submits them unchanged when they are all correct,
or fixes them first; the answers are consolidated as in any job, under SPEC's own attribute, and
JOB's attribute passes through.
"""

from __future__ import annotations

import json
import posixpath

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.backends.portal.db import Lease, Task, TaskStart
from orchestrator.errors import SpecError
from orchestrator.jobs import JobRecord, JobStore, ManifestItem
from orchestrator.outputs import dump_lines, read_augmented_manifest
from orchestrator.review import DECISIONS_NAME, JOB_REVIEWED_KEY, Review
from orchestrator.spec import JobSpec, parse_spec
from orchestrator.storage import open_object

VERIFY_MANIFEST = "verify.manifest"
BOX_KEYS = ("left", "top", "width", "height")


def verify_spec(
    spec: JobSpec,
    previous: JobRecord,
    jobs: JobStore,
    below: float | None = None,
    boto3_session=None,
    decisions: list[str] | None = None,
) -> JobSpec:
    """`spec` as a verification job on `previous`'s output; its input manifest, the selected lines,
    is written beside the new job's record. `decisions` selects the lines whose decision in
    `previous`'s review (`/review/<job>/`) is one of them (`undecided` for none)."""
    problems = []
    if spec.backend != "portal":
        problems.append(("backend", "a verification job runs on the portal: backend = 'portal'"))
    if not previous.terminal:
        problems.append(
            ("--verify-from", f"job {previous.name} is still {previous.status}; verify it once it has ended")
        )
    earlier = previous.job_spec.label_attribute
    if spec.label_attribute == earlier:
        problems.append(
            (
                "label_attribute",
                f"must differ from {previous.name}'s {earlier!r}: verified boxes get a new one",
            )
        )
    log = JobStore.key(previous.name, posixpath.join(posixpath.dirname(JOB_REVIEWED_KEY), DECISIONS_NAME))
    if decisions and not jobs.workspace.exists(log):
        problems.append(
            (
                "--verify-decision",
                f"job {previous.name} has no review: decide items at /review/{previous.name}/",
            )
        )
    if problems:
        raise SpecError(problems, source=f"job spec {spec.name}")
    manifest = open_object(previous.output_manifest(), boto3_session)
    reviewed = None
    if decisions:
        review = Review(
            manifest, (jobs.workspace, JobStore.key(previous.name, JOB_REVIEWED_KEY)), attr=earlier
        )
        reviewed = {
            row["index"] for row in review.list_items() if (row["decision"] or "undecided") in decisions
        }
    chosen = [
        line.to_json()
        for number, line in read_augmented_manifest(*manifest, earlier)
        if (below is None or min((o.confidence for o in line.metadata.objects), default=0.0) < below)
        and (reviewed is None or number - 1 in reviewed)
    ]
    if not chosen:
        wanted = [f"a box below {below}"] if below is not None else []
        wanted += [f"the review decision {' or '.join(decisions)}"] if decisions else []
        raise SpecError([("--verify-from", f"no line of {previous.name} has {' and '.join(wanted)}")])
    key = JobStore.key(spec.name, VERIFY_MANIFEST)
    jobs.workspace.put(key, dump_lines(chosen), "application/jsonlines")
    data = spec.model_dump(mode="json")
    data["input_manifest"] = jobs.workspace.uri(key)
    data["verify"] = {"from_job": previous.name, "attribute": earlier, "below": below, "decisions": decisions}
    return parse_spec(data, source=f"job spec {spec.name}")


def start_boxes(item: ManifestItem, attribute: str) -> list[dict]:
    """The earlier job's boxes on one input line, as the element's initial value."""
    label, metadata = item.line[attribute], item.line[f"{attribute}-metadata"]
    return [
        {"label": metadata["class-map"][str(box["class_id"])], **{k: box[k] for k in BOX_KEYS}}
        for box in label["annotations"]
    ]


def add_start_boxes(session: Session, job_id: int, spec: JobSpec, items: list[ManifestItem]) -> None:
    """Store the boxes each task of a verification job starts from (once)."""
    if spec.verify is None:
        return
    have = set(session.scalars(select(TaskStart.task_id).join(Task).where(Task.job_id == job_id)))
    ids = dict(session.execute(select(Task.object_id, Task.id).where(Task.job_id == job_id)).all())
    for item in items:
        if ids[item.object_id] not in have:
            boxes = start_boxes(item, spec.verify.attribute)
            session.add(TaskStart(task_id=ids[item.object_id], boxes=json.dumps(boxes)))


def lease_start_boxes(session: Session, lease_id: int) -> list[dict] | None:
    """The boxes the task of a lease starts from, or None for an ordinary task."""
    boxes = session.scalar(
        select(TaskStart.boxes).join(Lease, Lease.task_id == TaskStart.task_id).where(Lease.id == lease_id)
    )
    return json.loads(boxes) if boxes is not None else None

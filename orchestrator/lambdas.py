"""AWS Lambda entry points.

`consolidation_handler` is a Ground Truth post-annotation (consolidation) Lambda: Ground Truth
sends `{"labelCategories", "labelAttributeName", "payload": {"s3Uri"}, ...}`, the payload file
holds the workers' answers, and the handler returns, for every object of the payload,

    {"datasetObjectId": "0", "consolidatedAnnotation": {"content": {"<attr>": {
        "image_size": [{"width", "height", "depth"}], "annotations": [{"class_id", "left", ...}]}}}}

Ground Truth adds `<attr>-metadata` itself. `labelCategories` may be missing (the test event of
AWS's aws-sagemaker-ground-truth-recipe) or null (jobs created in the console, says that recipe):
then the labels are the ones the payload's answers use, in the order they first appear, and the
log line says so, since class ids then depend on the batch. The same parser, IoUVote and output
code as `labeljob consolidate` run here. Tuning comes from the function's environment:
`LABELJOB_IOU_THRESHOLD`, `LABELJOB_MIN_SUPPORT`, `LABELJOB_COORDINATES`, `LABELJOB_WEIGHTING`.

Each handler imports what it calls inside its body: one module serves both functions, and a cold
start pays only for the handler it runs.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConfigError, StorageError
from orchestrator.redact import install_log_redaction

if TYPE_CHECKING:
    from orchestrator.spec import ConsolidationSpec

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)
# The Lambda runtime's handler on the root logger writes to CloudWatch: mask secrets on the way.
install_log_redaction()

_ENV_PARAMS = {
    "iou_threshold": "LABELJOB_IOU_THRESHOLD",
    "min_support": "LABELJOB_MIN_SUPPORT",
    "coordinates": "LABELJOB_COORDINATES",
    "weighting": "LABELJOB_WEIGHTING",
}


def consolidation_params(environ: dict[str, str] | None = None) -> ConsolidationSpec:
    """IoUVote's settings from the Lambda's environment; unset ones keep their defaults."""
    from pydantic import ValidationError

    from orchestrator.spec import ConsolidationSpec

    environ = os.environ if environ is None else environ
    given = {name: environ[var] for name, var in _ENV_PARAMS.items() if environ.get(var)}
    try:
        return ConsolidationSpec.model_validate(given)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{_ENV_PARAMS[str(err['loc'][0])]}: {err['msg']}") from None


def consolidation_handler(event: dict, context: Any) -> list[dict]:
    """Ground Truth's post-annotation Lambda: consolidate each object's boxes by IoU voting.

    Malformed worker content never fails the call: it is repaired or dropped and counted in the
    log line. An object whose boxes all fail the vote gets empty `annotations`.
    """
    import boto3

    from orchestrator.consolidation import (
        AnswerReport,
        IoUVote,
        ObjectResult,
        labels_in_answers,
        parse_consolidation_columns,
    )
    from orchestrator.outputs import consolidation_entry, label_value
    from orchestrator.storage import open_object

    session = boto3.Session()  # the Lambda's role, from its environment
    given = event.get("labelCategories")
    attr = event["labelAttributeName"]
    store, key = open_object(event["payload"]["s3Uri"], session)

    def fetch(uri: str) -> bytes:
        # Ground Truth may put an answer in S3 instead of inline; a missing one counts as bad JSON.
        try:
            content_store, content_key = open_object(uri, session)
            return content_store.get(content_key)
        except StorageError as exc:
            logger.warning("cannot read answer content %s: %s", uri, exc.message)
            return b""

    report = AnswerReport()
    # Without a label list no box is an unknown label; the list is then read off the answers.
    answers = parse_consolidation_columns(store.get(key), given or None, report, fetch=fetch)
    labels = list(given) if given else labels_in_answers(answers)
    params = consolidation_params()
    results = {
        r.dataset_object_id: r
        for r in IoUVote(**params.model_dump()).fit_predict(answers.answered(), labels=labels)
    }
    response = []
    for object_id, source_ref in zip(answers.object_ids, answers.source_refs, strict=True):
        result = results.get(object_id) or ObjectResult(
            object_id, source_ref, None, None, boxes=[], n_workers=0
        )
        label, _, _ = label_value(result, labels)
        response.append(consolidation_entry(object_id, {attr: label}))
    logger.info(
        json.dumps(
            {
                "labelingJobArn": event.get("labelingJobArn"),
                "objects": len(answers),
                "answers": len(answers.worker_ids),
                "boxes": sum(len(r.boxes) for r in results.values()),
                "repairs": dict(sorted(report.counts.items())),
                "labels_from": "labelCategories" if given else "answers",
                **({} if given else {"labels": labels}),
            }
        )
    )
    return response


def poll_handler(event: dict, context: Any) -> dict[str, str]:
    """The scheduled poll (EventBridge Scheduler): poll every unfinished job of `LABELJOB_WORKSPACE`.

    Ended jobs get their outputs written, as `labeljob poll --all` does. One failing job is
    logged and skipped, so it cannot starve the others. Returns each polled job's status.
    """
    import boto3

    from orchestrator.backends import get_backend
    from orchestrator.jobs import JobStore, finish_job, poll_job
    from orchestrator.storage import open_store
    from orchestrator.training import TRAINING_BACKEND, poll_training

    session = boto3.Session()  # the Lambda's role, from its environment
    jobs = JobStore(open_store(os.environ["LABELJOB_WORKSPACE"], session))

    def finish(spec, record):
        return finish_job(spec, record, jobs, boto3_session=session)

    statuses: dict[str, str] = {}
    for name in jobs.names():
        record = jobs.get(name)
        if record is None or (record.terminal and record.outputs):
            continue
        try:
            if record.backend == TRAINING_BACKEND:
                statuses[name] = poll_training(name, jobs, session).status
                continue
            backend = get_backend(record.backend, boto3_session=session, workspace=jobs.workspace)
            statuses[name] = poll_job(name, backend, jobs, boto3_session=session, finish=finish).status
        except Exception as exc:
            logger.exception("polling job %s failed", name)
            statuses[name] = f"error: {type(exc).__name__}: {exc}"
    logger.info(json.dumps({"polled": statuses}))
    return statuses

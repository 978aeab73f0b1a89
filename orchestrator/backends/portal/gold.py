"""Gold tasks on the portal (docs/portal.md, "Gold tasks").

A job spec's `[quality] gold` manifest is loaded at launch as extra tasks of the job, with their
known boxes in `gold_tasks`. Leasing mixes them into each worker's tasks unannounced: a worker's
next task is gold while fewer than ceil(gold_rate x (answers + 1)) of its answers in the job were
gold, so its very first task is one. Every gold answer is scored at once; with `gold_min_f1`, a
worker below it after `gold_min_seen` gold tasks is blocked from the job, with the reason stored
for the ML lead. Gold tasks never reach the job layer, so no gold answer reaches the outputs.
"""

from __future__ import annotations

import json
import math

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.backends.portal.db import Answer, Block, Database, GoldTask, Job, Lease, Task, Worker
from orchestrator.backends.portal.workers import blocked_in
from orchestrator.consolidation import AnswerReport, Box, GoldScore, parse_element_answer, score_gold, too_low
from orchestrator.outputs import GOLD_ID_PREFIX, GoldItem
from orchestrator.spec import QualitySpec

# Every worker may answer a gold task once; its answer slots must never run out.
GOLD_WANTED = 1_000_000


def gold_rows(job_id: int, gold: list[GoldItem], keys: list[str], time_limit: int) -> list[dict]:
    """Task rows for the gold images; negative positions keep them apart from the manifest's tasks."""
    return [
        {
            "job_id": job_id,
            "position": -1 - n,
            "object_id": f"{GOLD_ID_PREFIX}{n}",
            "source_ref": item.source_ref,
            "image_key": key,
            "wanted": GOLD_WANTED,
            "asked": GOLD_WANTED,
            "answered": 0,
            "time_limit": time_limit,
        }
        for n, (item, key) in enumerate(zip(gold, keys, strict=True))
    ]


def add_gold_boxes(session: Session, job_id: int, gold: list[GoldItem]) -> None:
    """The known boxes of the job's gold tasks that have none yet."""
    have = set(session.scalars(select(GoldTask.task_id).join(Task, Task.id == GoldTask.task_id)))
    tasks = session.execute(
        select(Task.id, Task.object_id).where(
            Task.job_id == job_id, Task.object_id.startswith(GOLD_ID_PREFIX)
        )
    ).all()
    for task_id, object_id in tasks:
        if task_id not in have:
            boxes = gold[int(object_id.removeprefix(GOLD_ID_PREFIX))].boxes
            session.add(GoldTask(task_id=task_id, boxes=json.dumps(boxes)))


def not_gold():
    """SQL condition: the task in the query is not a gold task."""
    return ~exists().where(GoldTask.task_id == Task.id)


def quality(session: Session, job_id: int) -> QualitySpec | None:
    raw = json.loads(session.scalar(select(Job.spec).where(Job.id == job_id))).get("quality")
    return QualitySpec.model_validate(raw) if raw else None


def due_gold_task(session: Session, job_id: int, worker_id: int) -> Task | None:
    """The gold task the worker should get next in the job, or None when a normal task is due."""
    rules = quality(session, job_id)
    if rules is None or rules.gold is None:
        return None
    answered, gold_answered = session.execute(
        select(func.count(Answer.id), func.count(GoldTask.task_id))
        .join(Task, Task.id == Answer.task_id)
        .outerjoin(GoldTask, GoldTask.task_id == Task.id)
        .where(Task.job_id == job_id, Answer.worker_id == worker_id)
    ).one()
    if gold_answered >= math.ceil(rules.gold_rate * (answered + 1)):
        return None
    answered_by_me = exists().where(Answer.task_id == Task.id, Answer.worker_id == worker_id)
    return session.scalars(
        select(Task)
        .join(GoldTask, GoldTask.task_id == Task.id)
        .where(Task.job_id == job_id, ~answered_by_me)
        .order_by(Task.position.desc())
        .limit(1)
    ).first()


def worker_gold_scores(session: Session, job_id: int, worker_id: int | None = None) -> dict[int, GoldScore]:
    """Worker (database id) -> its score over the gold tasks of the job it answered."""
    labels = json.loads(session.scalar(select(Job.spec).where(Job.id == job_id)))["labels"]
    query = (
        select(Answer.worker_id, Answer.content, GoldTask.boxes)
        .join(GoldTask, GoldTask.task_id == Answer.task_id)
        .join(Task, Task.id == Answer.task_id)
        .where(Task.job_id == job_id)
    )
    if worker_id is not None:
        query = query.where(Answer.worker_id == worker_id)
    scores: dict[int, GoldScore] = {}
    report = AnswerReport()
    for worker, content, boxes in session.execute(query):
        answer = parse_element_answer(json.loads(content), str(worker), labels, report)
        drawn = answer.boxes if answer is not None else []
        truth = [Box.model_construct(**box) for box in json.loads(boxes)]
        scores[worker] = scores.get(worker, GoldScore()) + score_gold(drawn, truth)
    return scores


def public_gold_scores(session: Session, job_id: int) -> dict[str, GoldScore]:
    """Worker id as written in answers -> its gold score in the job."""
    scores = worker_gold_scores(session, job_id)
    ids = dict(session.execute(select(Worker.id, Worker.public_id).where(Worker.id.in_(list(scores)))).all())
    return {ids[worker]: score for worker, score in scores.items()}


def after_answer(db: Database, worker_id: int, lease_id: int, now: float) -> None:
    """Score a gold answer as soon as it is stored, and block the worker when `gold_min_f1` says so."""
    try:
        with db.write() as session:
            job_id = session.scalar(
                select(Task.job_id)
                .join(Lease, Lease.task_id == Task.id)
                .join(GoldTask, GoldTask.task_id == Task.id)
                .where(Lease.id == lease_id)
            )
            if job_id is None:
                return  # not a gold task
            rules = quality(session, job_id)
            if rules is None or rules.gold_min_f1 is None:
                return
            score = worker_gold_scores(session, job_id, worker_id).get(worker_id, GoldScore())
            reason = too_low(score, rules.gold_min_f1, rules.gold_min_seen)
            if reason is None or session.scalar(select(blocked_in(worker_id, job_id))):
                return
            session.add(Block(job_id=job_id, worker_id=worker_id, reason=reason, created_at=now))
    except IntegrityError:
        pass  # another portal process blocked the worker at the same moment

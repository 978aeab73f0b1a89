"""The `portal` backend: labeljob's own job portal (`labeljob portal serve`) as a workforce.

Launch loads the manifest into the portal's database, one task per object wanting
`workers_per_object` answers. Poll reads the counters and hands over the answers of every object
whose answers are final (and, once the job is stopped, of every object that has any).

With `[task.adaptive]` a task wants `max_workers` answers but asks for `min_workers` at first
(`Task.asked`). Each poll runs the stopping rule, with the worker weights of the whole job so far,
on every task that has the answers it asked for: a settled task is final, another asks for one more
answer. A task is handed over once final (settled, or at `max_workers`), so its answers never change
after; the job completes when every task is.

Which objects were handed over is tracked by a poll generation: a poll marks the tasks it
reports with generation G+1, where G is the generation in the job record, and returns G+1 for
the record. The job layer writes the record only after storing the answers, so if it crashes in
between the record still says G and the next poll reports those tasks again (the job layer's
writes are idempotent); nothing is lost and nothing is reported twice in the normal case.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from orchestrator.backends.portal import catalog, rounds
from orchestrator.backends.portal.db import (
    Answer,
    Database,
    Drop,
    Provisional,
    Task,
    Worker,
    default_db_url,
    open_database,
    redacted,
)
from orchestrator.backends.portal.gold import not_gold, public_gold_scores
from orchestrator.backends.portal.media import split_image_root
from orchestrator.consolidation import (
    AnswerReport,
    IoUVote,
    ObjectAnswers,
    expected_answers,
    parse_element_answer,
)
from orchestrator.errors import BackendError, ConfigError
from orchestrator.jobs import GOLD_SCORES, CostEstimate, CostLine, LaunchPlan, PollResult, overlap_state
from orchestrator.outputs import read_gold, stopping_rule

if TYPE_CHECKING:
    from orchestrator.jobs import JobRecord, ManifestItem
    from orchestrator.spec import JobSpec
    from orchestrator.storage import ObjectStore

GENERATION = "portal_poll_generation"
# `launch --dry-run` prints this many task requests, then a count of the rest.
PLAN_TASKS_SHOWN = 10
# Task ids per UPDATE, well under every database's limit on bound parameters.
CHUNK = 500


class PortalBackend:
    """Jobs on labeljob's own portal: no fee, no AWS account, workers by invite or marketplace link."""

    name = "portal"

    def __init__(self, workspace: ObjectStore | None, boto3_session=None, db_url: str | None = None) -> None:
        self.workspace = workspace
        self.boto3_session = boto3_session
        self.db_url = db_url
        self._db: Database | None = None

    def database(self) -> Database:
        """The portal database, opened (and its tables created) on first use."""
        if self._db is None:
            self._db = open_database(default_db_url(self.workspace, self.db_url))
        return self._db

    def validate(self, spec: JobSpec) -> list[tuple[str, str]]:
        problems = []
        if spec.workforce.type != "private":
            problems.append(
                (
                    "workforce.type",
                    "the portal's workers are the ones you invite or send from a marketplace link: "
                    "use private",
                )
            )
        url = spec.portal.public_url
        if url is not None and not url.startswith(("http://", "https://")):
            problems.append(("portal.public_url", "must be an http:// or https:// URL"))
        return problems

    def estimate(self, spec: JobSpec, n_objects: int) -> CostEstimate:
        notes = ["the self-hosted portal charges nothing; pay your workers whatever you agreed with them"]
        adaptive = spec.task.adaptive
        if adaptive is None:
            return CostEstimate(
                [CostLine("portal answers (no fee)", n_objects * spec.task.workers_per_object, 0.0)], notes
            )
        low, high = adaptive.min_workers, adaptive.max_workers
        expected = expected_answers(low, high)
        notes.append(
            f"adaptive: {n_objects * low:,} answers at least, about {round(n_objects * expected):,} expected "
            f"({expected:.1f} per object, as on the pedestrians-dev benchmark), {n_objects * high:,} at most"
        )
        return CostEstimate([CostLine("portal answers at most (no fee)", n_objects * high, 0.0)], notes)

    def plan(self, spec: JobSpec, items: list[ManifestItem] | None, record: JobRecord) -> LaunchPlan:
        warnings = []
        try:
            database = redacted(default_db_url(self.workspace, self.db_url))
        except ConfigError as exc:
            database = "(none)"
            warnings.append(f"{exc.message}; {exc.hint}")
        n_objects = len(items) if items is not None else None
        adaptive = spec.task.adaptive
        per_object: int | str = spec.task.workers_per_object
        first_ask = spec.task.workers_per_object
        if adaptive is not None:
            per_object = f"{adaptive.min_workers} to {adaptive.max_workers}, as the stopping rule asks"
            first_ask = adaptive.min_workers
        requests: list[dict] = [
            {
                "request": "create portal job",
                "database": database,
                "job": spec.name,
                "objects": n_objects,
                "answers_per_object": per_object,
                "time_limit_seconds": spec.task.time_limit,
            }
        ]
        if items is None:
            warnings.append("the manifest was not read (dry run on s3://): tasks are not listed")
        else:
            requests += [
                {
                    "request": "create task",
                    "object_id": item.object_id,
                    "source_ref": item.source_ref,
                    "answers": first_ask,
                }
                for item in items[:PLAN_TASKS_SHOWN]
            ]
            if len(items) > PLAN_TASKS_SHOWN:
                requests.append({"request": f"create {len(items) - PLAN_TASKS_SHOWN} more tasks likewise"})
        return LaunchPlan(requests, self.estimate(spec, n_objects or 0), warnings)

    def check_items(self, spec: JobSpec, items: list[ManifestItem]) -> None:
        """The images, gold ones included, are of served types, in one bucket or in the one folder the
        portal serves them from (see media.split_image_root)."""
        gold = read_gold(spec, self.boto3_session)
        split_image_root(
            [item.source_ref for item in items] + [g.source_ref for g in gold], spec.portal.image_folder
        )

    def launch(self, spec: JobSpec, items: list[ManifestItem], record: JobRecord) -> dict:
        db = self.database()
        gold = read_gold(spec, self.boto3_session)
        for attempt in range(2):
            try:
                with db.write() as session:
                    job, _created = catalog.load_job(session, spec, items, time.time(), gold)
                break
            except IntegrityError:
                # Another process created the same job at the same moment (PostgreSQL): load again.
                if attempt:
                    raise
        state = {"portal_job_id": job.id, "portal_database": redacted(db.url)}
        if spec.portal.public_url:
            state["portal_url"] = spec.portal.public_url
        return state

    def poll(self, spec: JobSpec, record: JobRecord) -> PollResult:
        generation = int(record.backend_state.get(GENERATION, 0))
        labels = list(spec.labels)
        with self.database().write() as session:
            job = catalog.job_by_name(session, spec.name)
            if job is None:
                raise BackendError(
                    f"the portal database {redacted(self.database().url)} has no job {spec.name!r}",
                    hint="poll with the same --db (or workspace) the job was launched with",
                )
            stopped = job.status == "stopped"
            if spec.task.adaptive is not None and not stopped:
                self._decide(session, job.id, spec, time.time())
            final = catalog.task_final()
            total, labeled, final_answers = session.execute(
                select(
                    func.count(Task.id),
                    func.count(Task.id).filter(final),
                    func.coalesce(func.sum(Task.answered).filter(final), 0),
                ).where(Task.job_id == job.id, not_gold(), rounds.current())
            ).one()
            ready = Task.answered > 0 if stopped else final
            tasks = session.scalars(
                select(Task)
                .where(
                    Task.job_id == job.id,
                    not_gold(),
                    rounds.current(),
                    ready,
                    or_(Task.reported_in.is_(None), Task.reported_in > generation),
                )
                .order_by(Task.position)
            ).all()
            answers = self._answers(session, tasks, labels)
            iterations = rounds.round_numbers(session, list(tasks))
            ids = [task.id for task in tasks]
            for start in range(0, len(ids), CHUNK):
                session.execute(
                    update(Task)
                    .where(Task.id.in_(ids[start : start + CHUNK]))
                    .values(reported_in=generation + 1)
                )
            dropped = self._dropped(session, job.id, generation)
            scores = public_gold_scores(session, job.id)
            unlabeled = []
            if stopped:
                unlabeled = list(
                    session.scalars(
                        select(Task.object_id)
                        .where(Task.job_id == job.id, ~final, not_gold(), rounds.current())
                        .order_by(Task.position)
                    )
                )
        status = "stopped" if stopped else "completed" if labeled == total else "in_progress"
        state: dict = {GENERATION: generation + 1}
        if scores:
            state[GOLD_SCORES] = {worker: score.as_dict() for worker, score in scores.items()}
        if spec.task.adaptive is not None:
            state.update(overlap_state(labeled, int(final_answers), spec.task.workers_per_object))
        return PollResult(
            status=status,
            total=total,
            labeled=labeled,
            answers=answers,
            backend_state=state,
            unlabeled_ids=unlabeled,
            dropped_workers=dropped,
            iterations=iterations,
        )

    @staticmethod
    def _dropped(session, job_id: int, generation: int) -> list[str]:
        """The workers whose answers `portal block --drop-answers` deleted from the job since the job
        layer last recorded a poll (so a poll that died before recording it names them again)."""
        unreported = or_(Drop.reported_in.is_(None), Drop.reported_in > generation)
        dropped = session.scalars(
            select(Worker.public_id)
            .join(Drop, Drop.worker_id == Worker.id)
            .where(Drop.job_id == job_id, unreported)
            .distinct()
        ).all()
        session.execute(
            update(Drop).where(Drop.job_id == job_id, unreported).values(reported_in=generation + 1)
        )
        return sorted(dropped)

    def _decide(self, session, job_id: int, spec: JobSpec, now: float) -> None:
        """Settle, or ask one more answer for, every task that has the answers it asked for."""
        waiting = session.scalars(
            select(Task)
            .where(
                Task.job_id == job_id,
                Task.answered >= Task.asked,
                Task.answered < Task.wanted,
                Task.settled_at.is_(None),
            )
            .order_by(Task.position)
            .with_for_update()
        ).all()
        if not waiting:
            return
        labels = list(spec.labels)
        answered = session.scalars(
            select(Task).where(Task.job_id == job_id, Task.answered > 0).order_by(Task.position)
        ).all()
        objects = self._answers(session, answered, labels)
        weights = IoUVote(**spec.consolidation.model_dump()).fit(objects, labels=labels).skills_
        by_id = {obj.dataset_object_id: obj for obj in objects}
        decisions = stopping_rule(spec).fit_predict([by_id[t.object_id] for t in waiting], weights, labels)
        settled = [t.id for t, d in zip(waiting, decisions, strict=True) if not d.needs_more]
        more = [t.id for t, d in zip(waiting, decisions, strict=True) if d.needs_more]
        for start in range(0, max(len(settled), len(more)), CHUNK):
            chunk = slice(start, start + CHUNK)
            session.execute(update(Task).where(Task.id.in_(settled[chunk])).values(settled_at=now))
            session.execute(update(Task).where(Task.id.in_(more[chunk])).values(asked=Task.asked + 1))

    @staticmethod
    def _answers(session, tasks: list[Task], labels: list[str]) -> list[ObjectAnswers]:
        by_task: dict[int, list] = {task.id: [] for task in tasks}
        ids = list(by_task)
        report = AnswerReport()
        for start in range(0, len(ids), CHUNK):
            rows = session.execute(
                select(Answer, Worker.public_id)
                .join(Worker, Worker.id == Answer.worker_id)
                .where(
                    Answer.task_id.in_(ids[start : start + CHUNK]),
                    ~exists().where(Provisional.answer_id == Answer.id),  # not approved yet
                )
                .order_by(Answer.task_id, Answer.slot)
            ).all()
            for answer, public_id in rows:
                # Every answer was parsed once when it was submitted; this only rebuilds the model.
                parsed = parse_element_answer(
                    json.loads(answer.content),
                    public_id,
                    labels,
                    report,
                    submitted_at=datetime.fromtimestamp(answer.submitted_at, UTC).isoformat(),
                    time_spent_seconds=answer.seconds,
                )
                if parsed is not None:
                    by_task[answer.task_id].append(parsed)
        return [
            ObjectAnswers(
                dataset_object_id=task.object_id, source_ref=task.source_ref, answers=by_task[task.id]
            )
            for task in tasks
        ]

    def stop(self, spec: JobSpec, record: JobRecord) -> None:
        with self.database().write() as session:
            if not catalog.stop_job(session, spec.name, time.time()):
                raise BackendError(f"the portal database has no job {spec.name!r}")

"""The Mechanical Turk backend: one HIT per manifest line, reviewed and consolidated by labeljob.

Mechanical Turk closed permanently on 2026-09-30, as its API reference says; this backend stays for
requesters whose accounts the service may still serve.

Launch: one HIT type per job, then one HIT per manifest line. Each HIT's `UniqueRequestToken`
and `RequesterAnnotation` derive from job and object, and the HIT ids are written to the job
record as they are created, so a launch that crashed at any point, run again, creates each
missing HIT exactly once. Poll: only the HITs in the record; answers of approved assignments
are handed to the job layer. Review reads each assignment's status before acting on it, so a
poll that crashed between approving and recording never approves or rejects twice.

Adaptive overlap (`[task.adaptive]`): HITs start with `min_workers` assignments. When a HIT has
all it asked for, approved, the stopping rule decides (worker weights from the approved answers of
the HITs this poll read): a settled HIT is final, another gets one more assignment with
`CreateAdditionalAssignmentsForHIT`, whose token names the HIT's new total, so a poll repeated
after a crash adds nothing twice. How many answers a HIT asks for is read back from MTurk
(`MaxAssignments` less the rejected ones), so a record older than the last extension cannot lower it.

Backend state in the job record:
    hit_type_id          the job's HIT type
    launch_started_at    when the first HIT may have been created (UniqueRequestToken lasts 24 h)
    images_valid_until   when the presigned image URLs inside the questions expire
    hits                 object id -> {"hit", "source_ref", "answers" (handed over),
                         "final" (no more work will come), "extensions", and in an adaptive job
                         "asked" (answers asked for) and "settled" (by the stopping rule)}
    rejected             assignment id -> worker id, for every assignment this job rejected
    flagged              assignment id -> {"object", "worker", "problem"}: unreadable answers
    blocked              worker ids blocked with CreateWorkerBlock
    gold_hits            gold object id -> {"hit", "source_ref", "expired"} (docs/mturk.md, "Gold tasks")
    gold_scored          gold assignment id -> [worker id, its GoldScore]: each scored once
    gold_revoked         worker id -> why `gold_min_f1` took its pool qualification away
    gold_scores          worker id -> its summed GoldScore, for consolidation and the workers report
    stop_requested_at    set by `labeljob stop`
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from orchestrator.backends.mturk.client import (
    HIT_ALREADY_EXISTS,
    INVALID_ASSIGNMENT_STATE,
    MTurkError,
    call,
    mturk_client,
    paginate,
)
from orchestrator.backends.mturk.fees import LARGE_HIT_ASSIGNMENTS, assignment_fee, job_cost
from orchestrator.backends.mturk.gold import (
    GOLD_HITS,
    GOLD_SCORED,
    below_the_bar,
    gold_assignments,
    gold_object_id,
    score,
    worker_scores,
)
from orchestrator.backends.mturk.hits import (
    annotation,
    assignment_cap,
    first_assignments,
    hit_request,
    hit_type_request,
    most_assignments,
    qualification_requirements,
    request_token,
    settings,
    spec_problems,
    spec_warnings,
)
from orchestrator.backends.mturk.question import Questions
from orchestrator.backends.mturk.review import Submission, Verdict, review
from orchestrator.consolidation import (
    AnswerReport,
    IoUVote,
    ObjectAnswers,
    WorkerAnswer,
    expected_answers,
    parse_mturk_answer,
)
from orchestrator.errors import BackendError, ConfigError
from orchestrator.jobs import (
    GOLD_REMOVED,
    GOLD_SCORES,
    CostEstimate,
    CostLine,
    JobRecord,
    JobStore,
    LaunchPlan,
    ManifestItem,
    PollResult,
    overlap_state,
    utcnow,
)
from orchestrator.outputs import GOLD_ID_PREFIX, read_gold, stopping_rule
from orchestrator.spec import MTURK_CLOSED

if TYPE_CHECKING:
    import boto3

    from orchestrator.spec import JobSpec
    from orchestrator.storage import ObjectStore

# HIT ids reach the record in batches: a crash loses at most this many, which the next launch
# recovers through their request tokens.
SAVE_EVERY = 25
# MTurk forgets a UniqueRequestToken after 24 h; past this, a resumed launch looks HITs up instead.
TOKEN_TRUST = timedelta(hours=23)
# Expiring a HIT means moving its expiration into the past; a fixed instant makes a repeated stop
# the same request, which MTurk answers with "already been processed".
PAST = datetime(2015, 1, 1, tzinfo=UTC)
# Under `agreement`, a submission is reviewed early once this share of its auto-approval delay is left.
REVIEW_MARGIN = 0.25
HIT_DOES_NOT_EXIST = "AWS.MechanicalTurk.HITDoesNotExist"
_HIT_ID = re.compile(r"\b[A-Z0-9]{20,64}\b")


@dataclass
class CleanupReport:
    """What `labeljob cleanup` did: HITs deleted (or gone already) and HITs kept, with why."""

    deleted: list[str] = field(default_factory=list)
    kept: list[dict] = field(default_factory=list)


@dataclass
class _Ledger:
    """Job-wide review bookkeeping of one poll, written back to the record by the job layer."""

    rejected: dict[str, str]
    flagged: dict[str, dict]
    blocked: list[str]


@dataclass
class _Complete:
    """An adaptive HIT with, approved, all the answers it asked for: the stopping rule's to decide."""

    hit_id: str
    asked: int
    n_rejected: int
    approved: list[WorkerAnswer]


class MTurkBackend:
    """Mechanical Turk HITs from the shared task template; labeljob's own review and consolidation."""

    name = "mturk"

    def __init__(
        self,
        *,
        boto3_session: boto3.Session | None = None,
        workspace: ObjectStore | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.boto3_session = boto3_session
        self.workspace = workspace
        self.clock = clock

    def client(self, spec: JobSpec):
        """The MTurk client of the job's environment (sandbox or production)."""
        return mturk_client(self.boto3_session, settings(spec).sandbox)

    def _jobs(self) -> JobStore:
        if self.workspace is None:
            raise ConfigError("the MTurk backend needs a workspace to record the HITs it creates")
        return JobStore(self.workspace)

    # ------------------------------------------------------------------------------ checking

    def validate(self, spec: JobSpec) -> list[tuple[str, str]]:
        return spec_problems(spec)

    def estimate(self, spec: JobSpec, n_objects: int) -> CostEstimate:
        """Reward and fees if every assignment is approved; zero in the sandbox, with the real price noted."""
        m = settings(spec)
        workers = most_assignments(spec)
        cost = job_cost(m.reward_usd, n_objects, workers, m.masters)
        commission = assignment_fee(cost.reward, workers, masters=False)
        n = cost.total_assignments

        def price(amount: Decimal) -> float:
            return 0.0 if m.sandbox else float(amount)

        share = (
            "40 % (20 % + 20 % for 10 or more assignments)" if workers >= LARGE_HIT_ASSIGNMENTS else "20 %"
        )
        lines = [
            CostLine(f"reward: {n_objects} HITs x {workers} assignments", n, price(cost.reward)),
            CostLine(f"MTurk fee: {share} of the reward, at least $0.01 an assignment", n, price(commission)),
        ]
        if m.masters:
            lines.append(CostLine("MTurk Masters fee: 5 % of the reward", n, price(cost.fee - commission)))
        notes = []
        if m.sandbox:
            notes.append(f"sandbox: nothing is charged; in production this job would cost ${cost.total:.2f}")
        adaptive = spec.task.adaptive
        if adaptive is not None and n:
            per_answer = float(cost.total) / n
            expected = expected_answers(adaptive.min_workers, adaptive.max_workers)
            notes.append(
                f"adaptive: the lines are the most ({adaptive.max_workers} answers per object); at least "
                f"${per_answer * n_objects * adaptive.min_workers:.2f} ({adaptive.min_workers} each), about "
                f"${per_answer * n_objects * expected:.2f} expected ({expected:.1f} each, as on the "
                "pedestrians-dev benchmark; a crowd that disagrees more spends more)"
            )
        notes += [w for w in spec_warnings(spec) if "fee" in w]
        notes.append("fees are charged on approval; rejected work is neither paid nor charged")
        notes.append(MTURK_CLOSED)
        return CostEstimate(lines, notes)

    def plan(self, spec: JobSpec, items: list[ManifestItem] | None, record: JobRecord) -> LaunchPlan:
        """The requests `launch` makes, in order; the HIT type id is shown as a placeholder."""
        m = settings(spec)
        questions = Questions(spec, self.boto3_session)
        warnings = spec_warnings(spec)
        if m.question == "html" and questions.lifetime.warning:
            warnings.append(questions.lifetime.warning)
        requests: list[dict] = []
        if not m.sandbox:
            requests.append({"operation": "GetAccountBalance", "params": {}})
        pool_id = None
        if spec.workforce.type == "private":
            from orchestrator.backends.mturk.pool import pool_name

            requests.append(
                {
                    "operation": "ListQualificationTypes",
                    "params": {
                        "Query": pool_name(spec.workforce.team or ""),
                        "MustBeRequestable": False,
                        "MustBeOwnedByCaller": True,
                        "MaxResults": 100,
                    },
                }
            )
            pool_id = f"<QualificationTypeId of team {spec.workforce.team}'s pool>"
        requirements = qualification_requirements(spec, pool_id)
        requests.append({"operation": "CreateHITType", "params": hit_type_request(spec, requirements)})
        hit_type_id = "<HITTypeId from CreateHITType>"
        if items is None:
            warnings.append(
                "the manifest is in S3 and a dry run reads nothing remote: one CreateHITWithHITType per "
                "manifest line is shown as a template"
            )
            params = hit_request(spec, hit_type_id, "<object id>", "<the question of each manifest line>")
            requests.append({"operation": "CreateHITWithHITType", "params": params})
        for item in items or ():
            params = hit_request(
                spec, hit_type_id, item.object_id, questions.question(item.object_id, item.source_ref)
            )
            requests.append({"operation": "CreateHITWithHITType", "params": params})
        return LaunchPlan(requests, self.estimate(spec, len(items or ())), warnings)

    # -------------------------------------------------------------------------------- launch

    def check_items(self, spec: JobSpec, items: list[ManifestItem]) -> None:
        """Every object's question renders and fits MTurk's limit (image links are signed locally)."""
        questions = Questions(spec, self.boto3_session)
        for item in items:
            questions.question(item.object_id, item.source_ref)

    def launch(self, spec: JobSpec, items: list[ManifestItem], record: JobRecord) -> dict:
        """Create the HIT type and every HIT the record does not hold yet; returns the backend state."""
        m = settings(spec)
        jobs = self._jobs()
        questions = Questions(spec, self.boto3_session)
        hits: dict[str, dict] = {k: dict(v) for k, v in record.backend_state.get("hits", {}).items()}
        missing = [item for item in items if item.object_id not in hits]
        mturk = self.client(spec)
        if missing and not m.sandbox:
            self._check_balance(mturk, spec, len(missing))
        pool_id = self._pool(mturk, spec)
        requirements = qualification_requirements(spec, pool_id)
        # MTurk returns the existing HIT type for identical values: this call is idempotent.
        hit_type_id = call(mturk, "CreateHITType", **hit_type_request(spec, requirements))["HITTypeId"]
        now = self.clock()
        started = _time(record.backend_state.get("launch_started_at")) or now
        valid_until = now + timedelta(seconds=questions.lifetime.seconds)
        earlier = _time(record.backend_state.get("images_valid_until"))
        intent = {
            "hit_type_id": hit_type_id,
            "launch_started_at": started.isoformat(),
            "images_valid_until": min(valid_until, earlier or valid_until).isoformat(),
        }
        # The intent is on record before the first HIT can exist.
        jobs.update(spec.name, lambda rec: rec.backend_state.update(intent))
        if missing and now - started > TOKEN_TRUST:
            found = self._find_hits(mturk, spec, hit_type_id)
            for item in missing:
                if item.object_id in found:
                    hits[item.object_id] = {"hit": found[item.object_id], "source_ref": item.source_ref}
            missing = [item for item in missing if item.object_id not in hits]
        for count, item in enumerate(missing, start=1):
            hit_id = self._create_hit(mturk, spec, hit_type_id, item, questions)
            hits[item.object_id] = {"hit": hit_id, "source_ref": item.source_ref}
            if count % SAVE_EVERY == 0:
                self._save_hits(jobs, spec.name, hits)
        gold_items = read_gold(spec, self.boto3_session)
        if not gold_items:
            return {**intent, "hits": hits}
        gold_hits = {k: dict(v) for k, v in record.backend_state.get(GOLD_HITS, {}).items()}
        per_hit = gold_assignments(spec, len(items), len(gold_items))
        for n, found in enumerate(gold_items):
            object_id = gold_object_id(n)
            if object_id not in gold_hits:
                item = ManifestItem(object_id, found.source_ref, {})
                hit_id = self._create_hit(mturk, spec, hit_type_id, item, questions, per_hit)
                gold_hits[object_id] = {"hit": hit_id, "source_ref": found.source_ref}
        return {**intent, "hits": hits, GOLD_HITS: gold_hits}

    def _check_balance(self, mturk, spec: JobSpec, n_hits: int) -> None:
        m = settings(spec)
        needed = job_cost(m.reward_usd, n_hits, most_assignments(spec), m.masters).total
        available = Decimal(call(mturk, "GetAccountBalance")["AvailableBalance"])
        if available < needed:
            raise BackendError(
                f"the MTurk account balance is ${available:.2f}; this job may cost ${needed:.2f}",
                hint="prepay funds on the requester website, or launch fewer objects",
            )

    def _pool(self, mturk, spec: JobSpec) -> str | None:
        """The private pool's qualification type id for a private workforce; None for the public crowd."""
        if spec.workforce.type != "private":
            return None
        from orchestrator.backends.mturk.pool import find_pool

        team = spec.workforce.team or ""
        pool_id = find_pool(mturk, team)
        if pool_id is None:
            raise BackendError(
                f"team {team} has no MTurk worker pool on this endpoint",
                hint=f"add workers with `labeljob workforce grant WORKER_ID... --team {team}`",
            )
        return pool_id

    def _create_hit(
        self,
        mturk,
        spec: JobSpec,
        hit_type_id: str,
        item: ManifestItem,
        questions: Questions,
        assignments: int | None = None,
    ) -> str:
        question = questions.question(item.object_id, item.source_ref)
        request = hit_request(spec, hit_type_id, item.object_id, question, assignments)
        try:
            return call(mturk, "CreateHITWithHITType", **request)["HIT"]["HITId"]
        except MTurkError as exc:
            if exc.turk_code != HIT_ALREADY_EXISTS:
                raise
            return self._recover_hit(mturk, spec, hit_type_id, item.object_id, exc)

    def _recover_hit(self, mturk, spec: JobSpec, hit_type_id: str, object_id: str, exc: MTurkError) -> str:
        """The HIT an earlier attempt created with this token: named in the message, else looked up."""
        wanted = annotation(spec, object_id)
        for candidate in _HIT_ID.findall(exc.service_message):
            try:
                hit = call(mturk, "GetHIT", HITId=candidate)["HIT"]
            except MTurkError:
                continue
            if hit.get("RequesterAnnotation") == wanted:
                return candidate
        found = self._find_hits(mturk, spec, hit_type_id).get(object_id)
        if found is None:
            raise BackendError(
                f"MTurk says the HIT of object {object_id} exists, but no HIT of this job's type names it",
                hint="run `labeljob launch` again in a minute",
            )
        return found

    def _find_hits(self, mturk, spec: JobSpec, hit_type_id: str) -> dict[str, str]:
        """Object id -> HIT id of this job's HITs, by HIT type and annotation.

        MTurk has no listing per HIT type, so this reads the account's HIT list; it is the last
        resort of a launch resumed after the 24 h token window, and acts on nothing it lists.
        """
        prefix = annotation(spec, "")
        found = {}
        for hit in paginate(mturk, "ListHITs", "HITs"):
            note = hit.get("RequesterAnnotation") or ""
            if hit.get("HITTypeId") == hit_type_id and note.startswith(prefix):
                found[note[len(prefix) :]] = hit["HITId"]
        return found

    @staticmethod
    def _save_hits(jobs: JobStore, name: str, hits: dict[str, dict]) -> None:
        def save(rec: JobRecord) -> None:
            rec.backend_state["hits"] = {**rec.backend_state.get("hits", {}), **hits}

        jobs.update(name, save)

    # ---------------------------------------------------------------------------------- poll

    def poll(self, spec: JobSpec, record: JobRecord) -> PollResult:
        """Review and collect the work of every HIT not final yet; extend or top up what is missing."""
        state = record.backend_state
        hits = {k: dict(v) for k, v in state.get("hits", {}).items()}
        ledger = _Ledger(
            rejected=dict(state.get("rejected", {})),
            flagged=dict(state.get("flagged", {})),
            blocked=list(state.get("blocked", [])),
        )
        stopping = "stop_requested_at" in state
        valid_until = _time(state.get("images_valid_until"))
        mturk = self.client(spec) if hits else None
        answers = []
        complete: dict[str, _Complete] = {}
        for object_id, entry in hits.items():
            if entry.get("final"):
                continue
            found = self._poll_hit(mturk, spec, object_id, entry, ledger, stopping, valid_until, complete)
            if found is not None:
                answers.append(found)
        if complete:
            self._decide(mturk, spec, hits, complete)
        self._block_repeat_offenders(mturk, spec, ledger)
        gold_state = self._poll_gold(spec, state, ledger) if state.get(GOLD_HITS) else {}
        final = [entry for entry in hits.values() if entry.get("final")]
        labeled = sum(1 for entry in final if entry.get("answers", 0) > 0)
        status, reason = "in_progress", None
        if record.status == "launching":
            status = "launching"  # a resumed `labeljob launch` finishes it
        elif len(final) == len(hits) >= record.counters.total:
            status = "stopped" if stopping else "completed"
            if not labeled and not stopping:
                status, reason = "failed", "no worker answered any HIT before it expired"
        if gold_state and status != "in_progress":
            self._expire_gold(spec, gold_state[GOLD_HITS])
        kept = {
            "hits": hits,
            "rejected": ledger.rejected,
            "flagged": ledger.flagged,
            "blocked": ledger.blocked,
            **gold_state,
        }
        if spec.task.adaptive is not None:
            answered = sum(entry.get("answers", 0) for entry in final)
            kept.update(overlap_state(len(final), answered, spec.task.workers_per_object))
        return PollResult(
            status=status,
            total=record.counters.total,
            labeled=labeled,
            failed=len(final) - labeled,
            failure_reason=reason,
            answers=answers,
            backend_state=kept,
            unlabeled_ids=[k for k, entry in hits.items() if entry.get("final") and not entry.get("answers")],
        )

    def _poll_hit(
        self,
        mturk,
        spec: JobSpec,
        object_id: str,
        entry: dict,
        ledger: _Ledger,
        stopping: bool,
        valid_until: datetime | None,
        complete: dict[str, _Complete],
    ) -> ObjectAnswers | None:
        """Review, collect and keep one HIT going; updates `entry` and `ledger` in place. An adaptive
        HIT that has, approved, all it asked for and may grow goes into `complete` for the rule."""
        m = settings(spec)
        hit_id = entry["hit"]
        hit = call(mturk, "GetHIT", HITId=hit_id)["HIT"]
        assignments = list(
            paginate(
                mturk,
                "ListAssignmentsForHIT",
                "Assignments",
                HITId=hit_id,
                AssignmentStatuses=["Submitted", "Approved", "Rejected"],
            )
        )
        parsed = {a["AssignmentId"]: self._parse(spec, object_id, a, ledger) for a in assignments}
        for a in assignments:
            if a["AssignmentStatus"] == "Rejected":
                # Ours, perhaps from a poll that crashed before recording it.
                ledger.rejected.setdefault(a["AssignmentId"], a["WorkerId"])
        now = self.clock()
        pending = hit.get("NumberOfAssignmentsPending", 0)
        expired = hit["Expiration"] <= now
        all_in = pending == 0 and (len(assignments) >= hit["MaxAssignments"] or expired)
        due = [
            a
            for a in assignments
            if a["AssignmentStatus"] == "Submitted" and self._due(m, a, all_in or stopping, now)
        ]
        if due:
            readable = [
                parsed[a["AssignmentId"]]
                for a in assignments
                if a["AssignmentStatus"] != "Rejected" and parsed[a["AssignmentId"]] is not None
            ]
            submissions = [
                Submission(a["AssignmentId"], a["WorkerId"], parsed[a["AssignmentId"]]) for a in due
            ]
            verdicts = review(m.review_policy, submissions, readable, spec.labels, spec.consolidation)
            for a in due:
                a["AssignmentStatus"] = self._settle(mturk, a["AssignmentId"], verdicts[a["AssignmentId"]])
                if a["AssignmentStatus"] == "Rejected":
                    ledger.rejected[a["AssignmentId"]] = a["WorkerId"]
        max_assignments = hit["MaxAssignments"]
        n_rejected = sum(1 for a in assignments if a["AssignmentStatus"] == "Rejected")
        # A fixed job asks for workers_per_object; an adaptive one for what the rule asked, which
        # MTurk holds too: after a crash between extending and recording, MaxAssignments is ahead.
        asked = max(entry.get("asked", first_assignments(spec)), max_assignments - n_rejected)
        if not stopping:
            target = min(asked + n_rejected, assignment_cap(most_assignments(spec)))
            if target > max_assignments:
                self._add_assignments(mturk, spec, object_id, hit_id, target - max_assignments, target)
                max_assignments = target
        missing = max_assignments - len(assignments) - pending
        if (
            missing > 0
            and expired
            and pending == 0
            and not stopping
            and self._may_extend(spec, entry, now, valid_until)
        ):
            self._set_expiration(mturk, hit_id, now + timedelta(seconds=spec.task.lifetime))
            entry["extensions"] = entry.get("extensions", 0) + 1
            expired = False
        waiting = any(a["AssignmentStatus"] == "Submitted" for a in assignments)
        entry["final"] = pending == 0 and not waiting and (missing <= 0 or expired or stopping)
        approved = [
            parsed[a["AssignmentId"]]
            for a in assignments
            if a["AssignmentStatus"] == "Approved" and parsed[a["AssignmentId"]] is not None
        ]
        if spec.task.adaptive is not None:
            entry["asked"] = asked
            if entry["final"] and missing <= 0 and not stopping and not entry.get("settled"):
                if asked < most_assignments(spec) and asked + n_rejected < assignment_cap(
                    most_assignments(spec)
                ):
                    entry["final"] = False  # until the rule has decided
                    complete[object_id] = _Complete(hit_id, asked, n_rejected, approved)
        if len(approved) == entry.get("answers", 0):
            return None
        entry["answers"] = len(approved)
        return ObjectAnswers(dataset_object_id=object_id, source_ref=entry["source_ref"], answers=approved)

    def _poll_gold(self, spec: JobSpec, state: dict, ledger: _Ledger) -> dict:
        """Approve and score every gold assignment once; remove the workers `gold_min_f1` removes from
        the private pool. The gold part of the backend state, with GOLD_SCORES for finishing."""
        mturk = self.client(spec)
        items = read_gold(spec, self.boto3_session)
        gold_hits = state[GOLD_HITS]
        scored = dict(state.get(GOLD_SCORED, {}))
        revoked = dict(state.get(GOLD_REMOVED, {}))
        for object_id, entry in gold_hits.items():
            item = items[int(object_id.removeprefix(GOLD_ID_PREFIX))]
            for a in paginate(
                mturk,
                "ListAssignmentsForHIT",
                "Assignments",
                HITId=entry["hit"],
                AssignmentStatuses=["Submitted", "Approved"],
            ):
                if a["AssignmentStatus"] == "Submitted":
                    self._settle(mturk, a["AssignmentId"], Verdict(approve=True))
                if a["AssignmentId"] in scored:
                    continue
                answer = self._parse(spec, object_id, a, ledger)  # an unreadable one is flagged
                if answer is not None:
                    scored[a["AssignmentId"]] = [a["WorkerId"], score(answer, item).as_dict()]
        scores = worker_scores(scored)
        removed = below_the_bar(spec, scores, revoked)
        if removed:
            from orchestrator.backends.mturk.pool import revoke

            revoke(mturk, spec.workforce.team or "", sorted(removed))
            revoked.update(removed)
        return {
            GOLD_HITS: gold_hits,
            GOLD_SCORED: scored,
            GOLD_REMOVED: revoked,
            GOLD_SCORES: {worker: s.as_dict() for worker, s in scores.items()},
        }

    def _expire_gold(self, spec: JobSpec, gold_hits: dict[str, dict]) -> None:
        """The job has ended: its gold HITs take no more workers."""
        mturk = self.client(spec)
        for entry in gold_hits.values():
            if not entry.get("expired"):
                self._set_expiration(mturk, entry["hit"], PAST)
                entry["expired"] = True

    def _decide(self, mturk, spec: JobSpec, hits: dict[str, dict], complete: dict[str, _Complete]) -> None:
        """The stopping rule on every complete adaptive HIT: settle it, or add one assignment."""
        labels = list(spec.labels)
        objects = [
            ObjectAnswers(
                dataset_object_id=object_id, source_ref=hits[object_id]["source_ref"], answers=c.approved
            )
            for object_id, c in complete.items()
        ]
        weights = IoUVote(**spec.consolidation.model_dump()).fit(objects, labels=labels).skills_
        for decision in stopping_rule(spec).fit_predict(objects, weights, labels):
            object_id = decision.dataset_object_id
            entry, c = hits[object_id], complete[object_id]
            if not decision.needs_more:
                entry["settled"] = entry["final"] = True
                continue
            target = c.asked + 1 + c.n_rejected
            self._add_assignments(mturk, spec, object_id, c.hit_id, 1, target)
            entry["asked"] = c.asked + 1

    @staticmethod
    def _parse(spec: JobSpec, object_id: str, assignment: dict, ledger: _Ledger) -> WorkerAnswer | None:
        """The assignment's answer; an unreadable one is flagged in the ledger, never raised."""
        report = AnswerReport()
        submitted, accepted = assignment.get("SubmitTime"), assignment.get("AcceptTime")
        answer = parse_mturk_answer(
            assignment.get("Answer") or "",
            assignment["WorkerId"],
            spec.labels,
            report,
            where=f"object {object_id}, assignment {assignment['AssignmentId']}",
            submitted_at=submitted.isoformat() if submitted else None,
        )
        if answer is None:
            problem = next(iter(report.counts), "unreadable")
            ledger.flagged[assignment["AssignmentId"]] = {
                "object": object_id,
                "worker": assignment["WorkerId"],
                "problem": problem,
            }
            return None
        if submitted and accepted:
            answer = answer.model_copy(update={"time_spent_seconds": (submitted - accepted).total_seconds()})
        return answer

    @staticmethod
    def _due(m, assignment: dict, settled: bool, now: datetime) -> bool:
        """Whether to review a submitted assignment now: always under approve_all; under agreement
        once its HIT has all the answers it will get, or when auto-approval draws near."""
        if m.review_policy == "approve_all" or settled:
            return True
        auto = assignment.get("AutoApprovalTime")
        return auto is not None and auto - now <= timedelta(seconds=m.auto_approve_after * REVIEW_MARGIN)

    @staticmethod
    def _settle(mturk, assignment_id: str, verdict: Verdict) -> str:
        """Approve or reject a Submitted assignment; its resulting status."""
        try:
            if verdict.approve:
                feedback = {"RequesterFeedback": verdict.feedback} if verdict.feedback else {}
                call(mturk, "ApproveAssignment", AssignmentId=assignment_id, **feedback)
                return "Approved"
            call(mturk, "RejectAssignment", AssignmentId=assignment_id, RequesterFeedback=verdict.feedback)
            return "Rejected"
        except MTurkError as exc:
            if exc.turk_code != INVALID_ASSIGNMENT_STATE:
                raise
        # Settled meanwhile (auto-approval, another poll, a retry of a call that had succeeded).
        return call(mturk, "GetAssignment", AssignmentId=assignment_id)["Assignment"]["AssignmentStatus"]

    @staticmethod
    def _add_assignments(mturk, spec: JobSpec, object_id: str, hit_id: str, n: int, target: int) -> None:
        """Replace rejected work or add the one more answer the stopping rule asked for; the token names
        the target, so a repeat adds nothing."""
        try:
            call(
                mturk,
                "CreateAdditionalAssignmentsForHIT",
                HITId=hit_id,
                NumberOfAdditionalAssignments=n,
                UniqueRequestToken=request_token(spec, object_id, f"max-{target}"),
            )
        except MTurkError as exc:
            if exc.turk_code != HIT_ALREADY_EXISTS and "already been processed" not in exc.service_message:
                raise

    @staticmethod
    def _may_extend(spec: JobSpec, entry: dict, now: datetime, valid_until: datetime | None) -> bool:
        """Within max_extensions, and only while the question's image URL outlives the new lifetime."""
        if entry.get("extensions", 0) >= settings(spec).max_extensions:
            return False
        needed = now + timedelta(seconds=spec.task.lifetime + spec.task.time_limit)
        return valid_until is None or settings(spec).question == "external" or needed <= valid_until

    @staticmethod
    def _set_expiration(mturk, hit_id: str, when: datetime) -> None:
        try:
            call(mturk, "UpdateExpirationForHIT", HITId=hit_id, ExpireAt=when)
        except MTurkError as exc:
            # A repeated update is refused as an already processed idempotency token: it took effect.
            if "already been processed" not in exc.service_message:
                raise

    @staticmethod
    def _block_repeat_offenders(mturk, spec: JobSpec, ledger: _Ledger) -> None:
        limit = settings(spec).block_after_rejections
        if limit is None:
            return
        for worker, n in sorted(Counter(ledger.rejected.values()).items()):
            if n >= limit and worker not in ledger.blocked:
                call(
                    mturk,
                    "CreateWorkerBlock",
                    WorkerId=worker,
                    Reason=f"{n} submissions to the labeling job {spec.name} were rejected as unusable",
                )
                ledger.blocked.append(worker)

    # ------------------------------------------------------------------------- stop, cleanup

    def stop(self, spec: JobSpec, record: JobRecord) -> None:
        """Expire every HIT still running; workers who accepted one may still submit it."""
        requested = self.clock().isoformat()
        self._jobs().update(
            record.name, lambda rec: rec.backend_state.setdefault("stop_requested_at", requested)
        )
        mturk = self.client(spec)
        for entry in record.backend_state.get("hits", {}).values():
            if entry.get("final"):
                continue
            try:
                self._set_expiration(mturk, entry["hit"], PAST)
            except MTurkError as exc:
                if exc.turk_code != HIT_DOES_NOT_EXIST:
                    raise

    def cleanup(self, spec: JobSpec, record: JobRecord) -> CleanupReport:
        """Delete the job's HITs whose every assignment is reviewed; keep the rest, saying why."""
        if not record.terminal:
            raise BackendError(
                f"job {record.name} is still {record.status}",
                hint=f"`labeljob stop {record.name}`, then `labeljob poll {record.name}` until it has ended",
            )
        mturk = self.client(spec)
        report = CleanupReport()
        for object_id, entry in record.backend_state.get("hits", {}).items():
            hit_id = entry["hit"]
            try:
                status = call(mturk, "GetHIT", HITId=hit_id)["HIT"]["HITStatus"]
            except MTurkError as exc:
                if exc.turk_code != HIT_DOES_NOT_EXIST:
                    raise
                status = "Disposed"
            if status == "Disposed":
                report.deleted.append(hit_id)
                continue
            if status not in ("Reviewable", "Reviewing"):
                report.kept.append({"object": object_id, "hit": hit_id, "reason": f"the HIT is {status}"})
                continue
            unreviewed = list(
                paginate(
                    mturk,
                    "ListAssignmentsForHIT",
                    "Assignments",
                    HITId=hit_id,
                    AssignmentStatuses=["Submitted"],
                )
            )
            if unreviewed:
                reason = f"{len(unreviewed)} assignment(s) not reviewed yet; poll the job first"
                report.kept.append({"object": object_id, "hit": hit_id, "reason": reason})
                continue
            call(mturk, "DeleteHIT", HITId=hit_id)
            report.deleted.append(hit_id)
        return report


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None

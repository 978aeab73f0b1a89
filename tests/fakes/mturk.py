"""A fake Mechanical Turk requester API under a real boto3 `mturk` client.

`FakeMTurk` is a threading HTTP server on 127.0.0.1 (port 0) speaking MTurk's JSON protocol
(`X-Amz-Target: MTurkRequesterServiceV20170117.<Operation>`); product code reaches it through
`AWS_ENDPOINT_URL_MTURK` and never knows it is a fake. Every request is checked against botocore's
service model (`ParameterValidationError` listing every problem) and must be signed for us-east-1.
Errors look like MTurk's: `RequestError` or `ServiceFault` with a top-level `TurkErrorCode`.

Rules it enforces: HIT and assignment status transitions; approve only Submitted work (or a
Rejected one with OverrideRejection); reject only Submitted work and only with RequesterFeedback;
a HIT created with fewer than 10 assignments never reaches 10; delete only Reviewable/Reviewing
HITs whose every assignment is approved or rejected; UniqueRequestToken dedupe for 24 h
(`HitAlreadyExists`, the HIT id in the message); a repeated UpdateExpirationForHIT is "already
been processed"; the Reward format; Question XML well-formed, of a known schema, <= 65,535 bytes,
ExternalURL https; HIT types returned again for identical values.

Time is the fake's own clock (`now`, `advance(seconds)`, `clock` for the product): HITs expire,
accepted work is abandoned past its deadline, and submitted work is auto-approved at
`AutoApprovalTime`, all as the clock passes.

Workers (`work()`) are simulated from the real crowd answers in pedestrians-dev.jsonl: the image
named by the HIT's `<crowd-bounding-box src>` is looked up by file name, and its workers answer
in file order (ids `AFAKEW06`...). A share of slots (`spam_rate`) is taken by spammers
(`ASPAMMER1`...) who draw random boxes; a share of answers (`malformed_rate`) is malformed in
rotating ways. Workers respect custom qualification requirements and blocks.

Faults: `faults.throttle(operation, times)` answers the next calls with ThrottlingException;
`faults.service_faults(rate, operations, lost_response)` answers a seeded share with HTTP 500
ServiceFault, before or (lost_response) after the call took effect. `crash_after(session, k)`
makes the product's k-th MTurk call raise `SimulatedCrash` once it has returned, as if the
process died there. `calls` records every request with its outcome.
"""

from __future__ import annotations

import html
import itertools
import json
import random
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

import pytest

from orchestrator.service_model import validate_request

PEDESTRIANS = Path(__file__).resolve().parents[1] / "data" / "pedestrians-dev.jsonl"
TARGET_PREFIX = "MTurkRequesterServiceV20170117."
SIGNING_SCOPE = "/us-east-1/mturk-requester/aws4_request"
TOKEN_LIFETIME = timedelta(hours=24)
MAX_QUESTION_BYTES = 65_535
SPAMMERS = ("ASPAMMER1", "ASPAMMER2", "ASPAMMER3")
SYSTEM_QUALIFICATIONS = {
    "000000000000000000L0",
    "00000000000000000040",
    "00000000000000000071",
    "00000000000000000060",
    "2F1QJWKUDD8XADTFD2Q0G6UTO95ALH",
    "2ARFPLSP75KLA8M8DH1HTEQVJT3SY6",
}
_SCHEMAS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas"
HTML_QUESTION = f"{{{_SCHEMAS}/2011-11-11/HTMLQuestion.xsd}}"
EXTERNAL_QUESTION = f"{{{_SCHEMAS}/2006-07-14/ExternalQuestion.xsd}}"
QUESTION_FORM = f"{{{_SCHEMAS}/2017-11-06/QuestionForm.xsd}}"
ANSWERS_NS = f"{_SCHEMAS}/2005-10-01/QuestionFormAnswers.xsd"
_ELEMENT = re.compile(r"<crowd-bounding-box\b([^>]*)>", re.S)
_ATTRIBUTE = re.compile(r"""([a-zA-Z-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_REWARD = re.compile(r"^[0-9]+(\.)?[0-9]{0,2}$")


class SimulatedCrash(BaseException):
    """The product 'died' right after an MTurk call returned (a BaseException: nothing catches it)."""


class ApiError(Exception):
    def __init__(
        self, message: str, turk_code: str = "", kind: str = "RequestError", status: int = 400
    ) -> None:
        super().__init__(message)
        self.message, self.turk_code, self.kind, self.status = message, turk_code, kind, status


@dataclass
class Call:
    operation: str
    params: dict
    outcome: str  # "ok", or the error's TurkErrorCode / type


@dataclass
class FakeHIT:
    hit_id: str
    hit_type_id: str
    question: str
    max_assignments: int
    created: datetime
    expiration: datetime
    annotation: str | None
    image: dict | None
    element: str
    labels: list[str]
    reviewing: bool = False
    deleted: bool = False


@dataclass
class FakeAssignment:
    assignment_id: str
    hit_id: str
    worker_id: str
    status: str  # Accepted (pending), Submitted, Approved, Rejected
    accepted: datetime
    deadline: datetime
    answer: str = ""
    submitted: datetime | None = None
    auto_approval: datetime | None = None
    approved: datetime | None = None
    rejected: datetime | None = None
    feedback: str | None = None


@dataclass
class FaultPlan:
    """Injected failures: throttles by operation, and a seeded rate of ServiceFaults."""

    throttles: dict[str, int] = field(default_factory=dict)
    fault_rate: float = 0.0
    fault_operations: set[str] | None = None
    lost_response: bool = False
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def throttle(self, operation: str, times: int = 1) -> None:
        """Answer the next `times` calls of `operation` with ThrottlingException."""
        self.throttles[operation] = self.throttles.get(operation, 0) + times

    def service_faults(
        self, rate: float, operations: set[str] | None = None, *, lost_response: bool = False, seed: int = 0
    ) -> None:
        """Answer a share `rate` of calls (of `operations`, or all) with HTTP 500 ServiceFault;
        with `lost_response` the call takes effect first and only its answer is lost."""
        self.fault_rate, self.fault_operations, self.lost_response = rate, operations, lost_response
        self.rng = random.Random(seed)

    def clear(self) -> None:
        self.throttles.clear()
        self.fault_rate = 0.0

    def _throttled(self, operation: str) -> bool:
        if self.throttles.get(operation, 0) > 0:
            self.throttles[operation] -= 1
            return True
        return False

    def _faulted(self, operation: str) -> bool:
        if self.fault_rate <= 0 or (self.fault_operations and operation not in self.fault_operations):
            return False
        return self.rng.random() < self.fault_rate


class FakeMTurk:
    """MTurk's requester API on loopback; see the module docstring."""

    def __init__(
        self,
        data: Path = PEDESTRIANS,
        *,
        spam_rate: float = 0.0,
        malformed_rate: float = 0.0,
        balance: str = "10000.00",
        seed: int = 0,
    ) -> None:
        self.images = _records(data)
        self.spam_rate = spam_rate
        self.malformed_rate = malformed_rate
        self.balance = balance
        self.rng = random.Random(seed)
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.faults = FaultPlan()
        self.calls: list[Call] = []
        self.hit_types: dict[str, dict] = {}
        self.hits: dict[str, FakeHIT] = {}
        self.assignments: dict[str, FakeAssignment] = {}
        self.tokens: dict[str, tuple[str, datetime]] = {}
        self.expirations_processed: set[tuple[str, float]] = set()
        self.qualification_types: dict[str, dict] = {}
        self.worker_qualifications: dict[tuple[str, str], int] = {}
        self.blocks: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._malformed_kinds = itertools.cycle(
            ("empty", "broken_xml", "no_task_answers", "bad_json", "empty_array")
        )
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    # ------------------------------------------------------------------------ server

    def __enter__(self) -> FakeMTurk:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> FakeMTurk:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle on, each call waits ~40 ms for an ACK.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, payload = fake._handle(
                    self.headers.get("X-Amz-Target", ""), self.headers.get("Authorization", ""), body
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", f"fake-{next(fake._ids)}")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handle(self, target: str, authorization: str, body: bytes) -> tuple[int, dict]:
        operation = target.removeprefix(TARGET_PREFIX)
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            return 400, {"__type": "SerializationException", "Message": "body is not JSON"}
        with self._lock:
            if not target.startswith(TARGET_PREFIX):
                return self._error(
                    operation,
                    params,
                    ApiError(f"unknown target {target!r}", kind="UnknownOperationException"),
                )
            if SIGNING_SCOPE not in authorization:
                return self._error(
                    operation,
                    params,
                    ApiError("requests must be signed for us-east-1", kind="InvalidSignatureException"),
                )
            if self.faults._throttled(operation):
                return self._error(operation, params, ApiError("Rate exceeded", kind="ThrottlingException"))
            faulted = self.faults._faulted(operation)
            if faulted and not self.faults.lost_response:
                return self._error(operation, params, _service_fault())
            try:
                result = self._dispatch(operation, params)
            except ApiError as exc:
                return self._error(operation, params, exc)
            self.calls.append(Call(operation, params, "ok"))
            if faulted:
                return self._error(operation, params, _service_fault())
            return 200, result

    def _error(self, operation: str, params: dict, exc: ApiError) -> tuple[int, dict]:
        self.calls.append(Call(operation, params, exc.turk_code or exc.kind))
        payload = {"__type": exc.kind, "Message": exc.message}
        if exc.turk_code:
            payload["TurkErrorCode"] = exc.turk_code
        return exc.status, payload

    def _dispatch(self, operation: str, params: dict) -> dict:
        handler = getattr(self, f"_op_{operation}", None)
        if handler is None:
            raise ApiError(
                f"{operation} is not implemented by the fake", "AWS.MechanicalTurk.NotImplementedInFake"
            )
        problems = validate_request("mturk", operation, params)
        if problems:
            raise ApiError("; ".join(problems), kind="ParameterValidationError")
        self._tick()
        return handler(params)

    # ------------------------------------------------------------------- test controls

    def clock(self) -> datetime:
        """The fake's time, for the product's clock."""
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)
            self._tick()

    def count(self, operation: str, outcome: str | None = "ok") -> int:
        """How many calls of `operation` ended with `outcome` (any outcome when None)."""
        return sum(
            1 for c in self.calls if c.operation == operation and (outcome is None or c.outcome == outcome)
        )

    def live_hits(self) -> list[FakeHIT]:
        return [hit for hit in self.hits.values() if not hit.deleted]

    def work(self, limit: int | None = None, *, submit: bool = True, hit_ids: list[str] | None = None) -> int:
        """Workers take open assignments (at most `limit`) and, with `submit`, hand them in now.

        Assignments accepted earlier without submitting are handed in first. Returns how many
        assignments were submitted (or accepted, without `submit`).
        """
        done = 0
        with self._lock:
            self._tick()
            if submit:
                for assignment in self.assignments.values():
                    if assignment.status == "Accepted" and (limit is None or done < limit):
                        self._submit(assignment)
                        done += 1
            for hit in list(self.hits.values()):
                if hit_ids is not None and hit.hit_id not in hit_ids:
                    continue
                while (limit is None or done < limit) and self._hit_status(hit) == "Assignable":
                    worker = self._next_worker(hit)
                    if worker is None:
                        break
                    assignment = self._accept(hit, worker)
                    if submit:
                        self._submit(assignment)
                    done += 1
        return done

    def grant(self, qualification_id: str, worker_id: str, value: int = 1) -> None:
        self.worker_qualifications[(qualification_id, worker_id)] = value

    # -------------------------------------------------------------------- simulation

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):0{30 - len(prefix)}d}"

    def _tick(self) -> None:
        for assignment in list(self.assignments.values()):
            if assignment.status == "Accepted" and assignment.deadline <= self.now:
                del self.assignments[assignment.assignment_id]  # abandoned: the slot opens again
            elif assignment.status == "Submitted" and assignment.auto_approval <= self.now:
                assignment.status, assignment.approved = "Approved", assignment.auto_approval

    def _of_hit(self, hit: FakeHIT) -> list[FakeAssignment]:
        return [a for a in self.assignments.values() if a.hit_id == hit.hit_id]

    def _hit_status(self, hit: FakeHIT) -> str:
        if hit.deleted:
            return "Disposed"
        if hit.reviewing:
            return "Reviewing"
        assignments = self._of_hit(hit)
        pending = sum(1 for a in assignments if a.status == "Accepted")
        done = len(assignments) - pending
        if done >= hit.max_assignments:
            return "Reviewable"
        if hit.expiration <= self.now:
            return "Unassignable" if pending else "Reviewable"
        return "Unassignable" if done + pending >= hit.max_assignments else "Assignable"

    def _eligible(self, hit: FakeHIT, worker: str) -> bool:
        if worker in self.blocks or any(a.worker_id == worker for a in self._of_hit(hit)):
            return False
        for requirement in self.hit_types[hit.hit_type_id].get("QualificationRequirements", []):
            type_id = requirement["QualificationTypeId"]
            if type_id in SYSTEM_QUALIFICATIONS:
                continue  # every simulated worker meets the system presets
            held = self.worker_qualifications.get((type_id, worker))
            comparator = requirement["Comparator"]
            values = requirement.get("IntegerValues") or [0]
            ok = {
                "Exists": held is not None,
                "DoesNotExist": held is None,
                "EqualTo": held == values[0],
                "NotEqualTo": held is not None and held != values[0],
                "GreaterThan": held is not None and held > values[0],
                "GreaterThanOrEqualTo": held is not None and held >= values[0],
                "LessThan": held is not None and held < values[0],
                "LessThanOrEqualTo": held is not None and held <= values[0],
                "In": held in values,
                "NotIn": held is not None and held not in values,
            }[comparator]
            if not ok:
                return False
        return True

    def _next_worker(self, hit: FakeHIT) -> str | None:
        crowd = [f"AFAKE{w['worker'].upper()}" for w in hit.image["workers"]] if hit.image else []
        if not hit.image:
            crowd = [f"AFAKEWORKER{i}" for i in range(1, 8)]
        if self.spam_rate and self.rng.random() < self.spam_rate:
            spammers = [s for s in SPAMMERS if self._eligible(hit, s)]
            if spammers:
                return spammers[0]
        return next((w for w in crowd if self._eligible(hit, w)), None)

    def _accept(self, hit: FakeHIT, worker: str) -> FakeAssignment:
        duration = self.hit_types[hit.hit_type_id]["AssignmentDurationInSeconds"]
        accepted = self.now - timedelta(seconds=self.rng.randint(1, min(duration, 120)))
        assignment = FakeAssignment(
            assignment_id=self._new_id("3FAKEASG"),
            hit_id=hit.hit_id,
            worker_id=worker,
            status="Accepted",
            accepted=accepted,
            deadline=accepted + timedelta(seconds=duration),
        )
        self.assignments[assignment.assignment_id] = assignment
        return assignment

    def _submit(self, assignment: FakeAssignment) -> None:
        hit = self.hits[assignment.hit_id]
        delay = self.hit_types[hit.hit_type_id].get("AutoApprovalDelayInSeconds", 2_592_000)
        assignment.status, assignment.submitted = "Submitted", self.now
        assignment.auto_approval = self.now + timedelta(seconds=delay)
        if self.malformed_rate and self.rng.random() < self.malformed_rate:
            assignment.answer = self._malformed_answer(hit)
        else:
            assignment.answer = _answer_xml(hit.element, self._boxes(hit, assignment.worker_id), hit.image)

    def _boxes(self, hit: FakeHIT, worker: str) -> list[dict]:
        label = lambda original: original if original in hit.labels else hit.labels[0]  # noqa: E731
        if worker in SPAMMERS:
            width, height = (hit.image["width"], hit.image["height"]) if hit.image else (1280, 720)
            return [
                {
                    "label": self.rng.choice(hit.labels),
                    "left": self.rng.randint(0, width - 120),
                    "top": self.rng.randint(0, height - 120),
                    "width": self.rng.randint(20, 110),
                    "height": self.rng.randint(20, 110),
                }
                for _ in range(self.rng.randint(1, 3))
            ]
        if not hit.image:
            return []
        pseudonym = worker.removeprefix("AFAKE").lower()
        answer = next(w for w in hit.image["workers"] if w["worker"] == pseudonym)
        # <crowd-bounding-box> reports whole pixels.
        return [
            {
                "label": label(box["label"]),
                "left": round(box["left"]),
                "top": round(box["top"]),
                "width": max(1, round(box["width"])),
                "height": max(1, round(box["height"])),
            }
            for box in answer["boxes"]
        ]

    def _malformed_answer(self, hit: FakeHIT) -> str:
        kind = next(self._malformed_kinds)
        if kind == "empty":
            return ""
        if kind == "broken_xml":
            return f'<QuestionFormAnswers xmlns="{ANSWERS_NS}"><Answer><QuestionIdentifier>taskAn'
        if kind == "no_task_answers":
            return _form_answers("comment", "nothing to see")
        if kind == "bad_json":
            return _form_answers("taskAnswers", "[{'annotatedResult': oops")
        return _form_answers("taskAnswers", "[]")

    # ------------------------------------------------------------------ serialization

    def _hit_json(self, hit: FakeHIT) -> dict:
        hit_type = self.hit_types[hit.hit_type_id]
        assignments = self._of_hit(hit)
        pending = sum(1 for a in assignments if a.status == "Accepted")
        completed = sum(1 for a in assignments if a.status in ("Approved", "Rejected"))
        available = max(0, hit.max_assignments - len(assignments))
        result = {
            "HITId": hit.hit_id,
            "HITTypeId": hit.hit_type_id,
            "HITGroupId": hit.hit_type_id,
            "CreationTime": hit.created.timestamp(),
            "Title": hit_type["Title"],
            "Description": hit_type["Description"],
            "Question": hit.question,
            "Keywords": hit_type.get("Keywords", ""),
            "HITStatus": self._hit_status(hit),
            "MaxAssignments": hit.max_assignments,
            "Reward": hit_type["Reward"],
            "AutoApprovalDelayInSeconds": hit_type.get("AutoApprovalDelayInSeconds", 2_592_000),
            "Expiration": hit.expiration.timestamp(),
            "AssignmentDurationInSeconds": hit_type["AssignmentDurationInSeconds"],
            "QualificationRequirements": hit_type.get("QualificationRequirements", []),
            "HITReviewStatus": "NotReviewed",
            "NumberOfAssignmentsPending": pending,
            "NumberOfAssignmentsAvailable": available,
            "NumberOfAssignmentsCompleted": completed,
        }
        if hit.annotation is not None:
            result["RequesterAnnotation"] = hit.annotation
        return result

    @staticmethod
    def _assignment_json(a: FakeAssignment) -> dict:
        result = {
            "AssignmentId": a.assignment_id,
            "WorkerId": a.worker_id,
            "HITId": a.hit_id,
            "AssignmentStatus": a.status,
            "AcceptTime": a.accepted.timestamp(),
            "Deadline": a.deadline.timestamp(),
            "Answer": a.answer,
        }
        for key, value in (
            ("SubmitTime", a.submitted),
            ("AutoApprovalTime", a.auto_approval),
            ("ApprovalTime", a.approved),
            ("RejectionTime", a.rejected),
        ):
            if value is not None:
                result[key] = value.timestamp()
        if a.feedback is not None:
            result["RequesterFeedback"] = a.feedback
        return result

    @staticmethod
    def _page(items: list, params: dict, key: str) -> dict:
        size = params.get("MaxResults", 10)
        start = int(params.get("NextToken", "0"))
        page = items[start : start + size]
        result = {key: page, "NumResults": len(page)}
        if start + size < len(items):
            result["NextToken"] = str(start + size)
        return result

    def _hit(self, hit_id: str) -> FakeHIT:
        hit = self.hits.get(hit_id)
        if hit is None or hit.deleted:
            raise ApiError(
                f"Hit {hit_id} does not exist. (1657421793250)", "AWS.MechanicalTurk.HITDoesNotExist"
            )
        return hit

    def _assignment(self, assignment_id: str) -> FakeAssignment:
        assignment = self.assignments.get(assignment_id)
        if assignment is None or assignment.status == "Accepted":
            raise ApiError(
                f"Assignment {assignment_id} does not exist. (1657421793250)",
                "AWS.MechanicalTurk.AssignmentDoesNotExist",
            )
        return assignment

    def _check_token(self, token: str | None, on_repeat: Callable[[str], ApiError]) -> None:
        if token is None:
            return
        seen = self.tokens.get(token)
        if seen is not None and self.now - seen[1] < TOKEN_LIFETIME:
            raise on_repeat(seen[0])

    # ---------------------------------------------------------------------- HIT types

    def _op_CreateHITType(self, params: dict) -> dict:  # noqa: N802
        _check_range("AssignmentDurationInSeconds", params["AssignmentDurationInSeconds"], 30, 31_536_000)
        _check_range("AutoApprovalDelayInSeconds", params.get("AutoApprovalDelayInSeconds", 0), 0, 2_592_000)
        _check_reward(params["Reward"])
        _check_length("Title", params["Title"], 128)
        _check_length("Description", params["Description"], 2_000)
        _check_length("Keywords", params.get("Keywords", ""), 1_000)
        self._check_requirements(params.get("QualificationRequirements", []))
        canonical = json.dumps(params, sort_keys=True)
        for type_id, existing in self.hit_types.items():
            if json.dumps(existing, sort_keys=True) == canonical:
                return {"HITTypeId": type_id}
        type_id = self._new_id("3FAKETYPE")
        self.hit_types[type_id] = params
        return {"HITTypeId": type_id}

    def _check_requirements(self, requirements: list[dict]) -> None:
        if len(requirements) > 10:
            raise ApiError("at most 10 QualificationRequirements", "AWS.ParameterOutOfRange")
        for requirement in requirements:
            type_id = requirement["QualificationTypeId"]
            if type_id not in SYSTEM_QUALIFICATIONS and type_id not in self.qualification_types:
                raise ApiError(
                    f"QualificationType {type_id} does not exist",
                    "AWS.MechanicalTurk.QualificationTypeDoesNotExist",
                )
            if (
                len(requirement.get("IntegerValues", [])) > 15
                or len(requirement.get("LocaleValues", [])) > 30
            ):
                raise ApiError("too many comparison values", "AWS.ParameterOutOfRange")

    # --------------------------------------------------------------------------- HITs

    def _op_CreateHIT(self, params: dict) -> dict:  # noqa: N802
        type_keys = (
            "AutoApprovalDelayInSeconds",
            "AssignmentDurationInSeconds",
            "Reward",
            "Title",
            "Keywords",
            "Description",
            "QualificationRequirements",
        )
        hit_type = self._op_CreateHITType({k: params[k] for k in type_keys if k in params})
        rest = {k: v for k, v in params.items() if k not in type_keys}
        return self._op_CreateHITWithHITType({**rest, "HITTypeId": hit_type["HITTypeId"]})

    def _op_CreateHITWithHITType(self, params: dict) -> dict:  # noqa: N802
        if params["HITTypeId"] not in self.hit_types:
            raise ApiError(
                f"HITType {params['HITTypeId']} does not exist", "AWS.MechanicalTurk.HITTypeDoesNotExist"
            )
        _check_range("LifetimeInSeconds", params["LifetimeInSeconds"], 30, 31_536_000)
        _check_range("MaxAssignments", params.get("MaxAssignments", 1), 1, 1_000_000_000)
        _check_length("RequesterAnnotation", params.get("RequesterAnnotation", ""), 255)
        question = params.get("Question")
        if question is None:
            raise ApiError(
                "a Question is required (HIT layouts are not faked)", "AWS.MechanicalTurk.XMLParseError"
            )
        element, labels, image = self._read_question(question)
        token = params.get("UniqueRequestToken")
        self._check_token(
            token,
            lambda hit_id: ApiError(
                "There is already a HIT which exists with the same UniqueRequestToken. "
                f'The HIT ID is "{hit_id}". (1626172412406)',
                "AWS.MechanicalTurk.HitAlreadyExists",
            ),
        )
        hit = FakeHIT(
            hit_id=self._new_id("3FAKEHIT"),
            hit_type_id=params["HITTypeId"],
            question=question,
            max_assignments=params.get("MaxAssignments", 1),
            created=self.now,
            expiration=self.now + timedelta(seconds=params["LifetimeInSeconds"]),
            annotation=params.get("RequesterAnnotation"),
            image=image,
            element=element,
            labels=labels,
        )
        self.hits[hit.hit_id] = hit
        if token is not None:
            self.tokens[token] = (hit.hit_id, self.now)
        return {"HIT": self._hit_json(hit)}

    def _read_question(self, question: str) -> tuple[str, list[str], dict | None]:
        """(element name, labels, data record of the image) of a valid question; ApiError otherwise."""
        size = len(question.encode("utf-8"))
        if size > MAX_QUESTION_BYTES:
            raise ApiError(
                f"Question is {size} bytes; the limit is {MAX_QUESTION_BYTES}", "AWS.ParameterOutOfRange"
            )
        try:
            root = ET.fromstring(question)
        except ET.ParseError as exc:
            raise ApiError(
                f"The Question is not valid XML: {exc}", "AWS.MechanicalTurk.XMLParseError"
            ) from None
        if root.tag == EXTERNAL_QUESTION + "ExternalQuestion":
            url = (root.findtext(EXTERNAL_QUESTION + "ExternalURL") or "").strip()
            if not url.startswith("https://") or root.find(EXTERNAL_QUESTION + "FrameHeight") is None:
                raise ApiError(
                    "ExternalURL must be an https URL, with a FrameHeight", "AWS.MechanicalTurk.XMLParseError"
                )
            return "annotatedResult", ["object"], None
        if root.tag == QUESTION_FORM + "QuestionForm":
            return "annotatedResult", ["object"], None
        if root.tag != HTML_QUESTION + "HTMLQuestion":
            raise ApiError(f"unknown question schema {root.tag}", "AWS.MechanicalTurk.XMLParseError")
        content = root.findtext(HTML_QUESTION + "HTMLContent")
        if not content or root.find(HTML_QUESTION + "FrameHeight") is None:
            raise ApiError(
                "HTMLQuestion needs HTMLContent and FrameHeight", "AWS.MechanicalTurk.XMLParseError"
            )
        match = _ELEMENT.search(content)
        if match is None:
            return "annotatedResult", ["object"], None
        attributes = {
            m.group(1): html.unescape(m.group(2) or m.group(3) or "")
            for m in _ATTRIBUTE.finditer(match.group(1))
        }
        labels = json.loads(attributes.get("labels", '["object"]'))
        image_name = unquote(urlsplit(attributes.get("src", "")).path.rsplit("/", 1)[-1])
        return attributes.get("name", "annotatedResult"), labels, self.images.get(image_name)

    def _op_GetHIT(self, params: dict) -> dict:  # noqa: N802
        return {"HIT": self._hit_json(self._hit(params["HITId"]))}

    def _op_ListHITs(self, params: dict) -> dict:  # noqa: N802
        return self._page([self._hit_json(h) for h in self.live_hits()], params, "HITs")

    def _op_ListReviewableHITs(self, params: dict) -> dict:  # noqa: N802
        hits = [
            self._hit_json(h)
            for h in self.live_hits()
            if self._hit_status(h) == params.get("Status", "Reviewable")
            and params.get("HITTypeId", h.hit_type_id) == h.hit_type_id
        ]
        return self._page(hits, params, "HITs")

    def _op_UpdateExpirationForHIT(self, params: dict) -> dict:  # noqa: N802
        hit = self._hit(params["HITId"])
        when = float(params["ExpireAt"])
        key = (hit.hit_id, when)
        if key in self.expirations_processed:
            raise ApiError(
                f'The idempotency token "{hit.hit_id}{when:.0f}" has already been processed. (1626172412406)'
            )
        self.expirations_processed.add(key)
        hit.expiration = datetime.fromtimestamp(when, UTC)
        return {}

    def _op_CreateAdditionalAssignmentsForHIT(self, params: dict) -> dict:  # noqa: N802
        hit = self._hit(params["HITId"])
        n = params["NumberOfAdditionalAssignments"]
        _check_range("NumberOfAdditionalAssignments", n, 1, 1_000_000_000)
        if hit.max_assignments < 10 <= hit.max_assignments + n:
            raise ApiError(
                "A HIT created with fewer than 10 assignments cannot be extended to have 10 or more "
                "assignments.",
                "AWS.MechanicalTurk.InvalidMaximumAssignmentsIncrease",
            )
        token = params.get("UniqueRequestToken")
        self._check_token(
            token,
            lambda _: ApiError(
                f'The idempotency token "{token}" has already been processed. (1626172412406)'
            ),
        )
        hit.max_assignments += n
        if token is not None:
            self.tokens[token] = (hit.hit_id, self.now)
        return {}

    def _op_UpdateHITReviewStatus(self, params: dict) -> dict:  # noqa: N802
        hit = self._hit(params["HITId"])
        status = self._hit_status(hit)
        if params.get("Revert"):
            if status != "Reviewing":
                raise ApiError(
                    f"HIT is {status}; only a Reviewing HIT can be reverted",
                    "AWS.MechanicalTurk.InvalidHITState",
                )
            hit.reviewing = False
        else:
            if status != "Reviewable":
                raise ApiError(
                    f"HIT is {status}; only a Reviewable HIT can be claimed",
                    "AWS.MechanicalTurk.InvalidHITState",
                )
            hit.reviewing = True
        return {}

    def _op_DeleteHIT(self, params: dict) -> dict:  # noqa: N802
        hit = self._hit(params["HITId"])
        status = self._hit_status(hit)
        unreviewed = [a for a in self._of_hit(hit) if a.status in ("Accepted", "Submitted")]
        if status not in ("Reviewable", "Reviewing") or unreviewed:
            # MTurk's own (misleading) answer when assignments are still unreviewed.
            raise ApiError(
                f"This HIT is currently in the state '{status}'. This operation can be called with a "
                "status of: Reviewing, Reviewable (1626172412406)",
                "AWS.MechanicalTurk.InvalidHITState",
            )
        hit.deleted = True
        return {}

    # --------------------------------------------------------------------- assignments

    def _op_ListAssignmentsForHIT(self, params: dict) -> dict:  # noqa: N802
        hit = self._hit(params["HITId"])
        statuses = params.get("AssignmentStatuses") or ["Submitted", "Approved", "Rejected"]
        items = sorted((a for a in self._of_hit(hit) if a.status in statuses), key=lambda a: a.assignment_id)
        return self._page([self._assignment_json(a) for a in items], params, "Assignments")

    def _op_GetAssignment(self, params: dict) -> dict:  # noqa: N802
        assignment = self._assignment(params["AssignmentId"])
        return {
            "Assignment": self._assignment_json(assignment),
            "HIT": self._hit_json(self.hits[assignment.hit_id]),
        }

    def _op_ApproveAssignment(self, params: dict) -> dict:  # noqa: N802
        assignment = self._assignment(params["AssignmentId"])
        allowed = assignment.status == "Submitted" or (
            assignment.status == "Rejected" and params.get("OverrideRejection")
        )
        if not allowed:
            raise ApiError(
                f"This operation can be called with a status of: Submitted ({assignment.status} now)",
                "AWS.MechanicalTurk.InvalidAssignmentState",
            )
        assignment.status, assignment.approved = "Approved", self.now
        assignment.feedback = params.get("RequesterFeedback", assignment.feedback)
        return {}

    def _op_RejectAssignment(self, params: dict) -> dict:  # noqa: N802
        assignment = self._assignment(params["AssignmentId"])
        if not params["RequesterFeedback"].strip():
            raise ApiError("RequesterFeedback is required to reject work", "AWS.ParameterValidationError")
        if assignment.status != "Submitted":
            raise ApiError(
                f"This operation can be called with a status of: Submitted ({assignment.status} now)",
                "AWS.MechanicalTurk.InvalidAssignmentState",
            )
        assignment.status, assignment.rejected = "Rejected", self.now
        assignment.feedback = params["RequesterFeedback"]
        return {}

    # ----------------------------------------------------------------- account, workers

    def _op_GetAccountBalance(self, params: dict) -> dict:  # noqa: N802
        return {"AvailableBalance": self.balance, "OnHoldBalance": "0.00"}

    def _op_CreateWorkerBlock(self, params: dict) -> dict:  # noqa: N802
        self.blocks[params["WorkerId"]] = params["Reason"]
        return {}

    def _op_DeleteWorkerBlock(self, params: dict) -> dict:  # noqa: N802
        self.blocks.pop(params["WorkerId"], None)
        return {}

    def _op_ListWorkerBlocks(self, params: dict) -> dict:  # noqa: N802
        blocks = [{"WorkerId": w, "Reason": r} for w, r in sorted(self.blocks.items())]
        return self._page(blocks, params, "WorkerBlocks")

    def _op_CreateQualificationType(self, params: dict) -> dict:  # noqa: N802
        if any(q["Name"] == params["Name"] for q in self.qualification_types.values()):
            raise ApiError(
                f"You have already created a QualificationType with this name: {params['Name']}",
                "AWS.MechanicalTurk.QualificationTypeAlreadyExists",
            )
        type_id = self._new_id("3FAKEQUAL")
        self.qualification_types[type_id] = {
            "QualificationTypeId": type_id,
            "CreationTime": self.now.timestamp(),
            "Name": params["Name"],
            "Description": params["Description"],
            "QualificationTypeStatus": params["QualificationTypeStatus"],
            "IsRequestable": False,
            "AutoGranted": params.get("AutoGranted", False),
        }
        return {"QualificationType": self.qualification_types[type_id]}

    def _op_GetQualificationType(self, params: dict) -> dict:  # noqa: N802
        qualification = self.qualification_types.get(params["QualificationTypeId"])
        if qualification is None:
            raise ApiError(
                "QualificationType does not exist", "AWS.MechanicalTurk.QualificationTypeDoesNotExist"
            )
        return {"QualificationType": qualification}

    def _op_ListQualificationTypes(self, params: dict) -> dict:  # noqa: N802
        query = (params.get("Query") or "").lower()
        found = [
            q
            for q in self.qualification_types.values()
            if query in q["Name"].lower() or query in q["Description"].lower()
        ]
        return self._page(found, params, "QualificationTypes")

    def _op_AssociateQualificationWithWorker(self, params: dict) -> dict:  # noqa: N802
        self._op_GetQualificationType(params)
        self.grant(params["QualificationTypeId"], params["WorkerId"], params.get("IntegerValue", 1))
        return {}

    def _op_DisassociateQualificationFromWorker(self, params: dict) -> dict:  # noqa: N802
        self._op_GetQualificationType(params)
        self.worker_qualifications.pop((params["QualificationTypeId"], params["WorkerId"]), None)
        return {}

    def _op_ListWorkersWithQualificationType(self, params: dict) -> dict:  # noqa: N802
        type_id = params["QualificationTypeId"]
        workers = [
            {"QualificationTypeId": type_id, "WorkerId": w, "IntegerValue": v, "Status": "Granted"}
            for (q, w), v in sorted(self.worker_qualifications.items())
            if q == type_id
        ]
        return self._page(workers, params, "Qualifications")


# ------------------------------------------------------------------------------ helpers


@lru_cache(maxsize=2)
def _records(path: Path) -> dict[str, dict]:
    """The crowd records of a data file by image name; shared read-only by every fake."""
    records = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    return {record["image"]: record for record in records}


@lru_cache(maxsize=1)
def _data_loader():
    import botocore.session

    return botocore.session.get_session().get_component("data_loader")


def new_session():
    """A fresh boto3 session (its own event hooks) sharing one loader of botocore's models.

    Loading the service models is most of a new session's cost; tests make hundreds of sessions.
    """
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    core.register_component("data_loader", _data_loader())
    return boto3.Session(botocore_session=core, region_name="us-east-1")


def _service_fault() -> ApiError:
    return ApiError(
        "We encountered an internal error. Please try again.", "AWS.ServiceUnavailable", "ServiceFault", 500
    )


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ApiError(
            f"The value {value} is invalid for {name}. Valid values range from {low} to {high}.",
            "AWS.ParameterOutOfRange",
        )


def _check_length(name: str, value: str, most: int) -> None:
    if len(value) > most:
        raise ApiError(
            f"{name} is {len(value)} characters; at most {most} are allowed", "AWS.ParameterOutOfRange"
        )


def _check_reward(reward: str) -> None:
    if not _REWARD.fullmatch(reward):
        raise ApiError(f"Reward {reward!r} is not an amount like 0.12", "AWS.ParameterOutOfRange")


def _form_answers(identifier: str, free_text: str) -> str:
    return (
        f'<QuestionFormAnswers xmlns="{ANSWERS_NS}"><Answer>'
        f"<QuestionIdentifier>{escape(identifier)}</QuestionIdentifier><FreeText>{escape(free_text)}</FreeText>"
        "</Answer></QuestionFormAnswers>"
    )


def _answer_xml(element: str, boxes: list[dict], image: dict | None) -> str:
    """What <crowd-form> submits: every field in one taskAnswers JSON array."""
    size = {"height": image["height"], "width": image["width"]} if image else {"height": 720, "width": 1280}
    value = [{element: {"boundingBoxes": boxes, "inputImageProperties": size}}]
    return _form_answers("taskAnswers", json.dumps(value))


def crash_after(boto3_session, k: int) -> Callable[[], None]:
    """Make the k-th MTurk call of clients made from `boto3_session` raise SimulatedCrash once it
    has returned (its effect stands). Returns a function that removes the hook."""
    counter = itertools.count(1)

    def hook(**_) -> None:
        if next(counter) == k:
            raise SimulatedCrash(f"crash after MTurk call {k}")

    boto3_session.events.register("after-call.mturk", hook, unique_id=f"crash-after-{id(hook)}")
    return lambda: boto3_session.events.unregister("after-call.mturk", unique_id=f"crash-after-{id(hook)}")


# ---------------------------------------------------------------------------- test jobs

IMAGE_BUCKET = "labeljob-test-images"


def pedestrian_images(count: int, stride: int = 1) -> list[dict]:
    """Every `stride`-th record of pedestrians-dev.jsonl, `count` of them."""
    return list(_records(PEDESTRIANS).values())[::stride][:count]


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = (
            _merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


class MTurkJob:
    """A pedestrian labeling job on the fake: spec, manifest, workspace and backend, ready to run.

    The manifest names `s3://labeljob-test-images/ped/<image>`; presigning them needs no call.
    `restart()` is a new process: a fresh boto3 session and backend over the same workspace.
    """

    def __init__(
        self, fake: FakeMTurk, folder: Path, *, count: int = 4, stride: int = 1, **spec: dict
    ) -> None:
        from orchestrator.jobs import JobStore, ManifestItem
        from orchestrator.spec import parse_spec
        from orchestrator.storage import open_store

        self.fake = fake
        self.images = pedestrian_images(count, stride)
        manifest = folder / "input.manifest"
        lines = [{"source-ref": f"s3://{IMAGE_BUCKET}/ped/{image['image']}"} for image in self.images]
        manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        base = {
            "name": "pedestrians",
            "backend": "mturk",
            "labels": ["pedestrian"],
            "input_manifest": str(manifest),
            "output": str(folder / "output"),
            "task": {"workers_per_object": 5},
            "workforce": {"type": "public"},
            "mturk": {"reward_usd": "0.05"},
        }
        self.spec = parse_spec(_merge(base, spec))
        self.items = [ManifestItem(str(i), line["source-ref"], line) for i, line in enumerate(lines)]
        self.workspace = open_store(folder / "workspace")
        self.jobs = JobStore(self.workspace)
        self.restart()

    def restart(self) -> None:
        from orchestrator.backends.mturk.backend import MTurkBackend

        self.session = new_session()
        self.backend = MTurkBackend(
            boto3_session=self.session, workspace=self.workspace, clock=self.fake.clock
        )

    def launch(self):
        from orchestrator.jobs import launch_job

        return launch_job(self.spec, self.backend, self.jobs, self.items).record

    def poll(self):
        from orchestrator.jobs import finish_job, poll_job

        def finish(spec, record) -> dict[str, str]:
            return finish_job(spec, record, self.jobs)

        return poll_job(self.spec.name, self.backend, self.jobs, finish=finish)

    @property
    def record(self):
        return self.jobs.load(self.spec.name)[0]

    def output_folder(self) -> Path:
        return Path(self.spec.output) / self.spec.name


@pytest.fixture(name="fake_mturk")
def fake_mturk_fixture(monkeypatch) -> Iterator[FakeMTurk]:
    """A fresh fake MTurk reached through AWS_ENDPOINT_URL_MTURK."""
    with FakeMTurk() as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_MTURK", fake.url)
        yield fake


@pytest.fixture(name="fast_retries")
def fast_retries_fixture(monkeypatch) -> None:
    """botocore's retries without their sleeps: backoff and the adaptive rate limiter's pacing."""
    from botocore.retries import adaptive, standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    monkeypatch.setattr(
        adaptive.ClientRateLimiter, "on_sending_request", lambda self, request, **kwargs: None
    )

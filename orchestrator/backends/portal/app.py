"""The portal web app: worker pages, the JSON API, marketplace entry points, images, admin pages.

Authentication:
- Workers: an invite link `/w/<code>` holds a one-time code; its page's button (same origin only)
  spends it for an expiring worker token in an HttpOnly cookie. The JSON API takes a worker
  token as `Authorization: Bearer <token>`.
- Marketplace visitors (`/external` for MTurk, `/go/<job>` for any other marketplace) come with
  the job's link secret and get a session for that job, in a hidden field of the task form
  (the page may live in a third-party iframe where cookies are blocked) and in a cookie.
- Admins: an admin token (never a worker's) in the `Authorization` header or, after `/a/<token>`,
  in a cookie.
HTML forms that change state carry a CSRF token derived from the session's secret; the JSON API
relies on the bearer header instead, which a cross-site form cannot set.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlparse

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette._utils import get_route_path
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.routing import Mount

from orchestrator.backends.portal import catalog, gold, marketplace, pages, rounds
from orchestrator.backends.portal import workers as portal_workers
from orchestrator.backends.portal.db import (
    Answer,
    Job,
    Lease,
    MarketplaceLink,
    Task,
    Token,
    Worker,
    open_database,
)
from orchestrator.backends.portal.leasing import (
    LeasedTask,
    LeaseHeldElsewhere,
    SubmitRefused,
    lease_owned,
    live_lease_token,
    set_down,
    submit_answer,
    take_task,
)
from orchestrator.backends.portal.media import (
    IMAGE_CSP,
    PRESIGN_SECONDS,
    check_key,
    content_type,
    served_type,
)
from orchestrator.backends.portal.tokens import (
    SESSION_SECONDS,
    WORKER_SECONDS,
    csrf_ok,
    csrf_token,
    find_invite,
    find_token,
    issue_token,
    load_signing_key,
    redeem_invite,
    sign,
    signature_ok,
)
from orchestrator.backends.portal.verify import lease_start_boxes
from orchestrator.backends.portal.workers import invite_worker, worker_by_public_id
from orchestrator.consolidation import (
    MAX_BOXES_PER_ANSWER,
    AnswerReport,
    WorkerAnswer,
    parse_element_answer,
)
from orchestrator.errors import StorageError
from orchestrator.jobs import JobStore, job_output_prefix
from orchestrator.outputs import (
    read_source_lines,
    read_worker_responses,
)
from orchestrator.review import JOB_REVIEWED_KEY, Refused, Review, build_review_app
from orchestrator.storage import LocalStore, ObjectStore, is_s3_uri, open_object, open_store
from orchestrator.templates import TaskText, render_task, template_file

WORKER_COOKIE = "labeljob_worker"
ADMIN_COOKIE = "labeljob_admin"
SESSION_COOKIE = "labeljob_session"
STATIC_SCRIPTS = ("crowd-bounding-box.js", "lease-timer.js")
UNFRAMED_PATHS = ("/admin", "/api/admin", "/a/", "/w/")
INVITE_SPENT = "This invite link is not valid, was already used, or has expired: ask for a new one."
WORKING_ELSEWHERE = (
    "This worker id is working on this job in another browser window: finish there, "
    "or come back when that task's time is up."
)
MAX_BODY_BYTES = 2_000_000
# A request body must arrive within this time, however slowly it trickles in.
BODY_SECONDS = 30
# The task and admin forms have a handful of fields; only taskAnswers may be long.
MAX_FORM_FIELDS = 16
MAX_FIELD_CHARS = 4096
IMAGE_URL_SECONDS = 3600
MTURK_PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE"
# Where MTurk may send a worker back to; anything else in turkSubmitTo is refused.
MTURK_HOSTS = ("www.mturk.com", "workersandbox.mturk.com", "worker.mturk.com")
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
CSP = (
    "default-src 'self'; img-src 'self' data: blob: https:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'{nonce}; form-action 'self' https:; base-uri 'none'; object-src 'none'"
)


class Denied(Exception):
    """A request the portal refuses; rendered as a page or as JSON depending on the route."""

    def __init__(self, status: int, message: str, *, html: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.html = html


@dataclass(frozen=True)
class Identity:
    """Who holds a token: its kind ("admin", "worker" or "session"), the token, and the worker.

    A marketplace session also names its row (`token_id`), to which its leases are bound, and the
    one job it may work on.
    """

    kind: str
    token: str
    worker_id: int | None = None
    public_id: str | None = None
    name: str | None = None
    token_id: int | None = None
    job_name: str | None = None
    issued_at: float | None = None

    @property
    def lease_token(self) -> int | None:
        """The token a lease of this holder is bound to: sessions only."""
        return self.token_id if self.kind == "session" else None


class Portal:
    """The app's state and the logic behind its routes, kept apart from HTTP details."""

    def __init__(
        self,
        db_url: str,
        workspace_store: ObjectStore | None,
        boto3_session=None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = open_database(db_url)
        self.workspace = workspace_store
        self.boto3_session = boto3_session
        self.clock = clock
        self.signing_key = load_signing_key(self.db)
        self._texts: dict[int, TaskText] = {}
        self._stores: dict[str, ObjectStore] = {}
        self._reviews: dict[str, FastAPI] = {}
        # Jobs whose review sent an image back to the crowd: their review is built again from the
        # new outputs once the job is finished again.
        self._reworked: set[str] = set()
        self._review_lock = threading.Lock()

    # ------------------------------------------------------------------------------ identity

    def identify(self, token: str | None, kinds: tuple[str, ...], *, html: bool = False) -> Identity:
        """The holder of `token`; 401 when it is missing, unknown or expired, 403 when it is of
        another kind."""
        if not token:
            raise Denied(401, "This page needs a token: use your personal link.", html=html)
        with self.db.read() as session:
            row = find_token(session, token, ("admin", "worker", "session"), self.clock())
            if row is None:
                raise Denied(401, "This link or token is not valid (or has expired).", html=html)
            if row.kind not in kinds:
                raise Denied(403, "This token does not give access here.", html=html)
            return self._identity(session, row, token)

    @staticmethod
    def _identity(session, row: Token, token: str) -> Identity:
        worker = session.get(Worker, row.worker_id) if row.worker_id is not None else None
        if worker is None:
            return Identity(row.kind, token)
        job = session.get(Job, row.job_id) if row.job_id is not None else None
        return Identity(
            row.kind,
            token,
            worker.id,
            worker.public_id,
            worker.name,
            row.id,
            job.name if job else None,
            row.created_at,
        )

    def enter(self, source: str, job_name: str | None, params: dict[str, str], reuse: str | None) -> Identity:
        """A session for a marketplace visitor of `job_name`, whose link (with its secret `k`) is in
        `params`; `reuse` is the session this browser already holds, if any.

        Refused, before anything is stored: a wrong or missing secret or job (403), a malformed
        worker id (400), a new worker id over the job's per-minute cap or a known one opening too
        many sessions (429), and a worker id whose live lease belongs to another browser (409).
        """
        now = self.clock()
        for _ in range(2):
            try:
                with self.db.write() as session:
                    return self._enter(session, source, job_name, params, reuse, now)
            except IntegrityError:
                continue  # another request created the same worker at the same moment
        raise Denied(409, "Please reload the page.", html=True)

    def _enter(self, session, source, job_name, params, reuse, now) -> Identity:
        job = catalog.job_by_name(session, job_name) if job_name else None
        link = session.get(MarketplaceLink, job.id) if job is not None else None
        if not marketplace.secret_ok(link, source, params.get("k")):
            raise Denied(403, "This link is not valid: open the task from the marketplace again.", html=True)
        if job.status != "open":
            raise Denied(404, "This job is not open.", html=True)
        external_id = params.get(marketplace.MARKETPLACES[link.marketplace].worker_param)
        if not external_id or not _EXTERNAL_ID.match(external_id):
            raise Denied(400, "the link has no valid worker id", html=True)
        public_id = f"{link.marketplace}:{external_id}"
        worker = session.scalars(select(Worker).where(Worker.public_id == public_id)).first()
        if worker is not None and reuse:
            row = find_token(session, reuse, ("session",), now)
            if row is not None and row.worker_id == worker.id and row.job_id == job.id:
                return self._identity(session, row, reuse)
        known = worker is not None and session.scalar(
            select(Token.id).where(
                Token.kind == "session", Token.worker_id == worker.id, Token.job_id == job.id
            )
        )
        if known and not marketplace.new_session_allowed(session, worker.id, job.id, now):
            raise Denied(
                429, "This worker id opened too many sessions; please try again in a minute.", html=True
            )
        if not known and not marketplace.new_worker_allowed(session, link, now):
            raise Denied(429, "Many workers are starting right now; please try again in a minute.", html=True)
        if worker is not None and live_lease_token(session, worker.id, job.id, now) is not None:
            raise Denied(409, WORKING_ELSEWHERE, html=True)
        if worker is None:
            worker = worker_by_public_id(
                session,
                public_id,
                name=external_id,
                source="mturk" if source == "mturk" else "external",
                now=now,
            )
        token = issue_token(session, "session", worker.id, now, job_id=job.id)
        return self._identity(session, find_token(session, token, ("session",), now), token)

    def take(self, who: Identity, job_name: str | None = None, *, html: bool = False) -> LeasedTask | None:
        """take_task for `who`: a session only ever works on its own job, in its own browser."""
        if who.job_name is not None:
            if job_name not in (None, who.job_name):
                raise Denied(403, "This session belongs to another job.", html=html)
            job_name = who.job_name
        try:
            return take_task(self.db, who.worker_id, self.clock(), job_name, token_id=who.lease_token)
        except LeaseHeldElsewhere:
            raise Denied(409, WORKING_ELSEWHERE, html=html) from None

    def session_answers(self, who: Identity) -> int:
        """Answers given with this token: a marketplace session's leases, or a worker's answers
        since its token was issued."""
        with self.db.read() as session:
            if who.kind == "session":
                done = select(func.count(Lease.id)).where(
                    Lease.token_id == who.token_id, Lease.submitted_at.is_not(None)
                )
            else:
                done = select(func.count(Answer.id)).where(
                    Answer.worker_id == who.worker_id, Answer.submitted_at >= who.issued_at
                )
            return session.scalar(done)

    def completion(self, job_name: str) -> tuple[str | None, str | None]:
        with self.db.read() as session:
            job = catalog.job_by_name(session, job_name)
            link = session.get(MarketplaceLink, job.id) if job is not None else None
            return marketplace.completion(link) if link is not None else (None, None)

    # ----------------------------------------------------------------------------- task pages

    def job(self, name: str | None = None, job_id: int | None = None) -> Job | None:
        with self.db.read() as session:
            if job_id is not None:
                return session.get(Job, job_id)
            return catalog.job_by_name(session, name) if name is not None else None

    def task_text(self, job_id: int) -> TaskText:
        if job_id not in self._texts:
            job = self.job(job_id=job_id)
            self._texts[job_id] = catalog.load_task_text(job.task_text)
        return self._texts[job_id]

    def image_url(self, job_id: int, key: str) -> str:
        expires = int(self.clock()) + IMAGE_URL_SECONDS
        signature = sign(self.signing_key, f"{job_id}\n{key}\n{expires}")
        return f"/img/{job_id}/{quote(key)}?exp={expires}&sig={signature}"

    def start_boxes(self, lease_id: int) -> list[dict] | None:
        """The boxes a verification task starts from; None for an ordinary task."""
        with self.db.read() as session:
            return lease_start_boxes(session, lease_id)

    def task_page(
        self,
        leased: LeasedTask,
        form_action: str,
        hidden: dict[str, str],
        *,
        can_skip: bool = True,
        notice: str | None = None,
    ) -> str:
        """The task page; with `can_skip`, buttons that post to `<form_action>/skip` to skip the
        image or report it broken, and how long the lease lasts."""
        html = render_task(
            self.task_text(leased.job_id),
            "portal",
            image_url=self.image_url(leased.job_id, leased.image_key),
            form_action=form_action,
            initial_value=self.start_boxes(leased.lease_id),
        )
        html = pages.with_hidden_fields(html, hidden, notice)
        if can_skip:
            html += pages.task_actions(f"{form_action}/skip", hidden, leased.expires_at - self.clock())
        return html

    def set_down(self, identity: Identity, lease_id: int, reason: str | None) -> None:
        try:
            set_down(self.db, identity.worker_id, lease_id, reason or "", self.clock(), identity.lease_token)
        except ValueError as exc:
            raise Denied(400, str(exc), html=True) from None

    def submit(self, identity: Identity, lease_id: int, payload: object) -> dict:
        """Validate and store an answer; the JSON the API returns.

        The owner of the lease is checked first: an answer checked before it would tell anyone
        whose lease this is. Only the answer's parsed boxes and image size are stored.
        """
        with self.db.read() as session:
            task_id = lease_owned(session, lease_id, identity.worker_id, identity.lease_token)
            if task_id is None:
                raise SubmitRefused("unknown_lease")
            row = session.execute(
                select(Job.task_text).join(Task, Task.job_id == Job.id).where(Task.id == task_id)
            ).one()
        labels = list(catalog.load_task_text(row[0]).labels)
        report = AnswerReport()
        try:
            parsed = parse_element_answer(answer_content(payload), identity.public_id, labels, report)
        except ValueError as exc:
            raise Denied(422, f"not an answer: {exc}") from None
        except RecursionError:
            raise Denied(422, "not an answer: nested too deeply") from None
        if parsed is None:
            raise Denied(422, "the answer cannot be read: " + "; ".join(report.examples))
        if report.counts["too_many_boxes"]:
            raise Denied(422, f"an answer holds at most {MAX_BOXES_PER_ANSWER} boxes")
        text = json.dumps(stored_answer(parsed), ensure_ascii=False, separators=(",", ":"))
        done = submit_answer(self.db, identity.worker_id, lease_id, text, self.clock(), identity.lease_token)
        if not done.duplicate:
            gold.after_answer(self.db, identity.worker_id, lease_id, self.clock())
        return {
            "status": "duplicate" if done.duplicate else "accepted",
            "answer_id": done.answer_id,
            "job": done.job_name,
        }

    # -------------------------------------------------------------------------------- images

    def store_for(self, root: str) -> ObjectStore:
        if root not in self._stores:
            self._stores[root] = open_store(root, self.boto3_session)
        return self._stores[root]

    def image(self, job_id: int, key: str, expires: str | None, signature: str | None) -> Response:
        if not expires or not expires.isdigit():
            raise Denied(403, "image links are signed; reload the task page")
        if not signature_ok(self.signing_key, f"{job_id}\n{key}\n{expires}", signature):
            raise Denied(403, "bad image signature")
        if int(expires) < self.clock():
            raise Denied(403, "this image link has expired; reload the task page")
        try:
            check_key(key)
        except StorageError as exc:
            raise Denied(400, exc.message) from None
        with self.db.read() as session:
            job = session.get(Job, job_id)
            known = session.scalar(
                select(Task.id).where(Task.job_id == job_id, Task.image_key == key).limit(1)
            )
        if job is None or known is None:
            raise Denied(404, "no such image in this job")
        store = self.store_for(job.image_root)
        if is_s3_uri(job.image_root):
            if served_type(key) is None:
                raise Denied(415, "the portal serves only JPEG, PNG, BMP, GIF and WebP images")
            return RedirectResponse(store.read_url(key, PRESIGN_SECONDS), status_code=307)
        path = self._local_path(store, key)
        with path.open("rb") as fh:
            kind = served_type(key, fh.read(16))
        if kind is None:
            raise Denied(415, "this file is not a JPEG, PNG, BMP, GIF or WebP image")
        headers = {"Cache-Control": "private, max-age=300", "Content-Security-Policy": IMAGE_CSP}
        return FileResponse(path, media_type=kind, headers=headers)

    @staticmethod
    def _local_path(store: LocalStore, key: str):
        try:
            path = store.path(key)
        except StorageError as exc:
            raise Denied(400, exc.message) from None
        if not path.is_file():
            raise Denied(404, "the file is missing")
        return path

    # --------------------------------------------------------------------------------- admin

    def job_record(self, name: str):
        return JobStore(self.workspace).get(name) if self.workspace is not None else None

    def agreement(self, name: str) -> dict[str, dict]:
        return catalog.agreement(self.workspace, name, self.boto3_session)

    def output_file(self, name: str, output: str) -> Response:
        record = self.job_record(name)
        uri = record.outputs.get(output) if record is not None else None
        if not uri:
            raise Denied(404, "no such output", html=True)
        store, key = open_object(uri, self.boto3_session)
        if isinstance(store, LocalStore):
            name = quote(key.rsplit("/", 1)[-1])
            return FileResponse(
                self._local_path(store, key),
                media_type=content_type(key),
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )
        return RedirectResponse(store.read_url(key, PRESIGN_SECONDS), status_code=307)

    def job_review(self, name: str, authorize: Callable[[Request], None]) -> FastAPI:
        """The review app over the finished job's output manifest, with each worker's boxes; built
        once per job and process. Decisions go beside the job record (`review/reviewed.manifest`)."""
        with self._review_lock:
            if name in self._reworked:
                record = self.job_record(name)
                if record is not None and record.outputs.get("manifest"):
                    self._reworked.discard(name)
                    self._reviews.pop(name, None)
            if name not in self._reviews:
                record = self.job_record(name)
                if record is None:
                    raise Denied(404, "no such job in this workspace", html=True)
                manifest = record.outputs.get("manifest")
                if not manifest:
                    raise Denied(
                        404,
                        "The job has no augmented manifest yet: it is written when a poll finishes the job.",
                        html=True,
                    )
                spec = record.job_spec
                out = (self.workspace, JobStore.key(name, JOB_REVIEWED_KEY))
                refs = {
                    object_id: line["source-ref"]
                    for object_id, line in read_source_lines(
                        *open_object(spec.input_manifest, self.boto3_session)
                    ).items()
                }
                objects = {ref: object_id for object_id, ref in refs.items()}
                review = Review(
                    open_object(manifest, self.boto3_session),
                    out,
                    attr=spec.label_attribute,
                    on_reject=lambda ref: self.send_back(name, objects[ref]),
                )
                folder = open_store(job_output_prefix(spec), self.boto3_session)
                review.add_answers(read_worker_responses(folder, refs, list(spec.labels), AnswerReport()))
                self._reviews[name] = build_review_app(review, "admin", authorize, self.boto3_session)
            return self._reviews[name]

    def send_back(self, name: str, object_id: str) -> None:
        """A rejected image goes back to the job's pool as a new round for new workers, and the job
        back to in progress with no outputs, so the next poll that completes it writes them again
        (docs/review.md, "On the portal"). Nothing changes when the portal job is stopped."""
        spec = self.job_record(name).job_spec
        with self.db.write() as session:
            reopened = rounds.reopen(
                session, name, object_id, catalog.answers_per_task(spec)[1], self.clock()
            )
        if reopened is None:
            return

        def in_progress(record) -> None:
            record.status = "in_progress"
            record.outputs = {}

        JobStore(self.workspace).update(name, in_progress)
        with self._review_lock:
            self._reworked.add(name)


class SecurityHeaders:
    """Adds nosniff and a referrer policy to every response, a CSP to HTML pages, and forbids
    framing the admin and sign-in pages (pure ASGI)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "same-origin")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", CSP.format(nonce=""))
                    headers.setdefault("Cache-Control", "no-store")
                if scope["path"].startswith(UNFRAMED_PATHS):
                    # Admin and sign-in pages never sit in a frame (clickjacking); task pages must,
                    # for marketplaces that show them in an iframe.
                    policy = headers.get("Content-Security-Policy")
                    if policy is not None:
                        headers["Content-Security-Policy"] = policy + "; frame-ancestors 'none'"
                    headers["X-Frame-Options"] = "DENY"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def stored_answer(answer: WorkerAnswer) -> dict:
    """The element's answer JSON rebuilt from what the parser read: whatever else a client sent
    (extra fields, dropped boxes) is not kept."""
    # Whole pixels stay integers, as the element and Ground Truth write them.
    boxes = [
        {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in box.model_dump().items()}
        for box in answer.boxes
    ]
    result: dict = {"boundingBoxes": boxes}
    if answer.image_width and answer.image_height:
        result["inputImageProperties"] = {"width": answer.image_width, "height": answer.image_height}
    return {"annotatedResult": result}


def answer_content(payload: object) -> dict:
    """The element's answer from `{"taskAnswers": [...]}` (JSON or a form's JSON string), a
    one-element array, or a single object such as `{"annotatedResult": {...}}`."""
    if isinstance(payload, dict) and "taskAnswers" in payload:
        payload = payload["taskAnswers"]
        if isinstance(payload, str):
            payload = json.loads(payload)
    if isinstance(payload, list):
        if len(payload) != 1:
            raise ValueError(f"taskAnswers holds {len(payload)} answers, expected 1")
        payload = payload[0]
    if not isinstance(payload, dict):
        raise ValueError("an answer is a JSON object")
    return payload


def valid_turk_submit_to(url: str | None) -> str:
    parsed = urlparse(url or "")
    if parsed.scheme != "https" or parsed.hostname not in MTURK_HOSTS:
        raise Denied(400, "turkSubmitTo must be Mechanical Turk's https address", html=True)
    return f"https://{parsed.hostname}"


def same_origin(request: Request) -> bool:
    """Whether a browser sent the request from this portal's own pages: by Sec-Fetch-Site, else by
    the host of Origin or Referer. A client that sends none of them is not a browser."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    source = request.headers.get("origin") or request.headers.get("referer")
    return source is None or urlparse(source).netloc == request.headers.get("host")


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def _read_form(request: Request) -> dict[str, str]:
    """A urlencoded form (the only kind the portal's pages post), parsed off the event loop."""
    kind = request.headers.get("content-type", "application/x-www-form-urlencoded")
    if not kind.startswith("application/x-www-form-urlencoded"):
        raise Denied(415, "the portal's forms are posted urlencoded", html=True)
    return await run_in_threadpool(_parse_form, await _read_body(request))


def _parse_form(body: bytes) -> dict[str, str]:
    try:
        fields = parse_qs(
            body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except ValueError:
        raise Denied(413, "the form has too many fields", html=True) from None
    form = {name: values[0] for name, values in fields.items()}
    if any(len(value) > MAX_FIELD_CHARS for name, value in form.items() if name != "taskAnswers"):
        raise Denied(413, "a form field is too long", html=True)
    return form


async def _read_body(request: Request) -> bytes:
    """The body, counted as it arrives and cut at MAX_BODY_BYTES (413) or after BODY_SECONDS (408)."""
    declared = request.headers.get("content-length") or "0"
    if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
        raise Denied(413, "the answer is too large")
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_SECONDS):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise Denied(413, "the answer is too large")
    except TimeoutError:
        raise Denied(408, "the request arrived too slowly") from None
    return bytes(body)


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status)


def _set_cookie(
    response: Response, request: Request, name: str, value: str, max_age: int = WORKER_SECONDS
) -> None:
    response.set_cookie(
        name, value, httponly=True, samesite="lax", secure=request.url.scheme == "https", max_age=max_age
    )


def create_app(
    db_url: str,
    workspace_store: ObjectStore | None = None,
    *,
    boto3_session=None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The portal as an ASGI app over the database at `db_url` (tables are created if missing).

    `workspace_store` is where job records and outputs live (for the review page and downloads);
    `clock` returns the time in seconds and is injectable for tests of lease expiry.
    """
    portal = Portal(db_url, workspace_store, boto3_session, clock)
    app = FastAPI(title="labeljob portal", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.portal = portal

    @app.exception_handler(Denied)
    async def _denied(request: Request, exc: Denied) -> Response:
        if exc.html:
            return _html(pages.message_page("Sorry", exc.message), exc.status)
        return JSONResponse({"error": "denied", "message": exc.message}, status_code=exc.status)

    @app.exception_handler(SubmitRefused)
    async def _refused(request: Request, exc: SubmitRefused) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.reason, "message": exc.message}, status_code=409)
        link = ("/task", "Next image") if request.url.path.startswith("/task/") else None
        return _html(pages.message_page("Answer not stored", exc.message, link), 409)

    app.add_middleware(SecurityHeaders)

    # ------------------------------------------------------------------------- worker pages

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/{name}")
    def static_script(name: str) -> Response:
        """The scripts of the task page: the offline element and the lease countdown."""
        if name not in STATIC_SCRIPTS:
            raise Denied(404, "no such file")
        try:
            path = template_file(name)
        except FileNotFoundError:
            raise Denied(404, f"{name} is not installed") from None
        return Response(path.read_bytes(), media_type="text/javascript")

    @app.get("/w/{code}")
    def invite(code: str) -> Response:
        """An invite link: a page with a button that signs this browser in (GET changes nothing, so
        a link or image elsewhere cannot sign anyone in)."""
        with portal.db.read() as session:
            found = find_invite(session, code, portal.clock())
            worker = session.get(Worker, found.worker_id) if found is not None else None
        if worker is None:
            raise Denied(401, INVITE_SPENT, html=True)
        return _html(pages.invite_page(worker.name, f"/w/{quote(code)}"))

    @app.post("/w/{code}")
    def invite_accept(request: Request, code: str) -> Response:
        """Spend the invite for a worker session in this browser's cookie. Only a form of this
        portal may post here: another site posting an invite of its own would sign the visitor
        in as that worker (login CSRF)."""
        if not same_origin(request):
            raise Denied(403, "This form must be sent from the portal's own page.", html=True)
        now = portal.clock()
        with portal.db.write() as session:
            worker_id = redeem_invite(session, code, now)
            token = issue_token(session, "worker", worker_id, now) if worker_id is not None else None
        if token is None:
            raise Denied(401, INVITE_SPENT, html=True)
        response = RedirectResponse("/task", status_code=303)
        _set_cookie(response, request, WORKER_COOKIE, token)
        return response

    @app.get("/task")
    def work(request: Request, job: str | None = None, stored: int = 0) -> Response:
        """The worker's next task; after a submit (`stored=1`) it confirms the answer and counts."""
        who = portal.identify(request.cookies.get(WORKER_COOKIE), ("worker",), html=True)
        leased = portal.take(who, job, html=True)
        if leased is None:
            return _html(pages.no_more_tasks_page(who.name))
        notice = (
            f"Answer stored. Images done in this session: {portal.session_answers(who)}." if stored else None
        )
        hidden = {"csrf": csrf_token(who.token)}
        return _html(portal.task_page(leased, f"/task/{leased.lease_id}", hidden, notice=notice))

    async def _worker_form(request: Request) -> tuple[Identity, dict[str, str]]:
        """The signed-in worker and its form's fields, once the CSRF token is checked."""
        token = request.cookies.get(WORKER_COOKIE)
        who = await run_in_threadpool(portal.identify, token, ("worker",), html=True)
        form = await _read_form(request)
        if not csrf_ok(token, form.get("csrf")):
            raise Denied(403, "This form has expired; reload the page and submit again.", html=True)
        return who, form

    @app.post("/task/{lease_id}")
    async def work_submit(request: Request, lease_id: int) -> Response:
        who, form = await _worker_form(request)
        await _submit_html(who, lease_id, form)
        return RedirectResponse("/task?stored=1", status_code=303)

    @app.post("/task/{lease_id}/skip")
    async def work_skip(request: Request, lease_id: int) -> Response:
        """Skip the image, or report it broken (field `reason`), and go to the next one."""
        who, form = await _worker_form(request)
        await run_in_threadpool(portal.set_down, who, lease_id, form.get("reason"))
        return RedirectResponse("/task", status_code=303)

    async def _submit_html(who: Identity, lease_id: int, form: dict[str, str]) -> dict:
        try:
            return await run_in_threadpool(
                portal.submit, who, lease_id, {"taskAnswers": form.get("taskAnswers")}
            )
        except Denied as exc:
            raise Denied(exc.status, exc.message, html=True) from None

    # --------------------------------------------------------------------- marketplace modes

    def _marketplace_task(request: Request, who: Identity, form: dict[str, str], action: str) -> Response:
        leased = portal.take(who, html=True)
        if leased is None:
            response = _html(pages.no_more_tasks_page(who.name))
        else:
            hidden = {"csrf": csrf_token(who.token), "session": who.token, **form}
            # An MTurk worker sets a task down by returning the HIT on MTurk itself.
            page = portal.task_page(
                leased,
                action.format(lease=leased.lease_id),
                hidden,
                can_skip=not action.startswith("/external"),
            )
            response = _html(page)
        # The hidden field works inside a marketplace's iframe; the cookie lets a reload in a tab
        # find the same session (and so the same lease) instead of being taken for another browser.
        _set_cookie(response, request, SESSION_COOKIE, who.token, max_age=SESSION_SECONDS)
        return response

    def _entered(request: Request, source: str, job: str | None) -> Identity:
        params = dict(request.query_params)
        return portal.enter(source, job, params, request.cookies.get(SESSION_COOKIE))

    @app.get("/external")
    def external(
        request: Request,
        assignmentId: str | None = None,  # noqa: N803 (MTurk's parameter names)
        turkSubmitTo: str | None = None,  # noqa: N803
        job: str | None = None,
        k: str | None = None,
    ) -> Response:
        """MTurk ExternalQuestion target (`/external?job=J&k=SECRET`, MTurk adds its own fields): a
        preview before the HIT is accepted, then one task."""
        if assignmentId is None or assignmentId == MTURK_PREVIEW:
            found = portal.job(job)
            with portal.db.read() as session:
                link = session.get(MarketplaceLink, found.id) if found is not None else None
                if not marketplace.secret_ok(link, "mturk", k):
                    raise Denied(403, "This link is not valid.", html=True)
                first = session.scalar(
                    select(Task.image_key).where(Task.job_id == found.id).order_by(Task.position).limit(1)
                )
            text = portal.task_text(found.id)
            image = portal.image_url(found.id, first) if first else None
            return _html(pages.preview_page(text.header, text.short_instructions_html, image))
        submit_to = valid_turk_submit_to(turkSubmitTo)
        who = _entered(request, "mturk", job)
        form = {"assignmentId": assignmentId, "turkSubmitTo": submit_to}
        return _marketplace_task(request, who, form, "/external/{lease}")

    @app.get("/go/{job}")
    def generic(request: Request, job: str) -> Response:
        """Any other marketplace: the URL `labeljob portal link` printed, filled in by the marketplace."""
        return _marketplace_task(request, _entered(request, "generic", job), {}, "/go/{lease}")

    async def _marketplace_identity(form: dict[str, str]) -> Identity:
        session_token = form.get("session")
        who = await run_in_threadpool(portal.identify, session_token, ("session",), html=True)
        if not csrf_ok(session_token, form.get("csrf")):
            raise Denied(403, "This form has expired; reload the page and submit again.", html=True)
        return who

    @app.post("/external/{lease_id}")
    async def external_submit(request: Request, lease_id: int) -> Response:
        form = await _read_form(request)
        submit_to = valid_turk_submit_to(form.get("turkSubmitTo"))
        assignment = form.get("assignmentId") or ""
        await _submit_html(await _marketplace_identity(form), lease_id, form)
        nonce = secrets.token_urlsafe(16)
        response = _html(pages.mturk_return_page(f"{submit_to}/mturk/externalSubmit", assignment, nonce))
        response.headers["Content-Security-Policy"] = CSP.format(nonce=f" 'nonce-{nonce}'")
        return response

    @app.post("/go/next")
    async def generic_next(request: Request) -> Response:
        """The "Next image" button of the page shown after an answer."""
        who = await _marketplace_identity(await _read_form(request))
        return await run_in_threadpool(_marketplace_task, request, who, {}, "/go/{lease}")

    @app.post("/go/{lease_id}/skip")
    async def generic_skip(request: Request, lease_id: int) -> Response:
        form = await _read_form(request)
        who = await _marketplace_identity(form)
        await run_in_threadpool(portal.set_down, who, lease_id, form.get("reason"))
        return await run_in_threadpool(_marketplace_task, request, who, {}, "/go/{lease}")

    @app.post("/go/{lease_id}")
    async def generic_submit(request: Request, lease_id: int) -> Response:
        form = await _read_form(request)
        who = await _marketplace_identity(form)
        await _submit_html(who, lease_id, form)
        done = await run_in_threadpool(portal.session_answers, who)
        finish_url, code = await run_in_threadpool(portal.completion, who.job_name)
        hidden = {"csrf": csrf_token(who.token), "session": who.token}
        return _html(pages.marketplace_done_page(done, "/go/next", hidden, finish_url, code))

    # ------------------------------------------------------------------------------ JSON API

    @app.post("/api/tasks/next")
    def api_next(request: Request, job: str | None = None) -> Response:
        """Lease the next task (or return the live one): 200 with the task, 204 when none is left."""
        who = portal.identify(_bearer(request), ("worker", "session"))
        leased = portal.take(who, job)
        if leased is None:
            return Response(status_code=204)
        text = portal.task_text(leased.job_id)
        return JSONResponse(
            {
                "lease_id": leased.lease_id,
                "job": leased.job_name,
                "object_id": leased.object_id,
                "source_ref": leased.source_ref,
                "image_key": leased.image_key,
                "image_url": portal.image_url(leased.job_id, leased.image_key),
                "labels": list(text.labels),
                "header": text.header,
                "expires_at": leased.expires_at,
                "initial_boxes": portal.start_boxes(leased.lease_id),
                "submit_url": f"/api/leases/{leased.lease_id}/answer",
            }
        )

    @app.post("/api/leases/{lease_id}/answer")
    async def api_answer(request: Request, lease_id: int) -> Response:
        """Store an answer: the element's JSON, MTurk-style `{"taskAnswers": [...]}` or a single object."""
        who = await run_in_threadpool(portal.identify, _bearer(request), ("worker", "session"))
        body = await _read_body(request)
        try:
            payload = await run_in_threadpool(json.loads, body)
        except (ValueError, RecursionError):
            raise Denied(422, "the body is not JSON") from None
        return JSONResponse(await run_in_threadpool(portal.submit, who, lease_id, payload))

    @app.post("/api/leases/{lease_id}/skip")
    async def api_skip(request: Request, lease_id: int) -> Response:
        """Give the lease back: `{"reason": "skip" | "not_loading" | "not_an_image"}`."""
        who = await run_in_threadpool(portal.identify, _bearer(request), ("worker", "session"))
        body = await _read_body(request)
        try:
            reason = json.loads(body or b"{}").get("reason")
        except (ValueError, AttributeError):
            raise Denied(422, 'the body is not {"reason": ...}') from None
        await run_in_threadpool(portal.set_down, who, lease_id, reason)
        return JSONResponse({"status": "set_down", "reason": reason})

    # --------------------------------------------------------------------------------- images

    @app.get("/img/{job_id}/{key:path}")
    def image(job_id: int, key: str, exp: str | None = None, sig: str | None = None) -> Response:
        return portal.image(job_id, key, exp, sig)

    # ---------------------------------------------------------------------------------- admin

    def admin(request: Request, html: bool = True) -> Identity:
        token = _bearer(request) or request.cookies.get(ADMIN_COOKIE)
        return portal.identify(token, ("admin",), html=html)

    @app.get("/a/{token}")
    def admin_login(request: Request, token: str) -> Response:
        portal.identify(token, ("admin",), html=True)
        response = RedirectResponse("/admin", status_code=303)
        _set_cookie(response, request, ADMIN_COOKIE, token)
        return response

    def _all_progress() -> list[dict]:
        now = portal.clock()
        with portal.db.read() as session:
            jobs = session.scalars(select(Job).order_by(Job.id)).all()
            return [catalog.progress(session, job, now) for job in jobs]

    @app.get("/admin")
    def admin_jobs(request: Request) -> Response:
        who = admin(request)
        return _html(pages.admin_jobs_page(_all_progress(), csrf_token(who.token)))

    @app.post("/admin/invite")
    async def admin_invite(request: Request) -> Response:
        """The invite form: a new worker (for one job, or any) and its one-time link, shown once."""
        form = await _admin_form(request)
        name, job_name = (form.get("name") or "").strip(), form.get("job") or None
        if not name or len(name) > 256:
            raise Denied(400, "A worker's name is 1-256 characters.", html=True)

        def invite() -> str:
            with portal.db.write() as session:
                job = catalog.job_by_name(session, job_name) if job_name else None
                if job_name and job is None:
                    raise Denied(404, "no such job", html=True)
                return invite_worker(session, name, job.id if job else None, portal.clock())[1]

        code = await run_in_threadpool(invite)
        return _html(pages.invite_made_page(name, f"{str(request.base_url).rstrip('/')}/w/{code}"))

    @app.post("/admin/revoke")
    async def admin_revoke(request: Request) -> Response:
        """End a worker's tokens, sessions and invites at once (field `worker`)."""
        form = await _admin_form(request)

        def revoke() -> None:
            with portal.db.write() as session:
                worker = session.scalars(select(Worker).where(Worker.public_id == form.get("worker"))).first()
                if worker is None:
                    raise Denied(404, "no such worker", html=True)
                portal_workers.revoke(session, worker, portal.clock())

        await run_in_threadpool(revoke)
        return RedirectResponse("/admin", status_code=303)

    @app.get("/api/admin/jobs")
    def api_admin_jobs(request: Request) -> Response:
        admin(request, html=False)
        return JSONResponse(_all_progress())

    @app.get("/admin/jobs/{name}")
    def admin_job(request: Request, name: str) -> Response:
        who = admin(request)
        with portal.db.read() as session:
            job = catalog.job_by_name(session, name)
            if job is None:
                raise Denied(404, "no such job", html=True)
            summary = catalog.progress(session, job, portal.clock())
            workers = catalog.worker_stats(session, job)
            scores = gold.public_gold_scores(session, job.id)
            blocked = portal_workers.block_reasons(session, job.id)
            summary["set_aside"] = catalog.set_aside(session, job)
        agreement = portal.agreement(name)
        for row in workers:
            row.update({k: v for k, v in agreement.get(row["worker_id"], {}).items() if k != "answers"})
            if scores:
                score = scores.get(row["worker_id"])
                row["gold"] = f"F1 {score.f1:.2f} over {score.tasks}" if score else "none yet"
                row["block_reason"] = blocked.get(row["worker_id"], "")
        record = portal.job_record(name)
        outputs = record.outputs if record else {}
        # A folder output (an export with several files) is shown by its location, not downloaded.
        files = [
            (output, uri if uri.endswith("/") else f"/admin/jobs/{quote(name)}/files/{quote(output)}")
            for output, uri in sorted(outputs.items())
        ]
        return _html(pages.admin_job_page(summary, workers, files, csrf_token(who.token)))

    async def _admin_form(request: Request) -> dict[str, str]:
        """An admin form's fields, once its sender and CSRF token are checked."""
        who = await run_in_threadpool(admin, request)
        form = await _read_form(request)
        if not csrf_ok(who.token, form.get("csrf")):
            raise Denied(403, "This form has expired; reload the page and try again.", html=True)
        return form

    @app.post("/admin/jobs/{name}/stop")
    async def admin_stop(request: Request, name: str) -> Response:
        await _admin_form(request)

        def stop() -> bool:
            with portal.db.write() as session:
                return catalog.stop_job(session, name, portal.clock())

        if not await run_in_threadpool(stop):
            raise Denied(404, "no such job", html=True)
        return RedirectResponse(f"/admin/jobs/{quote(name)}", status_code=303)

    @app.post("/admin/jobs/{name}/block")
    async def admin_block(request: Request, name: str) -> Response:
        """Block, unblock or block and drop the answers of (field `action`: "block", "unblock" or
        "drop") the worker `worker` in this job; docs/portal.md, "Managing workers"."""
        form = await _admin_form(request)

        def change() -> None:
            with portal.db.write() as session:
                job = catalog.job_by_name(session, name)
                worker = session.scalars(select(Worker).where(Worker.public_id == form.get("worker"))).first()
                if job is None or worker is None:
                    raise Denied(404, "no such job or worker", html=True)
                if form.get("action") == "unblock":
                    portal_workers.unblock(session, worker, job)
                else:
                    portal_workers.block(session, worker, job, portal.clock())
                if form.get("action") == "drop":
                    catalog.drop_answers(session, worker, job, portal.clock())

        await run_in_threadpool(change)
        return RedirectResponse(f"/admin/jobs/{quote(name)}", status_code=303)

    @app.get("/admin/jobs/{name}/review")
    def admin_review(request: Request, name: str) -> Response:
        admin(request)
        return RedirectResponse(f"/review/{quote(name)}/", status_code=303)

    def review_admin(request: Request) -> None:
        try:
            admin(request, html=False)
        except Denied as exc:
            raise Refused(exc.status, exc.message) from None

    async def job_review(scope, receive, send) -> None:
        """`/review/<job>/`: the review app of one finished job, for admins only."""
        request = Request(scope)
        await run_in_threadpool(admin, request)
        name = scope["path_params"]["name"]
        if get_route_path(scope) == "":
            # The page's URLs are relative: it must be served at the folder's address.
            await RedirectResponse(f"/review/{quote(name)}/", status_code=307)(scope, receive, send)
            return
        review_app = await run_in_threadpool(portal.job_review, name, review_admin)
        await review_app(scope, receive, send)

    app.router.routes.append(Mount("/review/{name}", app=job_review))

    @app.get("/admin/jobs/{name}/files/{output}")
    def admin_file(request: Request, name: str, output: str) -> Response:
        admin(request)
        return portal.output_file(name, output)

    return app

"""The portal web app: worker pages, the JSON API, marketplace entry points, images, admin pages.

Authentication:
- Workers: an invite link `/w/<token>` stores the token in an HttpOnly cookie; the JSON API takes
  the same token as `Authorization: Bearer <token>`.
- Marketplace visitors (`/external` for MTurk, `/go` for any other marketplace) get a session
  token in a hidden field of the task form, because the page may live in a third-party iframe
  where cookies are blocked.
- Admins: an admin token (never a worker's) in the `Authorization` header or, after `/a/<token>`,
  in a cookie.
HTML forms that change state carry a CSRF token derived from the session's secret; the JSON API
relies on the bearer header instead, which a cross-site form cannot set.
"""

from __future__ import annotations

import csv
import io
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
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette._utils import get_route_path
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.routing import Mount

from orchestrator.backends.portal import catalog, gold, pages
from orchestrator.backends.portal.db import Job, Lease, Task, Worker, open_database
from orchestrator.backends.portal.leasing import LeasedTask, SubmitRefused, submit_answer, take_task
from orchestrator.backends.portal.media import PRESIGN_SECONDS, check_key, content_type
from orchestrator.backends.portal.tokens import (
    csrf_ok,
    csrf_token,
    find_token,
    issue_token,
    load_signing_key,
    sign,
    signature_ok,
)
from orchestrator.backends.portal.verify import lease_start_boxes
from orchestrator.backends.portal.workers import worker_by_public_id
from orchestrator.consolidation import AnswerReport, parse_element_answer
from orchestrator.errors import NotFound, StorageError
from orchestrator.jobs import JobStore, job_output_prefix
from orchestrator.outputs import WORKERS_REPORT_KEY, read_source_lines, read_worker_responses
from orchestrator.review import Refused, Review, build_review_app
from orchestrator.storage import LocalStore, ObjectStore, is_s3_uri, open_object, open_store
from orchestrator.templates import TaskText, render_task, template_file

WORKER_COOKIE = "labeljob_worker"
ADMIN_COOKIE = "labeljob_admin"
MAX_BODY_BYTES = 2_000_000
IMAGE_URL_SECONDS = 3600
# Where the portal's review of a job writes REVIEWED, beside the job record.
REVIEWED_KEY = "review/reviewed.manifest"
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
    """Who holds a token: its kind ("admin", "worker" or "session"), the token, and the worker."""

    kind: str
    token: str
    worker_id: int | None = None
    public_id: str | None = None
    name: str | None = None


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
        self._review_lock = threading.Lock()

    # ------------------------------------------------------------------------------ identity

    def identify(self, token: str | None, kinds: tuple[str, ...], *, html: bool = False) -> Identity:
        """The holder of `token`; 401 when it is missing or unknown, 403 when it is of another kind."""
        if not token:
            raise Denied(401, "This page needs a token: use your personal link.", html=html)
        with self.db.read() as session:
            row = find_token(session, token, ("admin", "worker", "session"))
            if row is None:
                raise Denied(401, "This link or token is not valid (or was revoked).", html=html)
            if row.kind not in kinds:
                raise Denied(403, "This token does not give access here.", html=html)
            worker = session.get(Worker, row.worker_id) if row.worker_id is not None else None
        if worker is None:
            return Identity(row.kind, token)
        return Identity(row.kind, token, worker.id, worker.public_id, worker.name)

    def marketplace_worker(self, source: str, external_id: str) -> tuple[int, str]:
        """The worker for a marketplace id (created on first visit) and a new session token."""
        public_id = f"{'mturk' if source == 'mturk' else 'ext'}:{external_id}"
        for _ in range(2):
            try:
                with self.db.write() as session:
                    worker = worker_by_public_id(
                        session, public_id, name=external_id, source=source, now=self.clock()
                    )
                    return worker.id, issue_token(session, "session", worker.id, self.clock())
            except IntegrityError:
                continue  # another request created the same worker at the same moment
        raise Denied(409, "Please reload the page.", html=True)

    # ----------------------------------------------------------------------------- task pages

    def job(self, name: str | None = None, job_id: int | None = None) -> Job | None:
        with self.db.read() as session:
            if job_id is not None:
                return session.get(Job, job_id)
            if name is not None:
                return catalog.job_by_name(session, name)
            # Without a name, a marketplace link means the only open job.
            open_jobs = session.scalars(select(Job).where(Job.status == "open").limit(2)).all()
            return open_jobs[0] if len(open_jobs) == 1 else None

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

    def task_page(self, leased: LeasedTask, form_action: str, hidden: dict[str, str]) -> str:
        html = render_task(
            self.task_text(leased.job_id),
            "portal",
            image_url=self.image_url(leased.job_id, leased.image_key),
            form_action=form_action,
            initial_value=self.start_boxes(leased.lease_id),
        )
        return pages.with_hidden_fields(html, hidden)

    def submit(self, identity: Identity, lease_id: int, payload: object) -> dict:
        """Validate and store an answer; the JSON the API returns."""
        try:
            content = answer_content(payload)
        except ValueError as exc:
            raise Denied(422, f"not an answer: {exc}") from None
        with self.db.read() as session:
            row = session.execute(
                select(Job.task_text)
                .join(Task, Task.job_id == Job.id)
                .join(Lease, Lease.task_id == Task.id)
                .where(Lease.id == lease_id)
            ).first()
        if row is None:
            raise SubmitRefused("unknown_lease")
        labels = list(catalog.load_task_text(row[0]).labels)
        report = AnswerReport()
        if parse_element_answer(content, identity.public_id, labels, report) is None:
            raise Denied(422, "the answer cannot be read: " + "; ".join(report.examples))
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        done = submit_answer(self.db, identity.worker_id, lease_id, text, self.clock())
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
            return RedirectResponse(store.read_url(key, PRESIGN_SECONDS), status_code=307)
        return self._stream(store, key)

    @staticmethod
    def _stream(store: LocalStore, key: str) -> Response:
        try:
            path = store.path(key)
        except StorageError as exc:
            raise Denied(400, exc.message) from None
        if not path.is_file():
            raise Denied(404, "the file is missing")
        return FileResponse(
            path, media_type=content_type(key), headers={"Cache-Control": "private, max-age=300"}
        )

    # --------------------------------------------------------------------------------- admin

    def job_record(self, name: str):
        return JobStore(self.workspace).get(name) if self.workspace is not None else None

    def agreement(self, name: str) -> dict[str, dict]:
        """The workers report of a finished job, by worker id; empty before the job is finished."""
        record = self.job_record(name)
        if record is None:
            return {}
        store = open_store(job_output_prefix(record.job_spec), self.boto3_session)
        try:
            data = store.get(WORKERS_REPORT_KEY).decode()
        except NotFound:
            return {}
        return {row["worker_id"]: row for row in csv.DictReader(io.StringIO(data))}

    def output_file(self, name: str, output: str) -> Response:
        record = self.job_record(name)
        uri = record.outputs.get(output) if record is not None else None
        if not uri:
            raise Denied(404, "no such output", html=True)
        store, key = open_object(uri, self.boto3_session)
        if isinstance(store, LocalStore):
            response = self._stream(store, key)
            response.headers["Content-Disposition"] = (
                f'attachment; filename="{quote(key.rsplit("/", 1)[-1])}"'
            )
            return response
        return RedirectResponse(store.read_url(key, PRESIGN_SECONDS), status_code=307)

    def job_review(self, name: str, authorize: Callable[[Request], None]) -> FastAPI:
        """The review app over the finished job's output manifest, with each worker's boxes; built
        once per job and process. Decisions go beside the job record (`review/reviewed.manifest`)."""
        with self._review_lock:
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
                out = (self.workspace, JobStore.key(name, REVIEWED_KEY))
                review = Review(open_object(manifest, self.boto3_session), out, attr=spec.label_attribute)
                refs = {
                    object_id: line["source-ref"]
                    for object_id, line in read_source_lines(
                        *open_object(spec.input_manifest, self.boto3_session)
                    ).items()
                }
                folder = open_store(job_output_prefix(spec), self.boto3_session)
                review.add_answers(read_worker_responses(folder, refs, list(spec.labels), AnswerReport()))
                self._reviews[name] = build_review_app(review, "admin", authorize, self.boto3_session)
            return self._reviews[name]


class SecurityHeaders:
    """Adds nosniff and a referrer policy to every response, and a CSP to HTML pages (pure ASGI)."""

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
            await send(message)

        await self.app(scope, receive, send_with_headers)


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


def valid_return_url(url: str | None) -> str:
    """`url` if it is an absolute http(s) URL, else Denied (no javascript:, no relative paths)."""
    parsed = urlparse(url or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc or len(url) > 2000:
        raise Denied(400, "the return URL must be an absolute http or https URL", html=True)
    return url


def valid_turk_submit_to(url: str | None) -> str:
    parsed = urlparse(url or "")
    if parsed.scheme != "https" or parsed.hostname not in MTURK_HOSTS:
        raise Denied(400, "turkSubmitTo must be Mechanical Turk's https address", html=True)
    return f"https://{parsed.hostname}"


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def _read_form(request: Request) -> dict[str, str]:
    body = await _read_body(request)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


async def _read_body(request: Request) -> bytes:
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        raise Denied(413, "the answer is too large")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise Denied(413, "the answer is too large")
    return body


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status)


def _set_cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(
        name, value, httponly=True, samesite="lax", secure=request.url.scheme == "https", max_age=30 * 86400
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

    @app.get("/static/crowd-bounding-box.js")
    def element_script() -> Response:
        try:
            path = template_file("crowd-bounding-box.js")
        except FileNotFoundError:
            raise Denied(404, "crowd-bounding-box.js is not installed") from None
        return Response(path.read_bytes(), media_type="text/javascript")

    @app.get("/w/{token}")
    def invite(request: Request, token: str) -> Response:
        portal.identify(token, ("worker",), html=True)
        response = RedirectResponse("/task", status_code=303)
        _set_cookie(response, request, WORKER_COOKIE, token)
        return response

    @app.get("/task")
    def work(request: Request, job: str | None = None) -> Response:
        who = portal.identify(request.cookies.get(WORKER_COOKIE), ("worker",), html=True)
        leased = take_task(portal.db, who.worker_id, portal.clock(), job)
        if leased is None:
            return _html(pages.no_more_tasks_page(who.name))
        return _html(portal.task_page(leased, f"/task/{leased.lease_id}", {"csrf": csrf_token(who.token)}))

    @app.post("/task/{lease_id}")
    async def work_submit(request: Request, lease_id: int) -> Response:
        token = request.cookies.get(WORKER_COOKIE)
        who = await run_in_threadpool(portal.identify, token, ("worker",), html=True)
        form = await _read_form(request)
        if not csrf_ok(token, form.get("csrf")):
            raise Denied(403, "This form has expired; reload the page and submit again.", html=True)
        await _submit_html(who, lease_id, form)
        return RedirectResponse("/task", status_code=303)

    async def _submit_html(who: Identity, lease_id: int, form: dict[str, str]) -> dict:
        try:
            return await run_in_threadpool(
                portal.submit, who, lease_id, {"taskAnswers": form.get("taskAnswers")}
            )
        except Denied as exc:
            raise Denied(exc.status, exc.message, html=True) from None
        except json.JSONDecodeError:
            raise Denied(422, "The answer could not be read; please try again.", html=True) from None

    # --------------------------------------------------------------------- marketplace modes

    def _marketplace_page(source: str, external_id: str | None, job_name: str | None, form: dict) -> Response:
        if not external_id or not _EXTERNAL_ID.match(external_id):
            raise Denied(400, "the link has no valid worker id", html=True)
        job = portal.job(job_name)
        if job is None or job.status != "open":
            raise Denied(404, "This job is not open.", html=True)
        worker_id, session_token = portal.marketplace_worker(source, external_id)
        leased = take_task(portal.db, worker_id, portal.clock(), job.name)
        if leased is None:
            return _html(pages.no_more_tasks_page(external_id))
        hidden = {"csrf": csrf_token(session_token), "session": session_token, **form}
        action = f"/{'external' if source == 'mturk' else 'go'}/{leased.lease_id}"
        return _html(portal.task_page(leased, action, hidden))

    @app.get("/external")
    def external(
        assignmentId: str | None = None,  # noqa: N803 (MTurk's parameter names)
        workerId: str | None = None,  # noqa: N803
        hitId: str | None = None,  # noqa: N803
        turkSubmitTo: str | None = None,  # noqa: N803
        job: str | None = None,
    ) -> Response:
        """MTurk ExternalQuestion target: a preview before the HIT is accepted, then one task."""
        if assignmentId is None or assignmentId == MTURK_PREVIEW:
            found = portal.job(job)
            if found is None:
                raise Denied(404, "This job is not open.", html=True)
            text = portal.task_text(found.id)
            with portal.db.read() as session:
                first = session.scalar(
                    select(Task.image_key).where(Task.job_id == found.id).order_by(Task.position).limit(1)
                )
            image = portal.image_url(found.id, first) if first else None
            return _html(pages.preview_page(text.header, text.short_instructions_html, image))
        submit_to = valid_turk_submit_to(turkSubmitTo)
        form = {"assignmentId": assignmentId, "turkSubmitTo": submit_to}
        return _marketplace_page("mturk", workerId, job, form)

    @app.get("/go")
    def generic(worker: str | None = None, job: str | None = None, return_url: str | None = None) -> Response:
        """Any marketplace: `/go?job=J&worker=ID&return_url=URL`; after the answer, back to URL."""
        return _marketplace_page("external", worker, job, {"return_url": valid_return_url(return_url)})

    async def _marketplace_submit(form: dict[str, str], lease_id: int) -> dict:
        session_token = form.get("session")
        who = await run_in_threadpool(portal.identify, session_token, ("session",), html=True)
        if not csrf_ok(session_token, form.get("csrf")):
            raise Denied(403, "This form has expired; reload the page and submit again.", html=True)
        return await _submit_html(who, lease_id, form)

    @app.post("/external/{lease_id}")
    async def external_submit(request: Request, lease_id: int) -> Response:
        form = await _read_form(request)
        submit_to = valid_turk_submit_to(form.get("turkSubmitTo"))
        assignment = form.get("assignmentId") or ""
        await _marketplace_submit(form, lease_id)
        nonce = secrets.token_urlsafe(16)
        response = _html(pages.mturk_return_page(f"{submit_to}/mturk/externalSubmit", assignment, nonce))
        response.headers["Content-Security-Policy"] = CSP.format(nonce=f" 'nonce-{nonce}'")
        return response

    @app.post("/go/{lease_id}")
    async def generic_submit(request: Request, lease_id: int) -> Response:
        form = await _read_form(request)
        target = valid_return_url(form.get("return_url"))
        await _marketplace_submit(form, lease_id)
        return RedirectResponse(target, status_code=303)

    # ------------------------------------------------------------------------------ JSON API

    @app.post("/api/tasks/next")
    def api_next(request: Request, job: str | None = None) -> Response:
        """Lease the next task (or return the live one): 200 with the task, 204 when none is left."""
        who = portal.identify(_bearer(request), ("worker", "session"))
        leased = take_task(portal.db, who.worker_id, portal.clock(), job)
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
            payload = json.loads(body)
        except (ValueError, RecursionError):
            raise Denied(422, "the body is not JSON") from None
        return JSONResponse(await run_in_threadpool(portal.submit, who, lease_id, payload))

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
        admin(request)
        return _html(pages.admin_jobs_page(_all_progress()))

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
            blocked = gold.blocks(session, job.id)
        agreement = portal.agreement(name)
        for row in workers:
            row.update({k: v for k, v in agreement.get(row["worker_id"], {}).items() if k != "answers"})
            if scores:
                score = scores.get(row["worker_id"])
                row["gold"] = f"F1 {score.f1:.2f} over {score.tasks}" if score else "none yet"
                row["blocked"] = blocked.get(row["worker_id"], "")
        record = portal.job_record(name)
        outputs = record.outputs if record else {}
        # A folder output (an export with several files) is shown by its location, not downloaded.
        files = [
            (output, uri if uri.endswith("/") else f"/admin/jobs/{quote(name)}/files/{quote(output)}")
            for output, uri in sorted(outputs.items())
        ]
        return _html(pages.admin_job_page(summary, workers, files, csrf_token(who.token)))

    @app.post("/admin/jobs/{name}/stop")
    async def admin_stop(request: Request, name: str) -> Response:
        who = await run_in_threadpool(admin, request)
        form = await _read_form(request)
        if not csrf_ok(who.token, form.get("csrf")):
            raise Denied(403, "This form has expired; reload the page and try again.", html=True)

        def stop() -> bool:
            with portal.db.write() as session:
                return catalog.stop_job(session, name, portal.clock())

        if not await run_in_threadpool(stop):
            raise Denied(404, "no such job", html=True)
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

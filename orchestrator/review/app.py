"""The review app over HTTP: the page, the JSON API and the images (docs/review.md, "Security").

Who may call: the holder of the admin code printed by `labeljob review` (new each run, kept only as
a SHA-256 hash in memory), as `Authorization: Bearer <code>`, or a browser that opened
`/a/<code>` and got a session cookie (HttpOnly, SameSite=Strict). The worst such a caller can do
is decide items and read the manifest's own images; without the code every route but the static
scripts answers 401. State-changing calls must be JSON (415 otherwise) and, when a browser sends
an Origin, come from this app's own origin (403 otherwise), so another site cannot post a
decision with the reviewer's cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import mimetypes
import secrets
from collections.abc import Callable
from importlib import resources
from typing import Annotated
from urllib.parse import urlparse

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from orchestrator.errors import LabeljobError, NotFound, StorageError, UsageError
from orchestrator.review.session import DecisionIn, Filters, Review
from orchestrator.storage import LocalStore, open_object
from orchestrator.templates import template_file

SESSION_COOKIE = "labeljob_review"
MAX_BODY_BYTES = 2_000_000
PRESIGN_SECONDS = 300
CSP = (
    "default-src 'self'; img-src 'self' data: blob: https:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
STATIC = {
    "review.js": "text/javascript",
    "review.css": "text/css",
    "review.html": "text/html; charset=utf-8",
}


class Refused(Exception):
    """A request the review app refuses, answered as `{"error": "refused", "message": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Gate:
    """The admin code and the session tokens it was exchanged for, all kept as hashes."""

    def __init__(self, code: str) -> None:
        self._code = _digest(code)
        self._sessions: set[bytes] = set()

    def code_ok(self, code: str | None) -> bool:
        return bool(code) and len(code) <= 200 and hmac.compare_digest(_digest(code), self._code)

    def new_session(self) -> str:
        token = secrets.token_urlsafe(32)
        self._sessions.add(_digest(token))
        return token

    def session_ok(self, token: str | None) -> bool:
        return bool(token) and len(token) <= 200 and _digest(token) in self._sessions

    def check(self, request: Request) -> None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.code_ok(value.strip()):
            return
        if self.session_ok(request.cookies.get(SESSION_COOKIE)):
            return
        raise Refused(401, "open the link `labeljob review` printed, or send the code as a bearer token")


def static_file(name: str):
    return resources.files("orchestrator.review") / "static" / name


def create_review_app(review: Review, code: str, reviewer: str, boto3_session=None) -> FastAPI:
    """`labeljob review`'s app over `review`: `code` is the admin code, exchanged at `/a/<code>`
    for a session cookie; `reviewer` goes into the decisions log."""
    gate = Gate(code)
    app = build_review_app(review, reviewer, gate.check, boto3_session)

    @app.get("/a/{token}")
    def login(request: Request, token: str) -> Response:
        if not gate.code_ok(token):
            raise Refused(
                401, "this review link is not valid (each run of `labeljob review` prints a new one)"
            )
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            gate.new_session(),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    return app


def build_review_app(
    review: Review, reviewer: str, authorize: Callable[[Request], None], boto3_session=None
) -> FastAPI:
    """The page, the API and the images over `review`, every route but the static files behind
    `authorize` (which raises Refused); `boto3_session` presigns the URLs of images on S3. The page
    uses relative URLs, so the app may be mounted under a prefix ending in `/`."""
    app = FastAPI(title="labeljob review", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        return JSONResponse({"error": "refused", "message": exc.message}, status_code=exc.status)

    @app.middleware("http")
    async def _headers(request: Request, call_next) -> Response:
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def page(request: Request) -> Response:
        authorize(request)
        return Response(static_file("review.html").read_bytes(), media_type=STATIC["review.html"])

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name == "crowd-bounding-box.js":
            return Response(template_file(name).read_bytes(), media_type="text/javascript")
        if name not in STATIC or name.endswith(".html"):
            raise Refused(404, "no such file")
        return Response(static_file(name).read_bytes(), media_type=STATIC[name])

    @app.get("/api/summary")
    def summary(request: Request) -> dict:
        authorize(request)
        return {
            "manifest": review.manifest_uri,
            "attr": review.attr,
            "labels": list(review.labels),
            "workers": review.worker_ids,
            "counts": review.counts(),
            **review.uris,
        }

    @app.get("/api/items")
    def items(request: Request, filters: Annotated[Filters, Depends()], order: str = "index") -> list[dict]:
        authorize(request)
        return _call(review.list_items, order, filters)

    @app.post("/api/items/{index}")
    async def decide(request: Request, index: int) -> Response:
        authorize(request)
        origin = request.headers.get("origin")
        if origin is not None and urlparse(origin).netloc != request.headers.get("host"):
            raise Refused(403, "decisions are taken only from this app's own pages")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise Refused(415, "send the decision as application/json")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise Refused(413, "the decision is too large")
        try:
            decision = DecisionIn.model_validate(json.loads(body))
        except (ValueError, RecursionError) as exc:
            message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else "the body is not JSON"
            raise Refused(422, message) from None
        return JSONResponse(await run_in_threadpool(_call, review.decide, index, decision, reviewer))

    @app.get("/api/items/{index}/image")
    def image(request: Request, index: int) -> Response:
        authorize(request)
        source_ref = _call(review.item, index).line.source_ref
        try:
            store, key = open_object(source_ref, boto3_session)
            if not isinstance(store, LocalStore):
                return RedirectResponse(store.read_url(key, PRESIGN_SECONDS), status_code=307)
            path = store.path(key)
        except LabeljobError as exc:
            raise Refused(404, exc.message) from None
        if not path.is_file():
            raise Refused(404, "the image file is missing")
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type)

    return app


def _call(function, *args, **kwargs):
    """`function`'s result; its expected errors as HTTP answers: 404 for NotFound, 422 for bad input,
    503 when the decision could not be written (the reviewer may send it again)."""
    try:
        return function(*args, **kwargs)
    except NotFound as exc:
        raise Refused(404, exc.message) from None
    except UsageError as exc:
        raise Refused(422, exc.message) from None
    except StorageError as exc:
        raise Refused(503, f"nothing was stored: {exc.message}") from None


def new_code() -> str:
    return secrets.token_urlsafe(32)

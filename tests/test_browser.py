"""Real-browser tests of the offline `<crowd-bounding-box>` element and of a worker on the portal.

Playwright drives Debian's chromium (/usr/bin/chromium, never a downloaded browser); every server
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
ELEMENT_JS = REPO / "task_templates" / "crowd-bounding-box.js"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
XSS_LABEL = "<img src=x onerror=alert(1)>"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


# ----------------------------------------------------------------------------------- helpers


def scene_png(width: int, height: int) -> bytes:
    """A PNG with two coloured blocks to box: a red 'car' and a blue 'pedestrian'."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (96, 120, 96))
    draw = ImageDraw.Draw(image)
    draw.rectangle([width * 0.15, height * 0.3, width * 0.4, height * 0.55], fill=(200, 40, 40))
    draw.rectangle([width * 0.62, height * 0.25, width * 0.69, height * 0.55], fill=(40, 40, 200))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


class Viewer:
    """Converts between image pixels and screen pixels through the rendered image's box."""

    def __init__(self, page) -> None:
        self.page = page
        self.element = page.locator("crowd-bounding-box")
        self.image = page.locator("crowd-bounding-box .cbb-stage img")

    def wait_loaded(self) -> None:
        self.page.wait_for_function(
            "() => document.querySelector('crowd-bounding-box')?.loaded === true", timeout=10_000
        )

    def value(self) -> dict:
        return self.element.evaluate("(e) => e.value")

    def _geometry(self) -> tuple[dict, float, float]:
        box = self.image.bounding_box()
        natural = self.image.evaluate("(i) => [i.naturalWidth, i.naturalHeight]")
        return box, box["width"] / natural[0], box["height"] / natural[1]

    def to_screen(self, x: float, y: float) -> tuple[float, float]:
        box, sx, sy = self._geometry()
        return box["x"] + x * sx, box["y"] + y * sy

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        box, sx, sy = self._geometry()
        return (x - box["x"]) / sx, (y - box["y"]) / sy

    def drag(self, start: tuple[float, float], end: tuple[float, float]) -> tuple[tuple, tuple]:
        """Drag the mouse between two image points; returns them as the image pixels the screen hit."""
        a, b = self.to_screen(*start), self.to_screen(*end)
        # Whole screen pixels, as a person's mouse produces; the expected box follows from them.
        a, b = (round(a[0]), round(a[1])), (round(b[0]), round(b[1]))
        expected = (self.to_image(*a), self.to_image(*b))
        mouse = self.page.mouse
        mouse.move(*a)
        mouse.down()
        mouse.move((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, steps=4)
        mouse.move(*b, steps=4)
        mouse.up()
        return expected


def rect(corners: tuple[tuple, tuple]) -> dict:
    (x0, y0), (x1, y1) = corners
    return {"left": min(x0, x1), "top": min(y0, y1), "width": abs(x1 - x0), "height": abs(y1 - y0)}


def assert_box(actual: dict, label: str, expected: dict, tolerance: float = 2) -> None:
    assert actual["label"] == label
    assert all(isinstance(actual[k], int) for k in ("left", "top", "width", "height")), actual
    for key, value in expected.items():
        assert abs(actual[key] - value) <= tolerance, (key, actual, expected)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page; any script error or dialog (an XSS alert would be one) fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    yield page
    context.close()
    assert not problems


@pytest.fixture
def site():
    """A loopback HTTP server for static pages: GET serves `routes`, POST bodies land in `posts`."""
    routes: dict[str, tuple[bytes, str]] = {
        "/static/crowd-bounding-box.js": (ELEMENT_JS.read_bytes(), "text/javascript")
    }
    posts: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            found = routes.get(self.path.split("?")[0])
            self._send(*((200, *found) if found else (404, b"not found", "text/plain")))

        def do_POST(self) -> None:  # noqa: N802
            posts.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self._send(200, b"stored", "text/plain")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}", routes=routes, posts=posts)
    server.shutdown()
    server.server_close()


def task_page() -> bytes:
    """The portal's task page from the real template, plus a hidden CSRF field inside the form."""
    from orchestrator.templates import TaskText, instructions_html, render_task

    short, full = instructions_html("Box every **car** and pedestrian.\n\n- Tight boxes\n- Skip reflections")
    text = TaskText("Box each <b>car</b>", ("car", "pedestrian", XSS_LABEL), short, full)
    html = render_task(text, "portal", image_url="/scene.png", form_action="/answer")
    return html.replace(
        'method="post">', 'method="post"><input type="hidden" name="csrf" value="c5rf">', 1
    ).encode()


def posted_answers(site) -> tuple[dict, list]:
    """The one form post: its fields, and taskAnswers decoded."""
    assert len(site.posts) == 1, site.posts
    path, body = site.posts[0]
    assert path == "/answer"
    fields = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    return fields, json.loads(fields["taskAnswers"])


# ----------------------------------------------------------------------- the element alone


def test_element_draw_resize_move_relabel_delete_and_submit(page, site):
    site.routes["/"] = (task_page(), "text/html")
    site.routes["/scene.png"] = (scene_png(640, 480), "image/png")
    page.goto(site.url + "/")
    view = Viewer(page)
    view.wait_loaded()

    # Labels and header are text: the markup shows literally and creates no element.
    assert page.locator(".cbb-header").inner_text() == "Box each <b>car</b>"
    assert page.get_by_role("button", name=XSS_LABEL).inner_text().endswith(XSS_LABEL)
    assert page.locator("crowd-bounding-box img").count() == 1

    page.keyboard.press("1")
    car = rect(view.drag((100, 150), (260, 260)))
    page.get_by_role("button", name="pedestrian").click()
    walker = rect(view.drag((440, 260), (400, 120)))  # drawn upwards: still a positive box
    view.drag((300, 300), (301, 301))  # an accidental click-drag is not a box
    answer = view.value()
    assert answer["inputImageProperties"] == {"height": 480, "width": 640}
    assert [b["label"] for b in answer["boundingBoxes"]] == ["car", "pedestrian"]
    assert_box(answer["boundingBoxes"][0], "car", car)
    assert_box(answer["boundingBoxes"][1], "pedestrian", walker)

    # Zoom in on the car with the wheel: the view changes, the answer does not.
    width_before = view.image.bounding_box()["width"]
    page.mouse.move(*view.to_screen(180, 200))
    page.mouse.wheel(0, -400)
    page.wait_for_function(
        "(w) => document.querySelector('.cbb-stage img').getBoundingClientRect().width > w", arg=width_before
    )
    assert view.value() == answer

    # Select the car, drag its bottom-right handle, then move it by its middle.
    car_box = answer["boundingBoxes"][0]
    right, bottom = car_box["left"] + car_box["width"], car_box["top"] + car_box["height"]
    page.mouse.click(*view.to_screen(car_box["left"] + 20, car_box["top"] + 20))
    (_, (new_right, new_bottom)) = view.drag((right, bottom), (right + 20, bottom + 10))
    resized = view.value()["boundingBoxes"][0]
    assert_box(
        resized,
        "car",
        {
            "left": car_box["left"],
            "top": car_box["top"],
            "width": new_right - car_box["left"],
            "height": new_bottom - car_box["top"],
        },
    )
    (start, end) = view.drag((180, 200), (170, 190))
    moved = view.value()["boundingBoxes"][0]
    assert_box(
        moved,
        "car",
        {
            "left": resized["left"] + end[0] - start[0],
            "top": resized["top"] + end[1] - start[1],
            "width": resized["width"],
            "height": resized["height"],
        },
        tolerance=1,
    )

    # Relabel the car in the box list, delete the pedestrian with the Delete key.
    page.get_by_label("Label of box 1").select_option("pedestrian")
    page.get_by_role("button", name="Select box 2").click()
    page.keyboard.press("Delete")
    final = view.value()
    assert [b["label"] for b in final["boundingBoxes"]] == ["pedestrian"]
    assert final["boundingBoxes"][0]["width"] == moved["width"]

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-element.png"))
    with page.expect_navigation():
        page.get_by_role("button", name="Submit").click()
    fields, task_answers = posted_answers(site)
    assert fields["csrf"] == "c5rf"
    assert task_answers == [{"annotatedResult": final}]


def test_element_nothing_to_box_is_explicit_and_confirmed(page, site):
    site.routes["/"] = (task_page(), "text/html")
    site.routes["/scene.png"] = (scene_png(320, 240), "image/png")
    page.goto(site.url + "/")
    view = Viewer(page)
    view.wait_loaded()

    # An empty answer is not sent by accident.
    page.get_by_role("button", name="Submit").click()
    assert "Nothing to box" in page.get_by_role("alert").inner_text()
    view.drag((10, 10), (100, 100))
    page.get_by_role("button", name="Nothing to box", exact=True).click()
    page.get_by_role("button", name="Cancel").click()
    assert len(view.value()["boundingBoxes"]) == 1
    assert site.posts == []

    page.get_by_role("button", name="Nothing to box", exact=True).click()
    with page.expect_navigation():
        page.get_by_role("button", name="Yes, nothing to box").click()
    _, task_answers = posted_answers(site)
    assert task_answers == [
        {"annotatedResult": {"boundingBoxes": [], "inputImageProperties": {"height": 240, "width": 320}}}
    ]


def test_element_reads_aws_style_attributes_and_reports_adjustment(page, site):
    # AWS's own examples write labels and initial-value as JavaScript literals, not strict JSON;
    # here <crowd-form> sits in a plain form, whose action and fields it keeps.
    site.routes["/"] = (
        b"""<!DOCTYPE html><meta charset="utf-8"><script src="/static/crowd-bounding-box.js"></script>
<form action="/answer" method="post"><input type="hidden" name="assignmentId" value="A1">
<crowd-form><crowd-bounding-box name="boundingBox" src="/scene.png" labels="['Cat', 'Dog']"
  initial-value="[{label: 'Dog', left: 10.4, top: 20, width: 30, height: 40,},
                  {label: 'Cat', left: 600, top: 400, width: 100, height: 100},]">
<short-instructions>Box the pets.</short-instructions></crowd-bounding-box></crowd-form></form>""",
        "text/html",
    )
    site.routes["/scene.png"] = (scene_png(640, 480), "image/png")
    page.goto(site.url + "/")
    view = Viewer(page)
    view.wait_loaded()
    assert view.value() == {
        "boundingBoxes": [
            {"height": 40, "label": "Dog", "left": 10, "top": 20, "width": 30},
            {"height": 80, "label": "Cat", "left": 600, "top": 400, "width": 40},  # clipped to the image
        ],
        "inputImageProperties": {"height": 480, "width": 640},
        "initialValueModified": False,
    }
    page.get_by_role("button", name="Select box 2").click()
    page.keyboard.press("Shift+Digit2")  # relabel the selected box
    with page.expect_navigation():
        page.get_by_role("button", name="Submit").click()
    fields, task_answers = posted_answers(site)
    assert fields["assignmentId"] == "A1"
    answer = task_answers[0]["boundingBox"]
    assert answer["initialValueModified"] is True
    assert [b["label"] for b in answer["boundingBoxes"]] == ["Dog", "Dog"]


# ------------------------------------------------------------------ a worker on the portal


@pytest.fixture
def portal_job(tmp_path):
    """A portal job over two generated images, a running portal on loopback and a worker's invite link."""
    uvicorn = pytest.importorskip("uvicorn")
    from typer.testing import CliRunner

    from orchestrator.backends.portal.app import create_app
    from orchestrator.backends.portal.backend import PortalBackend
    from orchestrator.cli.app import app as cli
    from orchestrator.jobs import JobStore, launch_job, read_items
    from orchestrator.spec import JobSpec
    from orchestrator.storage import LocalStore

    images = tmp_path / "bucket" / "images"
    images.mkdir(parents=True)
    refs = []
    for name, size in (("street_1.png", (640, 480)), ("street_2.png", (480, 360))):
        (images / name).write_bytes(scene_png(*size))
        refs.append(json.dumps({"source-ref": (images / name).as_uri()}))
    manifest = tmp_path / "bucket" / "input.manifest"
    manifest.write_text("\n".join(refs) + "\n")
    spec = JobSpec(
        name="browser-test",
        labels=["car", "pedestrian", XSS_LABEL],
        input_manifest=str(manifest),
        output=str(tmp_path / "bucket" / "labeling"),
        # 62 s: the countdown test sees the last-minute warning within seconds.
        task={"title": "Box each <b>car</b> and pedestrian", "workers_per_object": 1, "time_limit": 62},
    )
    workspace = LocalStore(tmp_path / "workspace")
    db_url = f"sqlite:///{tmp_path / 'portal.db'}"
    backend = PortalBackend(workspace, db_url=db_url)
    launch_job(spec, backend, JobStore(workspace), read_items(spec))

    server = uvicorn.Server(
        uvicorn.Config(create_app(db_url, workspace), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the portal did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    result = CliRunner().invoke(
        cli,
        ["--format", "json", "portal", "invite", "Ada", "--job", spec.name, "--db", db_url, "--url", base],
    )
    assert result.exit_code == 0, result.output
    yield SimpleNamespace(link=json.loads(result.stdout)["link"], db=backend.database())
    server.should_exit = True
    thread.join(10)
    backend.database().dispose()


def test_worker_draws_two_boxes_through_an_invite_link(page, portal_job):
    from sqlalchemy import select

    from orchestrator.backends.portal.db import Answer, Task

    page.goto(portal_job.link)
    with page.expect_navigation():  # the invite is one-time: its button signs this browser in
        page.get_by_role("button", name="Start labeling").click()
    view = Viewer(page)
    view.wait_loaded()
    natural = view.value()["inputImageProperties"]
    w, h = natural["width"], natural["height"]
    assert page.locator("crowd-bounding-box img").count() == 1  # the HTML label stayed text

    page.get_by_role("button", name="car", exact=True).click()
    car = rect(view.drag((0.15 * w, 0.3 * h), (0.4 * w, 0.55 * h)))
    page.keyboard.press("2")
    walker = rect(view.drag((0.62 * w, 0.25 * h), (0.69 * w, 0.55 * h)))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-worker.png"))
    with page.expect_navigation():
        page.get_by_role("button", name="Submit").click()
    # The portal stores the answer and hands the worker the other image.
    view.wait_loaded()
    assert page.url.endswith("/task?stored=1")
    assert page.locator("p.notice").inner_text() == "Answer stored. Images done in this session: 1."
    assert view.value()["inputImageProperties"] != natural

    with portal_job.db.read() as session:
        stored = session.execute(
            select(Answer.content, Task.image_key).join(Task, Task.id == Answer.task_id)
        ).all()
    assert len(stored) == 1
    content, image_key = stored[0]
    answer = json.loads(content)["annotatedResult"]
    assert answer["inputImageProperties"] == {"width": w, "height": h}
    assert image_key.endswith(f"street_{1 if w == 640 else 2}.png")
    boxes = answer["boundingBoxes"]
    assert [b["label"] for b in boxes] == ["car", "pedestrian"]
    assert_box(boxes[0], "car", car)
    assert_box(boxes[1], "pedestrian", walker)


# --------------------------------------------------------------------------------- the review app


@pytest.fixture
def review_app(tmp_path):
    """`labeljob review` over two generated images (one named with HTML) and two workers' answers."""
    from orchestrator.backends.portal.server import ServerThread
    from orchestrator.consolidation import AnswerReport, parse_consolidation_payload
    from orchestrator.review import Review, create_review_app
    from orchestrator.storage import open_object

    refs = []
    for name in (f"{XSS_LABEL}.png", "street_2.png"):
        (tmp_path / name).write_bytes(scene_png(640, 480))
        refs.append((tmp_path / name).as_uri())
    metadata = {
        "objects": [{"confidence": 0.4}],
        "class-map": {"1": XSS_LABEL},
        "type": "groundtruth/object-detection",
        "human-annotated": "yes",
        "creation-date": "2026-11-20T10:15:02.441871",
        "job-name": "labeling-job/street",
    }
    car = {"class_id": 1, "left": 96, "top": 144, "width": 160, "height": 120}
    size = [{"width": 640, "height": 480, "depth": 3}]
    manifest = tmp_path / "output.manifest"
    manifest.write_text(
        "".join(
            json.dumps(
                {
                    "source-ref": ref,
                    "bbox": {"image_size": size, "annotations": [car]},
                    "bbox-metadata": metadata,
                }
            )
            + "\n"
            for ref in refs
        )
    )

    def answer(worker: str, left: int) -> dict:
        boxes = [{"label": XSS_LABEL, "left": left, "top": 150, "width": 150, "height": 110}]
        content = {
            "annotatedResult": {"boundingBoxes": boxes, "inputImageProperties": {"width": 640, "height": 480}}
        }
        return {"workerId": worker, "annotationData": {"content": json.dumps(content)}}

    payload = [
        {
            "datasetObjectId": "0",
            "dataObject": {"s3Uri": refs[0]},
            "annotations": [answer(XSS_LABEL, 90), answer("w2", 300)],
        }
    ]
    out = tmp_path / "reviewed" / "reviewed.manifest"
    review = Review(open_object(manifest), open_object(out))
    review.add_answers(parse_consolidation_payload(json.dumps(payload), [XSS_LABEL], AnswerReport()))
    with ServerThread(create_review_app(review, "code-for-the-browser", "ada")) as server:
        yield SimpleNamespace(url=server.url, out=out, review=review)


def test_review_page_fixes_a_box_by_dragging_and_toggles_a_worker(page, review_app):
    page.goto(f"{review_app.url}/a/code-for-the-browser")
    view = Viewer(page)
    view.wait_loaded()
    # The file name, the label and the worker id are all HTML, and all stay text.
    assert page.locator("#title").text_content() == f"{XSS_LABEL}.png"
    assert page.locator("img").count() == 1
    worker = page.get_by_role("checkbox", name=XSS_LABEL)
    assert page.locator(".cbb-overlay").count() == 0
    worker.check()
    assert page.locator(".cbb-overlay").count() == 1
    assert page.locator(".cbb-overlay").get_attribute("data-overlay") == XSS_LABEL
    assert page.locator(".cbb-overlay .cbb-tag").text_content() == f"{XSS_LABEL}: {XSS_LABEL}"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-review.png"))
    worker.uncheck()
    assert page.locator(".cbb-overlay").count() == 0
    worker.check()  # the worker's boxes stay on while the consensus box is dragged underneath

    start, end = view.drag((176, 204), (216, 224))
    page.locator("body").click(position={"x": 5, "y": 5})  # focus leaves the checkbox; keys go to the page
    page.keyboard.press("f")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('fixed')")
    fixed = json.loads(review_app.out.read_text().splitlines()[0])
    box = fixed["bbox"]["annotations"][0]
    dx, dy = end[0] - start[0], end[1] - start[1]
    assert abs(box["left"] - (96 + dx)) <= 2 and abs(box["top"] - (144 + dy)) <= 2
    assert (box["width"], box["height"]) == (160, 120)
    assert fixed["bbox-metadata"]["adjustment-status"] == "adjusted"

    # The page moved on to the second image: reject it, undo, and go back with the keyboard.
    assert page.locator("#title").text_content() == "street_2.png"
    page.keyboard.press("r")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('rejected')")
    assert review_app.review.counts() == {"undecided": 0, "accept": 0, "fix": 1, "reject": 1}
    page.keyboard.press("u")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('undone')")
    assert review_app.review.counts()["reject"] == 0
    page.keyboard.press("k")
    assert page.locator("#title").text_content() == f"{XSS_LABEL}.png"
    assert "fix by ada" in page.locator("#decision").text_content()
def test_the_task_page_counts_down_warns_and_can_report_a_broken_image(page, portal_job):
    from sqlalchemy import select

    from orchestrator.backends.portal.db import Report

    page.goto(portal_job.link)
    with page.expect_navigation():
        page.get_by_role("button", name="Start labeling").click()
    view = Viewer(page)
    view.wait_loaded()
    first = view.value()["inputImageProperties"]
    note = page.locator(".lease")
    page.wait_for_selector(".lease.warning", timeout=15_000)  # under a minute left of 62 s
    assert "left on this image: submit now" in note.text_content()
    with page.expect_navigation():
        page.get_by_role("button", name="The image does not load").click()
    view.wait_loaded()
    assert view.value()["inputImageProperties"] != first  # the other image
    assert "Time left on this image: 1:0" in page.locator(".lease").text_content()  # a fresh lease
    with portal_job.db.read() as session:
        assert session.scalars(select(Report.reason)).all() == ["not_loading"]


def test_an_admin_blocks_a_worker_from_the_job_page(page, portal_job):
    from sqlalchemy import select

    from orchestrator.backends.portal.db import Block, Worker
    from orchestrator.backends.portal.leasing import submit_answer, take_task
    from orchestrator.backends.portal.tokens import issue_token

    db = portal_job.db
    with db.write() as session:
        worker = Worker(public_id="bo-1", name="Bo", source="invite", created_at=0)
        session.add(worker)
        session.flush()
        admin = issue_token(session, "admin")
    leased = take_task(db, worker.id, time.time())
    submit_answer(db, worker.id, leased.lease_id, '{"annotatedResult":{"boundingBoxes":[]}}', time.time())
    page.goto(portal_job.link.split("/w/")[0] + f"/a/{admin}")
    page.get_by_role("link", name="browser-test").click()
    row = page.locator("tr", has_text="bo-1")
    with page.expect_navigation():
        row.get_by_role("button", name="Block", exact=True).click()
    assert page.locator("tr", has_text="bo-1").get_by_role("button", name="Unblock", exact=True).count() == 1
    assert take_task(db, worker.id, time.time()) is None  # the other image is not offered to Bo
    with db.read() as session:
        assert session.scalars(select(Block.worker_id)).all() == [worker.id]


def test_element_undo_and_redo_every_change_of_the_boxes(page, site):
    site.routes["/"] = (task_page(), "text/html")
    site.routes["/scene.png"] = (scene_png(640, 480), "image/png")
    page.goto(site.url + "/")
    view = Viewer(page)
    view.wait_loaded()

    def boxes() -> list[tuple]:
        return [(b["label"], b["left"], b["top"]) for b in view.value()["boundingBoxes"]]

    page.keyboard.press("1")
    view.drag((100, 150), (260, 260))
    view.drag((400, 120), (440, 260))
    drawn = boxes()
    view.drag((180, 200), (150, 180))  # move the first box
    moved = boxes()
    assert moved != drawn
    page.get_by_label("Label of box 2").select_option("pedestrian")
    relabelled = boxes()
    page.get_by_role("button", name="Select box 1").click()
    page.keyboard.press("Delete")
    assert len(boxes()) == 1

    history = [relabelled, moved, drawn, drawn[:1], []]
    for state in history:  # undo the delete, the relabel, the move, and both boxes drawn
        page.keyboard.press("Control+z")
        assert boxes() == state
    page.keyboard.press("Control+z")
    assert boxes() == []  # nothing left to undo
    for state in reversed(history[:-1]):
        page.keyboard.press("Control+Shift+z")
        assert boxes() == state
    page.keyboard.press("Control+Shift+z")
    assert len(boxes()) == 1  # redone up to the delete
    page.keyboard.press("Control+z")
    view.drag((500, 300), (560, 380))  # a new change after an undo ends redo
    page.keyboard.press("Control+Shift+z")
    assert len(boxes()) == 3

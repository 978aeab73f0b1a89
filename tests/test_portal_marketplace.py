"""Marketplace entry to the portal, tried as an attacker first: forged links, stolen worker ids,
floods of new ids, sessions used on other jobs; then the honest path and `labeljob portal link`."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from orchestrator.backends.portal import catalog, marketplace
from orchestrator.backends.portal.app import create_app
from orchestrator.backends.portal.db import (
    Answer,
    Lease,
    MarketplaceLink,
    Provisional,
    Task,
    Token,
    Worker,
    open_database,
)
from orchestrator.backends.portal.tokens import SESSION_SECONDS, issue_token
from orchestrator.cli.app import app as cli
from orchestrator.jobs import ManifestItem
from orchestrator.spec import parse_spec

SAMPLE_BUCKET = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "bucket"
EMPTY = json.dumps([{"annotatedResult": {"boundingBoxes": []}}])


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _load(db, tmp_path: Path, name: str, objects: int, wanted: int = 2):
    spec = parse_spec(
        {
            "name": name,
            "labels": ["car"],
            "input_manifest": str(tmp_path / "in.manifest"),
            "output": str(tmp_path / "out"),
            "task": {"workers_per_object": wanted},
        }
    )
    images = sorted((SAMPLE_BUCKET / "images").glob("img_*.jpg"))[:objects]
    with db.write() as session:
        job, _ = catalog.load_job(
            session, spec, [ManifestItem(str(i), p.as_uri(), {}) for i, p in enumerate(images)], time.time()
        )
    return job


class Market:
    """Two portal jobs, "street" (Prolific link) and "other" (generic link), and a settable clock."""

    def __init__(self, tmp_path: Path, db_url: str) -> None:
        self.clock = Clock()
        self.db_url = db_url
        self.db = open_database(self.db_url)
        self.jobs = {name: _load(self.db, tmp_path, name, n) for name, n in (("street", 3), ("other", 2))}
        self.app = create_app(self.db_url, None, clock=self.clock)
        self.secrets = {}
        for name, kind in (("street", "prolific"), ("other", "generic")):
            self.turn_on(name, kind)

    def turn_on(self, name: str, kind: str, **options) -> None:
        with self.db.write() as session:
            link = marketplace.turn_on(session, self.jobs[name], kind, self.clock(), **options)
            self.secrets[name] = link.secret

    def browser(self) -> TestClient:
        return TestClient(self.app, follow_redirects=False)

    def stored(self) -> tuple[int, int, int, int]:
        """Workers, tokens, leases and answers in the database."""
        with self.db.read() as session:
            return tuple(
                session.scalar(select(func.count()).select_from(t)) for t in (Worker, Token, Lease, Answer)
            )


@pytest.fixture
def market(tmp_path, portal_db_url) -> Market:
    """On SQLite, and on a PostgreSQL database of its own (tests/postgres.py)."""
    return Market(tmp_path, portal_db_url)


def prolific(job: str, secret: str | None, pid: str) -> str:
    k = f"k={secret}&" if secret is not None else ""
    return f"/go/{job}?{k}PROLIFIC_PID={pid}&STUDY_ID=S1&SESSION_ID=X{pid}"


def form_of(page: str) -> tuple[str, dict[str, str]]:
    action = re.search(r'<crowd-form action="([^"]+)"', page).group(1)
    return action, dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))


# ------------------------------------------------------------------------------------- attacks


def test_without_the_jobs_secret_there_is_no_task_and_nothing_is_stored(market):
    browser = market.browser()
    before = market.stored()
    forged = [
        prolific("street", None, "P1"),  # no secret
        prolific("street", "guess", "P1"),  # a guessed one
        prolific("street", market.secrets["other"], "P1"),  # another job's secret
        prolific("nope", market.secrets["street"], "P1"),  # a job that does not exist
        f"/go/other?k={market.secrets['street']}&worker=P1",
        f"/external?job=street&k={market.secrets['street']}&workerId=P1&assignmentId=A&hitId=H"
        "&turkSubmitTo=https://www.mturk.com",  # a generic link's secret used as an MTurk one
        "/go?job=street&worker=P1&return_url=https://evil.example/",  # the old unauthenticated entry
        "/external?job=street&workerId=P1&assignmentId=A&hitId=H&turkSubmitTo=https://www.mturk.com",
        "/external?job=street&assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE",  # the preview shows an image
    ]
    for path in forged:
        response = browser.get(path)
        assert response.status_code in (403, 404), path
        assert "<crowd-form" not in response.text and "/img/" not in response.text, path
    assert market.stored() == before


def test_marketplace_entry_is_off_until_the_lead_turns_it_on_and_off_again(market):
    browser = market.browser()
    assert browser.get(prolific("street", market.secrets["street"], "P1")).status_code == 200
    with market.db.write() as session:
        assert marketplace.turn_off(session, market.jobs["street"], market.clock())
    assert browser.get(prolific("street", market.secrets["street"], "P2")).status_code == 403
    # The session it had opened stops working too.
    session_token = browser.cookies.get("labeljob_session")
    assert (
        browser.post("/api/tasks/next", headers={"Authorization": f"Bearer {session_token}"}).status_code
        == 401
    )


def test_rotating_the_secret_ends_the_old_url_and_its_sessions(market):
    old = market.secrets["street"]
    page = market.browser().get(prolific("street", old, "P1")).text
    _, fields = form_of(page)
    market.turn_on("street", "prolific", rotate=True)
    assert market.secrets["street"] != old
    assert market.browser().get(prolific("street", old, "P2")).status_code == 403
    bearer = {"Authorization": f"Bearer {fields['session']}"}
    assert market.browser().post("/api/tasks/next", headers=bearer).status_code == 401
    assert market.browser().get(prolific("street", market.secrets["street"], "P2")).status_code == 200


def test_a_stolen_worker_id_cannot_take_over_a_live_lease_from_another_browser(market):
    victim, thief = market.browser(), market.browser()
    url = prolific("street", market.secrets["street"], "VICTIM")
    action, fields = form_of(victim.get(url).text)
    before = market.stored()
    taken = thief.get(url)
    assert taken.status_code == 409 and "<crowd-form" not in taken.text
    assert market.stored() == before  # no session was issued to the thief
    # A second session of the same worker id (say, opened before the lease) cannot submit it either.
    with market.db.write() as session:
        worker = session.scalar(select(Worker.id).where(Worker.public_id == "prolific:VICTIM"))
        other = issue_token(session, "session", worker, market.clock(), job_id=market.jobs["street"].id)
    lease = int(action.rsplit("/", 1)[1])
    bearer = {"Authorization": f"Bearer {other}"}
    assert thief.post("/api/tasks/next", headers=bearer).status_code == 409
    thief.cookies.set("labeljob_session", other)  # its own session in a cookie: still another browser's lease
    page = thief.get(url)
    assert (
        page.status_code == 409 and "another browser window" in page.text and "<crowd-form" not in page.text
    )
    refused = thief.post(f"/api/leases/{lease}/answer", content=EMPTY, headers=bearer)
    assert refused.status_code == 409 and refused.json()["error"] == "unknown_lease"
    # The victim's own browser (its cookie) finds the same lease again and submits it.
    again_action, _ = form_of(victim.get(url).text)
    assert again_action == action
    assert victim.post(action, data={**fields, "taskAnswers": EMPTY}).status_code == 200
    with market.db.read() as session:
        assert session.scalar(select(func.count(Answer.id))) == 1


def test_a_session_belongs_to_the_one_job_whose_link_opened_it(market):
    browser = market.browser()
    _, fields = form_of(browser.get(prolific("street", market.secrets["street"], "P1")).text)
    bearer = {"Authorization": f"Bearer {fields['session']}"}
    assert browser.post("/api/tasks/next", params={"job": "other"}, headers=bearer).status_code == 403
    for _ in range(3):  # without a job it only ever gets its own job's tasks
        task = browser.post("/api/tasks/next", headers=bearer)
        if task.status_code == 204:
            break
        assert task.json()["job"] == "street"
        browser.post(task.json()["submit_url"], content=EMPTY, headers=bearer)
    with market.db.read() as session:
        jobs = session.scalars(select(Lease.task_id)).all()
        assert len(jobs) == 3 and all(t <= 3 for t in jobs)  # street's tasks are the first three


def test_one_live_lease_per_worker_id_and_a_cap_on_new_worker_ids_per_minute(market):
    market.turn_on("street", "prolific", new_workers_per_minute=3)
    secret = market.secrets["street"]
    browser = market.browser()
    first = form_of(browser.get(prolific("street", secret, "P0")).text)[0]
    assert form_of(browser.get(prolific("street", secret, "P0")).text)[0] == first  # the same lease
    for pid in ("P1", "P2"):
        assert market.browser().get(prolific("street", secret, pid)).status_code == 200
    before = market.stored()
    flooded = market.browser().get(prolific("street", secret, "P3"))
    assert flooded.status_code == 429 and market.stored() == before
    assert market.browser().get(prolific("street", secret, "P1")).status_code in (200, 409)  # not new
    market.clock.now += 61
    assert market.browser().get(prolific("street", secret, "P3")).status_code == 200
    # One worker id visiting again and again without its cookie opens a bounded number of sessions.
    market.clock.now += 61
    with market.db.write() as session:  # no task left: each visit only opens a session
        session.execute(update(Lease).values(expires_at=market.clock.now))
        session.execute(update(Task).values(answered=Task.wanted))
    before = market.stored()
    visits = [market.browser().get(prolific("street", secret, "P3")).status_code for _ in range(12)]
    assert visits.count(429) >= 2 and market.stored()[1] - before[1] <= 10


def test_sessions_expire(market):
    browser = market.browser()
    _, fields = form_of(browser.get(prolific("street", market.secrets["street"], "P1")).text)
    bearer = {"Authorization": f"Bearer {fields['session']}"}
    assert browser.post("/api/tasks/next", headers=bearer).status_code == 200
    market.clock.now += SESSION_SECONDS + 1
    assert browser.post("/api/tasks/next", headers=bearer).status_code == 401


def test_the_completion_step_goes_only_where_the_lead_said(market):
    browser = market.browser()
    url = prolific("street", market.secrets["street"], "P1") + "&return_url=https://evil.example/"
    action, fields = form_of(browser.get(url).text)
    done = browser.post(action, data={**fields, "return_url": "https://evil.example/", "taskAnswers": EMPTY})
    assert done.status_code == 200 and "evil.example" not in done.text
    finish = re.search(r'<a href="([^"]+)">Finish', done.text).group(1).replace("&amp;", "&")
    assert urlparse(finish).hostname == "app.prolific.com"
    with market.db.read() as session:
        code = session.get(MarketplaceLink, market.jobs["street"].id).completion_code
    assert parse_qs(urlparse(finish).query) == {"cc": [code]} and code in done.text
    assert "Images done in this session: 1" in done.text
    # "Next image" keeps the same session and leases the next task.
    next_fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', done.text))
    page = browser.post("/go/next", data=next_fields)
    assert page.status_code == 200 and form_of(page.text)[0] != action
    for bad in ("https://evil.example/x", "http://app.prolific.com/x", "javascript:alert(1)"):
        with pytest.raises(Exception, match="completion URL"):
            market.turn_on("street", "prolific", completion_url=bad)


def test_marketplace_answers_are_provisional_until_the_lead_approves_them(market, tmp_path):
    for pid in ("P1", "P2"):  # both answer the first image, which wants two answers
        browser = market.browser()
        action, fields = form_of(browser.get(prolific("street", market.secrets["street"], pid)).text)
        assert browser.post(action, data={**fields, "taskAnswers": EMPTY}).status_code == 200

    def complete() -> tuple[int, int]:
        with market.db.read() as session:
            shown = catalog.progress(session, market.jobs["street"], market.clock())
            assert shown["awaiting_approval"] == session.scalar(select(func.count()).select_from(Provisional))
            return shown["complete"], shown["awaiting_approval"]

    assert complete() == (0, 2)  # full, but not final: the answers wait for the lead
    approve = ["--workspace", str(tmp_path), "--format", "json", "portal", "approve", "street"]
    approved = CliRunner().invoke(cli, [*approve, "--worker", "prolific:P1", "--db", market.db_url])
    assert approved.exit_code == 0, approved.output
    assert json.loads(approved.stdout)["approved"] == 1 and complete() == (0, 1)
    approved = CliRunner().invoke(cli, [*approve, "--db", market.db_url])
    assert json.loads(approved.stdout)["approved"] == 1 and complete() == (1, 0)


def test_cli_link_prints_the_url_with_the_marketplace_placeholders(tmp_path):
    workspace = tmp_path / "ws"
    db = open_database(f"sqlite:///{workspace / 'portal.db'}")
    _load(db, tmp_path, "street", 2)
    runner = CliRunner()

    def link(*args: str):
        return runner.invoke(
            cli, ["--workspace", str(workspace), "--format", "json", "portal", "link", *args]
        )

    assert link("street").exit_code == 2  # neither --marketplace nor --off
    assert link("nope", "--marketplace", "generic").exit_code == 1
    first = json.loads(link("street", "--marketplace", "prolific", "--url", "https://p.example").stdout)
    url = first["url"]
    assert url.startswith("https://p.example/go/street?k=")
    for placeholder in (
        "PROLIFIC_PID={{%PROLIFIC_PID%}}",
        "STUDY_ID={{%STUDY_ID%}}",
        "SESSION_ID={{%SESSION_ID%}}",
    ):
        assert placeholder in url
    assert first["completion_url"].endswith(f"?cc={first['completion_code']}")
    assert (
        json.loads(link("street", "--marketplace", "prolific").stdout)["url"].split("?")[1]
        == url.split("?")[1]
    )
    rotated = json.loads(link("street", "--marketplace", "prolific", "--rotate").stdout)["url"]
    assert rotated.split("&")[0] != url.split("&")[0]
    generic = json.loads(link("street", "--marketplace", "generic").stdout)["url"]
    assert generic.endswith("&worker={WORKER_ID}")
    mturk = json.loads(link("street", "--marketplace", "mturk").stdout)["url"]
    assert "/external?job=street&k=" in mturk
    evil = link("street", "--marketplace", "prolific", "--completion-url", "https://evil.example/")
    assert evil.exit_code == 2 and "app.prolific.com" in evil.output
    assert json.loads(link("street", "--off").stdout)["was_on"] is True
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(MarketplaceLink)) == 0


# ---------------------------------------------------------------------------- end to end (Prolific)

LABELS = ["car", "pedestrian", "sign"]
CROWD = 20


def _answer(worker: int, truth) -> str:
    """Worker `worker`'s answer for an image: its true boxes, shifted by a worker-specific pixel."""
    shift = worker % 3 - 1
    boxes = [
        {"label": b.label, "left": b.left + shift, "top": b.top - shift, "width": b.width, "height": b.height}
        for b in truth.boxes
    ]
    size = {"width": truth.width, "height": truth.height}
    return json.dumps([{"annotatedResult": {"boundingBoxes": boxes, "inputImageProperties": size}}])


def _prolific_run(tmp_path: Path, forged: bool) -> tuple[list[dict], dict]:
    """A 9-image job, 3 answers each, answered through its Prolific link by CROWD workers taking
    turns; with `forged`, three forged entries are tried along the way. The output manifest (dates
    left out) and what the forged entries got."""
    from orchestrator.backends.portal.backend import PortalBackend
    from orchestrator.backends.portal.simulate import load_truth, truth_for
    from orchestrator.jobs import JobStore, finish_job, launch_job, poll_job
    from orchestrator.outputs import OUTPUT_MANIFEST_KEY
    from orchestrator.storage import LocalStore

    images = SAMPLE_BUCKET / "images"
    refs = [p.as_uri() for p in sorted(images.glob("img_0*.jpg"))[:10]]
    tmp_path.mkdir()
    (tmp_path / "in.manifest").write_text("".join(json.dumps({"source-ref": ref}) + "\n" for ref in refs))
    spec = parse_spec(
        {
            "name": "prolific-job",
            "labels": LABELS,
            "input_manifest": str(tmp_path / "in.manifest"),
            "output": str(tmp_path / "labeling"),
            "task": {"workers_per_object": 3},
            "portal": {"image_folder": str(images)},
        }
    )
    workspace = LocalStore(tmp_path / "ws")
    jobs, backend = JobStore(workspace), PortalBackend(workspace)
    launch_job(spec, backend, jobs, [ManifestItem(str(i), ref, {}) for i, ref in enumerate(refs)])
    db = backend.database()
    decoy = _load(db, tmp_path, "decoy", 1)
    with db.write() as session:
        job = catalog.job_by_name(session, spec.name)
        secret = marketplace.turn_on(session, job, "prolific", time.time()).secret
        decoy_secret = marketplace.turn_on(session, decoy, "generic", time.time()).secret
    truth = load_truth(SAMPLE_BUCKET / "truth.jsonl")
    app = create_app(db.url, workspace)

    def stored() -> tuple[int, ...]:
        with db.read() as session:
            return tuple(
                session.scalar(select(func.count()).select_from(t)) for t in (Worker, Token, Lease, Answer)
            )

    def entry(pid: str, k: str | None = secret) -> str:
        return prolific(spec.name, k, pid)

    browsers = [TestClient(app, follow_redirects=False) for _ in range(CROWD)]
    pages = {w: browsers[w].get(entry(f"PP{w:02d}")).text for w in range(CROWD)}
    forged_got = {}

    def forge() -> None:
        before = stored()
        thief = TestClient(app, follow_redirects=False)
        no_secret = thief.get(entry("FORGED1", None))
        wrong_job = thief.get(entry("FORGED2", decoy_secret))
        stolen = thief.get(entry("PP03"))  # PP03 holds a live lease in another browser
        lease = form_of(pages[3])[0]
        submitted = thief.post(lease, data={"session": "made-up", "csrf": "x", "taskAnswers": EMPTY})
        forged_got.update(
            {
                "statuses": [r.status_code for r in (no_secret, wrong_job, stolen, submitted)],
                "task_pages": sum("<crowd-form" in r.text for r in (no_secret, wrong_job, stolen)),
                "stored_changed": stored() != before,
            }
        )

    turn = 0
    while pages:
        for w in sorted(pages):
            if forged and turn == CROWD + 3:
                forge()
            turn += 1
            page = pages[w]
            if "<crowd-form" not in page:
                assert "No more tasks" in page
                del pages[w]
                continue
            action, fields = form_of(page)
            key = re.search(r"/img/\d+/([^?\"]+)", page).group(1)
            done = browsers[w].post(
                action, data={**fields, "taskAnswers": _answer(w, truth_for(str(images / key), truth))}
            )
            assert done.status_code == 200, done.text
            hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', done.text))
            pages[w] = browsers[w].post("/go/next", data=hidden).text

    with db.read() as session:
        forged_got["answered_by"] = set(
            session.scalars(select(Worker.public_id).join(Answer, Answer.worker_id == Worker.id))
        )
    # Marketplace answers are provisional: none reaches the outputs until the lead approves them.
    record = poll_job(spec.name, backend, jobs, finish=lambda s, r: finish_job(s, r, jobs))
    assert record.status == "in_progress" and record.counters.labeled == 0
    assert not (Path(spec.output) / spec.name).exists()
    with db.write() as session:
        assert catalog.approve(session, catalog.job_by_name(session, spec.name)) == 27
    record = poll_job(spec.name, backend, jobs, finish=lambda s, r: finish_job(s, r, jobs))
    assert record.status == "completed" and record.counters.labeled == len(refs) == 9
    lines = (Path(spec.output) / spec.name / OUTPUT_MANIFEST_KEY).read_text().splitlines()

    def undated(value):
        if isinstance(value, dict):
            return {k: undated(v) for k, v in value.items() if "date" not in k}
        return [undated(v) for v in value] if isinstance(value, list) else value

    return [undated(json.loads(line)) for line in lines], forged_got


def test_a_prolific_crowd_with_forged_entries_gives_the_outputs_of_a_crowd_without_them(tmp_path):
    clean, _ = _prolific_run(tmp_path / "clean", forged=False)
    attacked, forged = _prolific_run(tmp_path / "attacked", forged=True)
    assert forged.pop("answered_by") == {f"prolific:PP{w:02d}" for w in range(CROWD)}
    assert forged == {"statuses": [403, 403, 409, 401], "task_pages": 0, "stored_changed": False}
    assert len(clean) == 9 and attacked == clean

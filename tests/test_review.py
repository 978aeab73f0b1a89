"""`labeljob review` (docs/review.md): who may call it, bad decisions, and a chained Ground Truth
output manifest reviewed end to end through the API into a checked manifest and a new portal job."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from orchestrator.backends.portal.db import Job, Task, open_database
from orchestrator.cli.app import app as cli
from orchestrator.consolidation import AnswerReport, parse_consolidation_payload
from orchestrator.errors import InputError, StorageError, UsageError
from orchestrator.review import Review, create_review_app
from orchestrator.storage import LocalStore, open_object

SAMPLE_IMAGES = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "bucket" / "images"
EVIL = "<img src=x onerror=alert(1)>"
CODE = "the-admin-code-of-this-run"
runner = CliRunner()


def _metadata(job: str, class_map: dict, confidences: list[float], **extra) -> dict:
    return {
        "objects": [{"confidence": c} for c in confidences],
        "class-map": class_map,
        "type": "groundtruth/object-detection",
        "human-annotated": "yes",
        "creation-date": "2026-11-20T10:15:02.441871",
        "job-name": f"labeling-job/{job}",
        **extra,
    }


def _box(class_id: int, left: int, top: int, width: int, height: int) -> dict:
    return {"class_id": class_id, "left": left, "top": top, "width": width, "height": height}


def write_chained_manifest(folder: Path, labels: tuple[str, str] = ("car", "pedestrian")) -> Path:
    """Ground Truth's output manifest (docs/groundtruth.md, "Limits") after a bounding-box job
    `street` and its adjustment job `street-adjust` (attribute `bbox-adjusted`), three images."""
    car, person = labels
    lines = []
    boxes = [
        ([_box(0, 100, 200, 90, 50), _box(1, 300, 40, 40, 120)], [0.91, 0.42]),
        ([_box(1, 160, 40, 50, 140)], [0.88]),
        ([_box(0, 10, 10, 200, 100)], [0.97]),
    ]
    for n, (drawn, confidences) in enumerate(boxes):
        image = folder / f"img_{n}.jpg"
        shutil.copy(SAMPLE_IMAGES / f"img_000{n + 1}.jpg", image)
        class_map = {str(a["class_id"]): (car, person)[a["class_id"]] for a in drawn}
        size = [{"width": 640, "height": 480, "depth": 3}]
        lines.append(
            {
                "source-ref": image.as_uri(),
                "camera": "front",
                "bbox": {"image_size": size, "annotations": drawn},
                "bbox-metadata": _metadata("street", class_map, [0.5] * len(drawn)),
                "bbox-adjusted": {"image_size": size, "annotations": drawn},
                "bbox-adjusted-metadata": _metadata(
                    "street-adjust", class_map, confidences, **{"adjustment-status": "unadjusted"}
                ),
            }
        )
    manifest = folder / "output.manifest"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


@pytest.fixture
def review(tmp_path):
    """The app over a chained manifest, reviewing into tmp/reviewed/; (client, out folder, manifest)."""
    manifest = write_chained_manifest(tmp_path)
    out = tmp_path / "reviewed" / "reviewed.manifest"
    session = Review(open_object(manifest), open_object(out))
    client = TestClient(create_review_app(session, CODE, "ada"), follow_redirects=False)
    return client, out.parent, manifest


def _bearer() -> dict:
    return {"Authorization": f"Bearer {CODE}"}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_without_the_code_nothing_but_the_scripts_is_served(review):
    client, _, _ = review
    for path in ("/", "/api/summary", "/api/items", "/api/items/0/image"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer not-the-code"}).status_code == 401
    assert client.post("/api/items/0", json={"action": "accept"}).status_code == 401
    assert client.get("/a/not-the-code").status_code == 401
    client.cookies.set("labeljob_review", CODE)  # the code is not a session token
    assert client.get("/api/items").status_code == 401
    client.cookies.clear()
    assert client.get("/static/review.js").status_code == 200
    assert client.get("/static/review.html").status_code == 404
    login = client.get(f"/a/{CODE}")
    assert login.status_code == 303 and "samesite=strict" in login.headers["set-cookie"].lower()
    assert "httponly" in login.headers["set-cookie"].lower()
    assert client.get("/api/items").status_code == 200


def test_cross_site_and_malformed_decisions_change_nothing(review):
    client, out, _ = review
    before = (out / "reviewed.manifest").read_bytes()
    client.get(f"/a/{CODE}")
    # A form on another site can post text/plain with the cookie, or send its own Origin.
    assert client.post("/api/items/0", content='{"action": "reject"}').status_code == 415
    evil_origin = {"Origin": "http://evil.example", "Content-Type": "application/json"}
    assert client.post("/api/items/0", content='{"action": "reject"}', headers=evil_origin).status_code == 403
    bad = [
        (99, {"action": "accept"}, 404),
        (0, {"action": "delete"}, 422),
        (0, {"action": "accept", "boxes": []}, 422),
        (0, {"action": "fix"}, 422),
        (0, {"action": "undo"}, 422),
        (0, {"action": "accept", "note": "x"}, 422),
        (0, {"action": "fix", "boxes": [{"label": EVIL, "left": 1, "top": 1, "width": 9, "height": 9}]}, 422),
        (
            0,
            {"action": "fix", "boxes": [{"label": "car", "left": 1, "top": 1, "width": 0.2, "height": 9}]},
            422,
        ),
        (
            0,
            {"action": "fix", "boxes": [{"label": "car", "left": 1e300, "top": 1, "width": 9, "height": 9}]},
            422,
        ),
    ]
    for index, body, status in bad:
        assert client.post(f"/api/items/{index}", json=body).status_code == status, body
    nan = '{"action": "fix", "boxes": [{"label": "car", "left": NaN, "top": 1, "width": 9, "height": 9}]}'
    headers = {"Content-Type": "application/json"}
    assert client.post("/api/items/0", content=nan, headers=headers).status_code == 422
    assert client.post("/api/items/0", content="[" * 100_000, headers=headers).status_code == 422
    assert (
        client.post("/api/items/0", content=b"{" + b" " * 2_000_001 + b"}", headers=headers).status_code
        == 413
    )
    assert (out / "reviewed.manifest").read_bytes() == before
    assert not (out / "decisions.jsonl").exists()
    assert all(item["decision"] is None for item in client.get("/api/items").json())


def test_a_chained_ground_truth_manifest_reviewed_end_to_end(review, tmp_path):
    client, out, manifest = review
    summary = client.get("/api/summary", headers=_bearer()).json()
    assert (summary["attr"], summary["labels"]) == ("bbox-adjusted", ["car", "pedestrian"])
    items = client.get("/api/items?order=uncertain", headers=_bearer()).json()
    assert [item["index"] for item in items] == [0, 1, 2]  # lowest box confidence first: 0.42, 0.88, 0.97
    assert items[0]["boxes"][1] == {
        "label": "pedestrian",
        "left": 300,
        "top": 40,
        "width": 40,
        "height": 120,
        "confidence": 0.42,
    }
    assert items[0]["flags"] == ["low_confidence"] and items[0]["workers"] == []
    fixed = [
        {"label": "car", "left": 101.4, "top": 198.6, "width": 88.2, "height": 52},
        {"label": "pedestrian", "left": 296, "top": 38, "width": 44, "height": 130, "confidence": 0.42},
    ]
    answer = client.post("/api/items/0", json={"action": "fix", "boxes": fixed}, headers=_bearer())
    assert answer.status_code == 200 and answer.json()["decision"] == "fix"
    assert (
        client.post("/api/items/1", json={"action": "reject"}, headers=_bearer()).json()["decision"]
        == "reject"
    )
    assert (
        client.post("/api/items/2", json={"action": "accept"}, headers=_bearer()).json()["decision"]
        == "accept"
    )

    check = runner.invoke(cli, ["--format", "json", "manifest", "check", str(out / "reviewed.manifest")])
    assert check.exit_code == 0, check.output
    assert json.loads(check.stdout)["error_count"] == 0
    reviewed = _lines(out / "reviewed.manifest")
    original = _lines(manifest)
    assert [line["source-ref"] for line in reviewed] == [original[0]["source-ref"], original[2]["source-ref"]]
    first, accepted = reviewed
    assert first["bbox-adjusted"]["annotations"] == [
        {"class_id": 0, "left": 101, "top": 199, "width": 89, "height": 52},
        {"class_id": 1, "left": 296, "top": 38, "width": 44, "height": 130},
    ]
    metadata = first["bbox-adjusted-metadata"]
    assert metadata["objects"] == [{"confidence": 1.0}, {"confidence": 1.0}]
    assert (
        metadata["adjustment-status"] == "adjusted" and metadata["job-name"] == "labeling-job/street-adjust"
    )
    assert first["bbox"] == original[0]["bbox"] and first["camera"] == "front"  # the chain's earlier job
    assert accepted["bbox-adjusted"] == original[2]["bbox-adjusted"]
    assert accepted["bbox-adjusted-metadata"]["adjustment-status"] == "unadjusted"

    rejected = _lines(out / "rejected.manifest")
    assert rejected == [{k: v for k, v in original[1].items() if not k.startswith("bbox-adjusted")}]
    log = _lines(out / "decisions.jsonl")
    assert [(e["index"], e["action"], e["by"]) for e in log] == [
        (0, "fix", "ada"),
        (1, "reject", "ada"),
        (2, "accept", "ada"),
    ]
    assert log[0]["before"] == {"decision": None, "boxes": None}
    assert log[0]["after"]["boxes"][0] == {"label": "car", "left": 101, "top": 199, "width": 89, "height": 52}
    datetime.fromisoformat(log[0]["at"])

    # rejected.manifest goes back to the crowd as a new portal job.
    spec = tmp_path / "again.toml"
    spec.write_text(
        f'name = "street-again"\nbackend = "portal"\nlabels = ["car", "pedestrian"]\n'
        f'input_manifest = "{out / "rejected.manifest"}"\noutput = "{tmp_path / "labeling"}"\n'
    )
    launched = runner.invoke(cli, ["--workspace", str(tmp_path / "ws"), "launch", str(spec), "--yes"])
    assert launched.exit_code == 0, launched.output
    with open_database(f"sqlite:///{tmp_path / 'ws' / 'portal.db'}").read() as session:
        job = session.scalars(select(Job).where(Job.name == "street-again")).one()
        refs = session.scalars(select(Task.source_ref).where(Task.job_id == job.id)).all()
    assert refs == [original[1]["source-ref"]]


def test_a_restart_resumes_and_undo_reverts_one_decision_at_a_time(review, tmp_path):
    client, out, manifest = review
    client.post("/api/items/1", json={"action": "accept"}, headers=_bearer())
    client.post("/api/items/1", json={"action": "reject"}, headers=_bearer())
    # A new process over the same REVIEWED: the decisions come back from the log.
    again = Review(open_object(manifest), open_object(out / "reviewed.manifest"))
    assert again.counts() == {"undecided": 2, "accept": 0, "fix": 0, "reject": 1}
    client = TestClient(create_review_app(again, CODE, "bob"))
    undone = client.post("/api/items/1", json={"action": "undo"}, headers=_bearer()).json()
    assert undone["decision"] == "accept"
    assert _lines(out / "rejected.manifest") == []
    assert len(_lines(out / "reviewed.manifest")) == 3
    assert client.post("/api/items/1", json={"action": "undo"}, headers=_bearer()).json()["decision"] is None
    assert client.post("/api/items/1", json={"action": "undo"}, headers=_bearer()).status_code == 422
    log = _lines(out / "decisions.jsonl")
    assert [(e["action"], e["by"], e["after"]["decision"]) for e in log] == [
        ("accept", "ada", "accept"),
        ("reject", "ada", "reject"),
        ("undo", "bob", "accept"),
        ("undo", "bob", None),
    ]
    assert Review(open_object(manifest), open_object(out / "reviewed.manifest")).counts()["undecided"] == 3


def test_a_decisions_log_of_another_manifest_is_refused(review, tmp_path):
    client, out, _ = review
    client.post("/api/items/0", json={"action": "reject"}, headers=_bearer())
    other = tmp_path / "other"
    other.mkdir()
    lines = _lines(write_chained_manifest(other))
    (other / "output.manifest").write_text("".join(json.dumps(line) + "\n" for line in lines[::-1]))
    with pytest.raises(InputError, match="does not hold there"):
        Review(open_object(other / "output.manifest"), open_object(out / "reviewed.manifest"))
    with pytest.raises(UsageError, match="must not be the manifest"):
        Review(open_object(other / "output.manifest"), open_object(other / "output.manifest"))
    with pytest.raises(UsageError, match="must not be named rejected.manifest"):
        Review(open_object(other / "output.manifest"), open_object(other / "rejected.manifest"))


def _payload(manifest: Path) -> list[dict]:
    """Image 1: w1 agrees with the consensus, EVIL draws somewhere else, w3 draws nothing."""
    refs = [line["source-ref"] for line in _lines(manifest)]

    def annotation(worker: str, boxes: list[dict]) -> dict:
        content = {
            "crowd-bounding-box": {
                "boundingBoxes": boxes,
                "inputImageProperties": {"width": 640, "height": 480},
            }
        }
        return {"workerId": worker, "annotationData": {"content": json.dumps(content)}}

    agree = [{"label": "pedestrian", "left": 160, "top": 40, "width": 50, "height": 140}]
    elsewhere = [{"label": "car", "left": 400, "top": 300, "width": 60, "height": 40}]
    return [
        {
            "datasetObjectId": "1",
            "dataObject": {"s3Uri": refs[1]},
            "annotations": [annotation("w1", agree), annotation(EVIL, elsewhere), annotation("w3", [])],
        },
        {
            "datasetObjectId": "2",
            "dataObject": {"s3Uri": refs[2]},
            "annotations": [
                annotation("w1", [{"label": "car", "left": 10, "top": 10, "width": 200, "height": 100}])
            ],
        },
    ]


def test_workers_boxes_beside_the_consensus_put_disagreement_first(review):
    client, _, manifest = review
    reviewer = Review(open_object(manifest), open_object(manifest.parent / "w" / "reviewed.manifest"))
    reviewer.add_answers(
        parse_consolidation_payload(json.dumps(_payload(manifest)), ["car", "pedestrian"], AnswerReport())
    )
    client = TestClient(create_review_app(reviewer, CODE, "ada"))
    items = client.get("/api/items?order=uncertain", headers=_bearer()).json()
    # Image 1: confidence 0.88, but two workers of three disagree: 1 - mean F1 = 2/3, above 1 - 0.42.
    assert [item["index"] for item in items] == [1, 0, 2]
    assert items[0]["flags"] == ["workers_disagree"] and items[0]["disagreement"] == 0.6667
    assert items[0]["workers"] == [
        {"worker_id": EVIL, "boxes": [{"label": "car", "left": 400, "top": 300, "width": 60, "height": 40}]},
        {
            "worker_id": "w1",
            "boxes": [{"label": "pedestrian", "left": 160, "top": 40, "width": 50, "height": 140}],
        },
        {"worker_id": "w3", "boxes": []},
    ]
    # Votes per consensus box: the workers who drew its label at IoU >= 0.5 (w1 only); none without answers.
    assert [box["votes"] for box in items[0]["boxes"]] == [1]
    assert all("votes" not in box for box in items[1]["boxes"])
    echoed = client.post(
        "/api/items/1", json={"action": "fix", "boxes": items[0]["boxes"]}, headers=_bearer()
    )
    assert echoed.json()["fixed_boxes"] == [
        {k: v for k, v in items[0]["boxes"][0].items() if k not in ("confidence", "votes")}
    ]
    client.post("/api/items/1", json={"action": "undo"}, headers=_bearer())
    assert client.get("/api/summary", headers=_bearer()).json()["workers"] == [EVIL, "w1", "w3"]
    by_worker = client.get("/api/items", params={"worker": EVIL}, headers=_bearer()).json()
    assert [item["index"] for item in by_worker] == [1]
    assert [i["index"] for i in client.get("/api/items?label=car", headers=_bearer()).json()] == [0, 2]
    assert [i["index"] for i in client.get("/api/items?flag=low_confidence", headers=_bearer()).json()] == [0]
    client.post("/api/items/2", json={"action": "reject"}, headers=_bearer())
    assert [i["index"] for i in client.get("/api/items?decision=reject", headers=_bearer()).json()] == [2]
    assert [i["index"] for i in client.get("/api/items?decision=undecided", headers=_bearer()).json()] == [
        0,
        1,
    ]
    assert client.get("/api/items?order=random", headers=_bearer()).status_code == 422


def test_html_in_labels_worker_ids_and_file_names_stays_data(tmp_path):
    """The page is static and fills itself from JSON with text nodes (the browser test renders it);
    the server never puts a label, worker id or file name into HTML."""
    folder = tmp_path / EVIL.replace("/", "")
    folder.mkdir()
    manifest = write_chained_manifest(folder, labels=(EVIL, "<b>pedestrian</b>"))
    session = Review(open_object(manifest), open_object(tmp_path / "out" / "reviewed.manifest"))
    client = TestClient(create_review_app(session, CODE, "ada"))
    client.get(f"/a/{CODE}")
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert "<img src=x" not in page.text and "<b>" not in page.text
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    items = client.get("/api/items")
    assert (
        items.headers["content-type"] == "application/json"
        and items.headers["x-content-type-options"] == "nosniff"
    )
    assert items.json()[0]["boxes"][0]["label"] == EVIL and EVIL.replace("/", "") in unquote(
        items.json()[0]["source-ref"]
    )
    image = client.get("/api/items/0/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    script = client.get("/static/review.js").text
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script


def test_the_command_refuses_a_missing_manifest_and_reviewing_into_itself(tmp_path):
    missing = runner.invoke(
        cli, ["review", str(tmp_path / "nope.manifest"), "--out", str(tmp_path / "r.manifest")]
    )
    assert (
        missing.exit_code == 1
        and missing.stderr.startswith("Error: ")
        and len(missing.stderr.splitlines()) <= 2
    )
    manifest = write_chained_manifest(tmp_path)
    same = runner.invoke(cli, ["review", str(manifest), "--out", str(manifest)])
    assert same.exit_code == 2 and "must not be the manifest" in same.stderr
    wrong_attr = runner.invoke(
        cli, ["review", str(manifest), "--out", str(tmp_path / "r" / "r.manifest"), "--attr", "nope"]
    )
    assert wrong_attr.exit_code == 1 and "nope" in wrong_attr.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(manifest: Path, out: Path, *options: str) -> tuple[subprocess.Popen, dict]:
    """`labeljob review` in its own process; its printed summary once the app answers."""
    command = [sys.executable, "-c", "from orchestrator.cli import main; main()", "--format", "json"]
    command += ["review", str(manifest), "--out", str(out), "--port", str(_free_port()), *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    text = ""
    while not text.endswith("}\n"):  # the summary is printed as indented JSON
        line = process.stdout.readline()
        assert line, "labeljob review printed no summary: " + process.stderr.read()
        text += line
    printed = json.loads(text)
    for _ in range(1200):  # generous: the machine is shared, and a cold start imports a lot
        try:
            httpx.get(printed["url"] + "/static/review.css", timeout=1)
            return process, printed
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("labeljob review did not start: " + process.stderr.read())


def test_the_command_prints_a_new_link_each_run_stops_on_ctrl_c_and_resumes(tmp_path):
    manifest = write_chained_manifest(tmp_path)
    out = tmp_path / "reviewed" / "reviewed.manifest"
    process, printed = _serve(manifest, out)
    try:
        code = printed["review_url"].rsplit("/", 1)[1]
        assert printed["attr"] == "bbox-adjusted" and printed["items"] == 3 and printed["undecided"] == 3
        headers = {"Authorization": f"Bearer {code}"}
        decided = httpx.post(f"{printed['url']}/api/items/2", json={"action": "reject"}, headers=headers)
        assert decided.json()["decision"] == "reject"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, process.stderr.read()
    payload = tmp_path / "answers.json"
    payload.write_text(json.dumps(_payload(manifest)))
    process, again = _serve(manifest, out, "--answers", str(payload))
    try:
        assert (again["undecided"], again["reject"]) == (2, 1)
        assert again["review_url"] != printed["review_url"]
        old = {"Authorization": f"Bearer {code}"}
        assert httpx.get(f"{again['url']}/api/items", headers=old).status_code == 401
        new = {"Authorization": f"Bearer {again['review_url'].rsplit('/', 1)[1]}"}
        assert httpx.get(f"{again['url']}/api/summary", headers=new).json()["workers"] == [EVIL, "w1", "w3"]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert len(_lines(out.parent / "rejected.manifest")) == 1


class FailingPuts(LocalStore):
    """A folder whose next `fail` writes fail, as a full disk or a lost connection would."""

    fail = 0

    def put(self, key: str, data: bytes, content_type: str | None = None) -> str:
        if self.fail:
            self.fail -= 1
            raise StorageError(f"{key}: no space left on device")
        return super().put(key, data, content_type)


def test_a_decision_that_could_not_be_written_does_not_count(tmp_path):
    manifest = write_chained_manifest(tmp_path)
    out = FailingPuts(tmp_path / "reviewed")
    session = Review(open_object(manifest), (out, "reviewed.manifest"))
    client = TestClient(create_review_app(session, CODE, "ada"))
    out.fail = 1
    refused = client.post("/api/items/0", json={"action": "reject"}, headers=_bearer())
    assert refused.status_code == 503 and "nothing was stored" in refused.json()["message"]
    assert session.counts()["reject"] == 0 and not (tmp_path / "reviewed" / "decisions.jsonl").exists()
    assert client.post("/api/items/0", json={"action": "accept"}, headers=_bearer()).status_code == 200
    assert [e["action"] for e in _lines(tmp_path / "reviewed" / "decisions.jsonl")] == ["accept"]


def test_a_manifest_on_s3_with_its_images_presigned(s3, tmp_path):
    client = s3.client("s3")
    client.create_bucket(Bucket="labels")
    local = write_chained_manifest(tmp_path)
    lines = _lines(local)
    for n, line in enumerate(lines):
        client.put_object(
            Bucket="labels", Key=f"images/img_{n}.jpg", Body=(tmp_path / f"img_{n}.jpg").read_bytes()
        )
        line["source-ref"] = f"s3://labels/images/img_{n}.jpg"
    client.put_object(
        Bucket="labels", Key="job/output.manifest", Body="".join(json.dumps(x) + "\n" for x in lines)
    )
    review = Review(
        open_object("s3://labels/job/output.manifest", s3), open_object("s3://labels/reviewed/r.manifest", s3)
    )
    app = TestClient(create_review_app(review, CODE, "ada", boto3_session=s3), follow_redirects=False)
    image = app.get("/api/items/1/image", headers=_bearer())
    assert image.status_code == 307
    assert (
        image.headers["location"].startswith("https://labels.s3") and "Signature" in image.headers["location"]
    )
    assert app.post("/api/items/1", json={"action": "reject"}, headers=_bearer()).status_code == 200
    rejected = client.get_object(Bucket="labels", Key="reviewed/rejected.manifest")["Body"].read().decode()
    assert json.loads(rejected)["source-ref"] == "s3://labels/images/img_1.jpg"
    reviewed = client.get_object(Bucket="labels", Key="reviewed/r.manifest")["Body"].read().decode()
    assert len(reviewed.splitlines()) == 2

"""Progress bars of `consolidate`, `export` and `wait`: drawn on stderr when it is a terminal, never
in a pipe, with `--quiet` or with `--format json`. rich reads TTY_COMPATIBLE to decide (1: a terminal)."""

from __future__ import annotations

import json
import re
import tomllib

import pytest
from typer.testing import CliRunner

from orchestrator.cli import job as job_cmd
from orchestrator.cli.app import app
from orchestrator.jobs import JobStore, new_record
from orchestrator.spec import example_spec_toml, parse_spec
from orchestrator.storage import LocalStore

BOX = {"label": "car", "left": 10, "top": 10, "width": 50, "height": 40}
PAYLOAD = [
    {
        "datasetObjectId": str(i),
        "dataObject": {"s3Uri": f"s3://bucket/{i}.jpg"},
        "annotations": [
            {"workerId": w, "annotationData": {"content": json.dumps({"e": {"boundingBoxes": [BOX]}})}}
            for w in ("w1", "w2", "w3")
        ],
    }
    for i in range(3)
]


def run(monkeypatch, terminal: bool, *args: str):
    monkeypatch.setenv("TTY_COMPATIBLE", "1" if terminal else "0")
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def payload(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps(["car"]))
    (tmp_path / "payload.json").write_text(json.dumps(PAYLOAD))
    return tmp_path


def consolidate_args(folder, *options: str) -> list[str]:
    return [*options, "consolidate", str(folder / "payload.json"), "--out", str(folder / "out.manifest"),
            "--labels", str(folder / "labels.json")]  # fmt: skip


def test_consolidate_and_export_draw_a_bar_on_a_terminal(monkeypatch, payload):
    result = run(monkeypatch, True, *consolidate_args(payload))
    assert result.exit_code == 0, result.output
    assert "voting on 3 objects" in result.stderr
    result = run(monkeypatch, True, "export", str(payload / "out.manifest"), "--format", "coco",
                 "--out", str(payload / "coco"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "writing 3 images as coco" in result.stderr


@pytest.mark.parametrize(
    ("terminal", "options"), [(False, ()), (True, ("--quiet",)), (True, ("--format", "json"))]
)
def test_no_bar_in_a_pipe_when_quiet_or_in_json(monkeypatch, payload, terminal, options):
    result = run(monkeypatch, terminal, *consolidate_args(payload, *options))
    assert result.exit_code == 0, result.output
    assert "voting" not in result.stderr and "reading answers" not in result.stderr


def job_polls(monkeypatch, folder) -> str:
    """A job in `folder` whose polls report 1, 3 then 4 of 4 objects labeled; its name."""
    spec = parse_spec(tomllib.loads(example_spec_toml()))
    JobStore(LocalStore(folder)).create(new_record(spec, total=4))
    records = []
    for status, labeled in [("in_progress", 1), ("in_progress", 3), ("completed", 4)]:
        record = new_record(spec, total=4)
        record.status, record.counters.labeled = status, labeled
        record.outputs = {"manifest": "out.manifest"} if status == "completed" else {}
        records.append(record)
    polls = iter(records)
    monkeypatch.setattr(job_cmd, "_poller", lambda *args: lambda: next(polls))
    return spec.name


@pytest.mark.parametrize("terminal", [True, False])
def test_wait_shows_labeled_of_total(monkeypatch, tmp_path, terminal):
    name = job_polls(monkeypatch, tmp_path)
    result = run(monkeypatch, terminal, "--workspace", str(tmp_path), "wait", name, "--interval", "0")
    assert result.exit_code == 0, result.output
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stderr)
    assert f"{name}: in_progress 3/4 labeled" in plain  # the line per poll, bar or not
    assert (f"{name}: completed ━" in plain and "━ 4/4" in plain) is terminal

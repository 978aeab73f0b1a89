"""Start-up: each command and Lambda handler imports only what it uses (docs/benchmarks.md, Start-up).

Every case runs in a fresh interpreter and reads its `sys.modules` at exit, so nothing imported by
pytest or by another test can hide an import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.jobs import JobStore, new_record
from orchestrator.spec import example_spec_toml, parse_spec
from orchestrator.storage import LocalStore

ROOT = Path(__file__).resolve().parent.parent
# What no listing or status command needs: the voting stack, the portal's web stack, AWS.
HEAVY = ("scipy", "numpy", "fastapi", "starlette", "sqlalchemy", "uvicorn", "httpx", "boto3", "botocore")

REPORT_MODULES = "import json, sys; print(json.dumps(sorted(sys.modules)))"


def modules_after(code: str, cwd: Path) -> set[str]:
    """The modules loaded once `code` has run in a fresh interpreter (its last stdout line)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LABELJOB_CONFIG": str(cwd / "none.toml")}
    proc = subprocess.run(
        [sys.executable, "-c", f"{code}\n{REPORT_MODULES}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def cli_modules(args: list[str], cwd: Path) -> set[str]:
    code = (
        "import contextlib, io, sys\n"
        f"sys.argv = ['labeljob', *{args!r}]\n"
        "from orchestrator.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main()"
    )
    return modules_after(code, cwd)


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in packages or m.startswith(packages))


@pytest.fixture
def workspace(tmp_path) -> Path:
    (tmp_path / "none.toml").write_text("")
    spec = parse_spec(__import__("tomllib").loads(example_spec_toml()))
    JobStore(LocalStore(tmp_path / "ws")).create(new_record(spec, total=3))
    return tmp_path / "ws"


def test_help_imports_no_heavy_module_and_no_rich(workspace):
    modules = cli_modules(["--help"], workspace.parent)
    assert "orchestrator.cli.results" in modules  # the listing did load every command's module
    assert loaded(modules, HEAVY + ("rich", "liquid")) == []


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_status_of_a_local_workspace_imports_no_heavy_module(workspace, fmt):
    modules = cli_modules(["--workspace", str(workspace), "--format", fmt, "status"], workspace.parent)
    assert "orchestrator.jobs.store" in modules
    assert loaded(modules, HEAVY + ("orchestrator.consolidation", "orchestrator.outputs")) == []


def test_a_command_loads_no_other_command(workspace):
    modules = cli_modules(["export", "--help"], workspace.parent)
    commands = [
        m for m in loaded(modules, ("orchestrator.cli.",)) if not m.rpartition(".")[2].startswith("_")
    ]
    assert commands == ["orchestrator.cli.app", "orchestrator.cli.results"]


def test_the_lambda_module_imports_only_logging_and_redaction(tmp_path):
    modules = modules_after("import orchestrator.lambdas", tmp_path)
    assert loaded(modules, ("orchestrator",)) == [
        "orchestrator",
        "orchestrator.errors",
        "orchestrator.lambdas",
        "orchestrator.redact",
    ]
    assert loaded(modules, HEAVY + ("pydantic",)) == []


def test_the_consolidation_lambda_never_imports_the_job_layer_or_the_portal(tmp_path):
    payload = tmp_path / "payload.json"
    content = {
        "boundingBox": {"boundingBoxes": [{"label": "Bird", "left": 1, "top": 1, "width": 9, "height": 9}]}
    }
    answer = {"workerId": "w1", "annotationData": {"content": json.dumps(content)}}
    payload.write_text(
        json.dumps(
            [{"datasetObjectId": "0", "dataObject": {"s3Uri": "s3://b/0.jpg"}, "annotations": [answer]}]
        )
    )
    event = {"labelCategories": ["Bird"], "labelAttributeName": "bbox", "payload": {"s3Uri": str(payload)}}
    code = (
        "from orchestrator.lambdas import consolidation_handler\n"
        f"[entry] = consolidation_handler({event!r}, None)\n"
        "assert entry['consolidatedAnnotation']['content']['bbox']['annotations'], entry"
    )
    modules = modules_after(code, tmp_path)
    assert "orchestrator.consolidation.iou_vote" in modules
    banned = ("orchestrator.jobs", "orchestrator.backends", "orchestrator.outputs.consolidate", "fastapi")
    assert loaded(modules, banned + ("sqlalchemy", "orchestrator.outputs.exports")) == []


def test_a_lazy_package_gives_its_submodules_as_attributes():
    code = (
        "import orchestrator.manifest as m, orchestrator.consolidation as c\n"
        "print(m.jsonl.__name__, c.iou.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["orchestrator.manifest.jsonl", "orchestrator.consolidation.iou"]

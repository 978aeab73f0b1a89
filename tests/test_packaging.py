"""The wheel on its own: installed outside the checkout, `labeljob demo` finds its bucket and templates.

Offline and quick: the wheel is built without build isolation (hatchling comes with `.[dev]`) and
installed with --no-deps --no-index into a fresh venv whose only other path is this interpreter's
site-packages, added by a .pth file (so the editable install of the checkout stays out of it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    # Without PYTHONPATH, which points at the checkout when tests run from a worktree.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


def test_an_installed_wheel_runs_the_demo_outside_the_checkout(tmp_path):
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", tmp_path / "dist", REPO)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("labeljob-*.whl")
    venv = tmp_path / "fresh"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    purelib = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    )
    (purelib / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(python, "-c", "import orchestrator; print(orchestrator.__file__)", cwd=elsewhere).stdout
    assert Path(where.strip()).is_relative_to(purelib)
    demo = _run(
        venv / "bin" / "labeljob", "--format", "json", "demo", "--dir", "d", "--workers", "3", cwd=elsewhere
    )
    summary = json.loads(demo.stdout)
    assert summary["job"]["status"] == "completed" and summary["simulated_answers"] == 25 * 3
    manifest = Path(summary["outputs"]["manifest"].removeprefix("file://"))
    assert manifest.is_relative_to(elsewhere) and len(manifest.read_text().splitlines()) == 25

"""`labeljob demo`: a whole labeling job offline on the sample bucket."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli._state import state
from orchestrator.redact import ShownOnce


def program() -> str:
    """How to call this labeljob again: `labeljob` when that name on PATH is this program, else its path
    (`make demo` runs .venv/bin/labeljob, which is not on PATH until the venv is activated)."""
    this = Path(sys.argv[0])
    if this.name != "labeljob":
        return "labeljob"
    found = shutil.which("labeljob")
    if found and Path(found).resolve() == this.resolve():
        return "labeljob"
    return shlex.quote(str(this.resolve()))


def demo(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Option("--dir", help="Folder for the demo's bucket, workspace and outputs.")
    ] = Path("labeljob-demo"),
    workers: Annotated[int, typer.Option(min=1, max=9, help="Simulated workers per image.")] = 5,
    spammers: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of workers who draw at random.")
    ] = 0.2,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the simulated crowd.")] = 0,
) -> None:
    """Build a manifest, launch on the portal, let a simulated crowd answer, consolidate, export."""
    from orchestrator.demo import JOB_NAME, run_demo, train_command

    out = state(ctx).output
    result = run_demo(directory, workers=workers, spammers=spammers, seed=seed, progress=out.info)
    serve = f"{program()} --workspace {shlex.quote(str(result.workspace.resolve()))} portal serve"
    review = ShownOnce(f"http://127.0.0.1:8080{result.admin_url_path}")
    summary = {
        "job": result.job,
        "images_in_manifest": result.manifest_report["accepted"],
        "skipped": result.manifest_report["skipped"]["by_reason"],
        "simulated_answers": result.simulated_answers,
        "outputs": result.outputs,
        "job_spec": str(result.directory / "job.toml"),
        "serve_portal": serve,
        "admin_url": review,
        "review_url": f"http://127.0.0.1:8080/admin/jobs/{JOB_NAME}/review",
        "train_dry_run": train_command(result.workspace, program()),
    }
    if out.json:
        out.data(summary)
        return
    out.data(
        {
            "job": "{name}: {status}, {labeled}/{total} labeled".format(**result.job),
            "simulated answers": result.simulated_answers,
            "skipped objects": {k: v for k, v in summary["skipped"].items() if v},
            **{name.replace("_", " "): uri for name, uri in result.outputs.items()},
            "job spec": summary["job_spec"],
        },
        title="labeljob demo",
    )
    out.info("")
    out.info("To look at the boxes over the images, start the portal and open the admin link:")
    out.info(f"    {serve}")
    out.info(ShownOnce(f"    {review}        (then: {summary['review_url']})"))
    out.info("")
    out.info(
        "To train a detector on these boxes, put your region, bucket and role in this dry run: it prints the "
        "exact CreateTrainingJob request and what would stop a launch (here: local images, under 50 a class):"
    )
    out.info(f"    {summary['train_dry_run']}")

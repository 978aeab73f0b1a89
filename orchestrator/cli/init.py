"""`labeljob init`: write labeljob.toml and an example job spec."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli._state import state
from orchestrator.config import CONFIG_FILE, Settings, render_config
from orchestrator.errors import UsageError
from orchestrator.spec import example_spec_toml


def init(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Project folder to write into.")] = Path("."),
    workspace: Annotated[
        str, typer.Option(help="s3://BUCKET/PREFIX or a local folder.")
    ] = "labeljob-workspace",
    backend: Annotated[str, typer.Option(help="Default backend: portal, groundtruth or mturk.")] = "portal",
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
) -> None:
    """Write labeljob.toml and manifests/examples/job.toml in DIRECTORY."""
    out = state(ctx).output
    global_settings = state(ctx).settings
    settings = Settings(
        workspace=workspace, backend=backend, region=global_settings.region, profile=global_settings.profile
    )
    files = {
        directory / CONFIG_FILE: render_config(settings),
        directory / "manifests" / "examples" / "job.toml": example_spec_toml(backend),
    }
    existing = [str(p) for p in files if p.exists()]
    if existing and not force:
        raise UsageError(f"{', '.join(existing)} already exist(s)", hint="pass --force to overwrite")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    out.data(
        {"config": str(directory / CONFIG_FILE), "job_spec": str(directory / "manifests/examples/job.toml")}
    )

"""Argument and option types that more than one command takes, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SpecPath = Annotated[Path, typer.Argument(help="The job spec (TOML).", metavar="JOB.toml")]

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
        "(default: portal.db in a local workspace).",
        metavar="URL",
    ),
]

MTurkWorkerIds = Annotated[
    list[str], typer.Argument(help="MTurk worker ids (A1B2C3...).", metavar="WORKER_ID...")
]

TrainingRole = Annotated[
    str | None,
    typer.Option("--role", metavar="ARN", help="The execution role SageMaker assumes for training."),
]

TrainingOutput = Annotated[
    str | None,
    typer.Option(
        "--output",
        metavar="s3://...",
        help="Where the training channels and the model go (default: beside the job).",
    ),
]

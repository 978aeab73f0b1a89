"""Command-line interface; `main` is the `labeljob` console script."""

from __future__ import annotations


def main() -> None:
    from orchestrator.cli.app import app

    app()

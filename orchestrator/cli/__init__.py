"""Command-line interface; `main` is the `labeljob` console script."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from orchestrator.cli.app import app

        app()
    except KeyboardInterrupt:
        # Ctrl-C while the imports run, before the app's own handler is in place.
        sys.stderr.write("Error: interrupted\n")
        raise SystemExit(130) from None

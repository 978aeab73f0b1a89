"""`labeljob review`: review and adjudicate any augmented manifest in the browser or through its API."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli._state import State, state
from orchestrator.cli.portal import base_url
from orchestrator.redact import ShownOnce
from orchestrator.storage import open_object

if TYPE_CHECKING:
    from orchestrator.review import Review


def open_review(st: State, manifest: str, out: str, answers: str | None, attr: str | None) -> Review:
    """The review of MANIFEST into OUT, with the workers' boxes from ANSWERS when given."""
    from orchestrator.consolidation import AnswerReport
    from orchestrator.outputs import read_answers
    from orchestrator.review import Review

    session = st.session_for(manifest, out, answers)
    review = Review(open_object(manifest, session), open_object(out, session), attr=attr)
    if answers:
        report = AnswerReport()
        refs = {str(item.index): item.line.source_ref for item in review.items}
        review.add_answers(read_answers(answers, refs, list(review.labels), report, session))
        if report.problems:
            st.output.warn(f"{report.problems} answer problem(s) repaired or dropped in {answers}")
    return review


def review(
    ctx: typer.Context,
    manifest: Annotated[
        str, typer.Argument(help="An augmented manifest (path or s3:// URI).", metavar="MANIFEST")
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            help="The reviewed manifest to write; rejected.manifest and decisions.jsonl go beside it.",
            metavar="REVIEWED",
        ),
    ],
    answers: Annotated[
        str | None,
        typer.Option(
            "--answers",
            help="Worker answers, as `labeljob consolidate` takes them: a consolidation payload or a "
            "Ground Truth job's output folder.",
            metavar="INPUT",
        ),
    ] = None,
    attr: Annotated[
        str | None,
        typer.Option("--attr", help="Label attribute to review; default: the latest one.", metavar="ATTR"),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
) -> None:
    """Serve the review app for MANIFEST; every decision is written at once, and a restart resumes."""
    import uvicorn

    from orchestrator.review import create_review_app, new_code

    st = state(ctx)
    opened = open_review(st, manifest, out, answers, attr)
    code = new_code()
    base = base_url(host, port)
    st.output.info("Open the review link below; it is new each run. Ctrl-C stops the app.")
    st.output.data(
        {
            "url": base,
            "review_url": ShownOnce(f"{base}/a/{code}"),
            "attr": opened.attr,
            "items": len(opened.items),
            **opened.counts(),
            **opened.uris,
        }
    )
    app = create_review_app(opened, code, getpass.getuser(), st.session_for(manifest))
    # No access log: the review link carries the admin code in its path.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")

"""`labeljob dataset card`: a dataset card for a finished job or a labeled manifest."""

from __future__ import annotations

import posixpath
from typing import Annotated

import typer

from orchestrator.cli._state import state
from orchestrator.jobs import JobStore
from orchestrator.storage import open_object, open_store
from orchestrator.training.card import build_card

app = typer.Typer(help="Describe a labeled dataset.", no_args_is_help=True, rich_markup_mode=None)


@app.command("card")
def card(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(metavar="JOB|MANIFEST", help="A finished job of the workspace, or a manifest.")
    ],
    out: Annotated[
        str, typer.Option(metavar="DATASET.md", help="The card to write; the histogram PNG goes beside it.")
    ] = "DATASET.md",
) -> None:
    """Write a Hugging Face-style dataset card: classes, splits, box sizes, label sources, known issues."""
    st = state(ctx)
    stem = posixpath.basename(out).rsplit(".", 1)[0]
    histogram = f"{stem}-box-sizes.png"
    jobs = JobStore(open_store(st.settings.workspace, st.session))
    result = build_card(source, jobs, histogram_name=histogram, boto3_session=st.session)
    store, key = open_object(out, st.session)
    card_uri = store.uri(key)
    store.put(key, result.markdown.encode(), "text/markdown")
    png_key = posixpath.join(posixpath.dirname(key), histogram)
    store.put(png_key, result.histogram_png, "image/png")
    st.output.data(
        {
            "card": card_uri,
            "histogram": store.uri(png_key),
            "images": result.images,
            "classes": result.classes,
        }
    )

"""`labeljob manifest ...`: build input manifests from a bucket or folder, and check manifests."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

import typer

from orchestrator import manifest
from orchestrator.aws import client
from orchestrator.cli._output import Output
from orchestrator.cli._state import state
from orchestrator.errors import InputError, UsageError
from orchestrator.storage import ObjectStore, S3Store, open_object, open_store

app = typer.Typer(
    help="Input manifests: build them from a bucket or folder, check them, report dataset health.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


class Dedupe(StrEnum):
    etag = "etag"
    none = "none"


@app.command()
def build(
    ctx: typer.Context,
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            metavar="DEST",
            help="A folder or s3:// prefix that receives input.manifest (or SPLIT.manifest per split) "
            "and skipped.jsonl; or a path ending in .manifest, written with NAME.skipped.jsonl beside it.",
        ),
    ],
    source: Annotated[
        str | None,
        typer.Argument(
            help="s3://BUCKET/PREFIX or a folder; listed recursively. With --from-inventory, the prefix "
            "to take from the report (default: the whole bucket it lists).",
            metavar="SOURCE",
            show_default=False,
        ),
    ] = None,
    include_ext: Annotated[
        str, typer.Option(help="Extensions to include, comma-separated, any case.")
    ] = "jpg,jpeg,png,bmp",
    exclude: Annotated[
        str | None,
        typer.Option(help="Skip keys (relative to SOURCE) that this regular expression matches anywhere."),
    ] = None,
    max_bytes: Annotated[
        str,
        typer.Option(help="Skip larger objects: bytes, or a size like 6MB (K/M/G are 1024-based); 'off'."),
    ] = "6MB",
    min_side: Annotated[
        int | None,
        typer.Option(
            help="Skip images whose shorter side is under this many pixels (256 is a good value). "
            "Implies --probe."
        ),
    ] = None,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Read each image's first 64 KiB (ranged GETs, in parallel), skip files that are not "
            "images, and record width and height.",
        ),
    ] = False,
    dedupe: Annotated[
        Dedupe, typer.Option(help="Skip objects with the ETag of an earlier one.")
    ] = Dedupe.etag,
    limit: Annotated[int | None, typer.Option(help="Stop after this many objects, in key order.")] = None,
    sample: Annotated[
        int | None, typer.Option(help="Keep a random sample of this many objects, chosen by --seed.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of --sample and --split.")] = 0,
    split: Annotated[
        str | None,
        typer.Option(
            help="Write one manifest per split, e.g. train=0.8,validation=0.2; an object's split "
            "depends only on its key and --seed, so adding objects never moves one.",
            metavar="NAME=FRACTION,...",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Threads for --probe.")] = manifest.DEFAULT_WORKERS,
    from_inventory: Annotated[
        str | None,
        typer.Option(
            help="Read the objects from this S3 Inventory report (its manifest.json; CSV, Parquet or ORC) "
            "instead of listing the bucket.",
            metavar="MANIFEST_JSON",
        ),
    ] = None,
) -> None:
    """Build input manifests from the images under SOURCE, listing it once and downloading nothing.

    With --from-inventory, the objects come from an S3 Inventory report instead of a listing; filters,
    splits, de-duplication and outputs are the same.

    Skipped objects go to skipped.jsonl with a reason: extension, excluded, empty, too_large, duplicate,
    and with --probe also vanished, access_denied, unreadable, too_small, too_many_pixels.
    """
    st = state(ctx)
    output = st.output
    if min_side is not None and not probe:
        output.info("--min-side needs image sizes: probing each image's header (--probe)")
        probe = True
    try:
        exclude_pattern = re.compile(exclude) if exclude is not None else None
    except re.error as exc:
        raise UsageError(f"--exclude: not a regular expression: {exc}") from None
    options = manifest.BuildOptions(
        extensions=manifest.parse_extensions(include_ext),
        exclude=exclude_pattern,
        max_bytes=None if max_bytes.strip().lower() in ("off", "0") else manifest.parse_size(max_bytes),
        min_side=min_side,
        probe=probe,
        dedupe=dedupe is Dedupe.etag,
        limit=limit,
        sample=sample,
        seed=seed,
        splits=manifest.parse_splits(split) if split else (),
        workers=workers,
    )
    dest = manifest.plan_destination(out, [name for name, _ in options.splits], st.session)
    inventory = manifest.open_inventory(from_inventory, st.session) if from_inventory is not None else None
    if inventory is not None:
        source = source or f"s3://{inventory.manifest.sourceBucket}/"
        if not source.startswith("s3://"):
            raise UsageError("--from-inventory: SOURCE must be s3://BUCKET/PREFIX, the bucket it lists")
        if options.dedupe and not inventory.has_etag:
            output.warn("the inventory has no ETag column, so --dedupe etag finds no duplicates")
    elif source is None:
        raise UsageError("missing SOURCE", hint="give s3://BUCKET/PREFIX or a folder, or --from-inventory")
    store = _source_store(source, st.session, workers)
    # Probing reads image headers from the bucket itself, whichever way the objects were found.
    objects = inventory.objects(store) if inventory is not None else None
    reading = "listing" if objects is None else "reading the inventory"
    with output.progress(reading + (" and probing" if probe else ""), total=None) as bar:
        report = manifest.build_manifest(store, dest, options, objects=objects, on_object=bar.advance)
    _print_build(output, report)
    if report.accepted == 0:
        raise InputError(
            "no object passed the filters; the manifest is empty",
            hint=f"{report.skipped_uri} says why each object was skipped",
        )


def _source_store(uri: str, session, workers: int) -> ObjectStore:
    store = open_store(uri, session)
    if isinstance(store, S3Store):
        # One connection per probing thread: with botocore's default pool of 10, the other threads
        # would wait, and urllib3 would warn about discarded connections.
        s3 = client("s3", session, config_kwargs={"max_pool_connections": workers})
        return S3Store(store.bucket, store.prefix, s3)
    return store


def _print_build(out: Output, report: manifest.BuildReport) -> None:
    result = report.as_dict()
    if out.json:
        out.data(result)
        return
    out.table(
        result["manifests"], columns=["split", "objects", "uri"], title=f"{report.listed} objects listed"
    )
    reasons = [
        {"reason": reason, "objects": count, "meaning": manifest.SKIP_REASONS[reason]}
        for reason, count in result["skipped"]["by_reason"].items()
        if count
    ]
    if reasons:
        out.table(reasons, columns=["reason", "objects", "meaning"], title=f"skipped: {report.skipped_uri}")
    if report.sampled_out:
        out.info(f"{report.sampled_out} objects left out of the sample")
    for entry in result["manifests"]:
        if entry["objects"] == 0 and report.accepted:
            out.warn(f"split {entry['split']} got no objects")


@app.command()
def check(
    ctx: typer.Context,
    manifests: Annotated[
        list[str],
        typer.Argument(
            help="Manifests (s3:// or paths); several are taken as the splits of one dataset.",
            metavar="MANIFEST",
        ),
    ],
    verify_objects: Annotated[
        bool, typer.Option("--verify-objects", help="Check that every source-ref object exists (HEAD each).")
    ] = False,
    workers: Annotated[int, typer.Option(help="Threads for --verify-objects.")] = manifest.DEFAULT_WORKERS,
) -> None:
    """Check every line of each MANIFEST; on labeled (augmented) manifests, report the dataset's health.

    Errors read FILE:LINE: MESSAGE. Exit status 1 if any line has an error.
    """
    st = state(ctx)
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
    opened = [(name, *open_object(name, st.session)) for name in manifests]
    verify = manifest.object_checker(st.session, workers) if verify_objects else None
    with st.output.progress("checking", total=None) as bar:
        report = manifest.check_manifests(opened, verify=verify, workers=workers, on_line=bar.advance)
    _print_check(st.output, report)
    if report.error_count:
        raise typer.Exit(1)


def _print_check(out: Output, report: manifest.CheckReport) -> None:
    if out.json:
        out.data(report.as_dict())
        return
    for message in report.errors:
        out.error(message)
    if report.error_count > len(report.errors):
        out.error(f"... and {report.error_count - len(report.errors)} more errors")
    for message in report.warnings:
        out.warn(message)
    out.table(report.manifests, columns=["manifest", "lines", "objects"])
    if report.splits:
        out.table([{"split": k, "objects": v} for k, v in report.splits.items()], title="splits")
    for health in report.health:
        summary = {k: v for k, v in health.items() if k not in ("labels", "balance")}
        balance = health["balance"]
        if balance:
            flag = ", below 1:2" if balance["below_1_to_2"] else ""
            summary["balance"] = (
                f"{balance['ratio']:.2f} ({balance['rarest']} / {balance['most_common']}, by images{flag})"
            )
        out.data(summary, title=f"dataset health: {health['label_attribute']}")
        out.table(health["labels"], columns=["label", "images", "boxes"])
    if report.error_count:
        out.error(f"{report.error_count} error(s)")
    else:
        out.info("no errors")

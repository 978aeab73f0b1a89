"""How fast `manifest build` is against the floor set by S3 itself, on a loopback moto S3 server.

Three comparisons, each side timed best-of-N, interleaved:

1. Build without probing vs a bare `list_objects_v2` paginator loop over the same objects: what the
   builder adds to the listing it cannot avoid (target: build / listing <= 1.3).
2. Build with `--probe` (a ranged GET of each image's first 64 KiB) vs listing and downloading every
   image whole, on the same number of threads (target: probing at least 5x faster).
3. Build from an S3 Inventory report (CSV, and Parquet) vs the listed build of the same bucket
   (target: at least 10x faster), at `--inventory-listed` objects; then the inventory builds alone
   at `--inventory` objects, with the peak memory of a `--dedupe none` build at both sizes. The
   bucket is filled inside the server process, not by PutObject, and reports are written as
   tests.fakes.s3_inventory writes them, which needs running as a module.

The moto server runs in a child process, so its CPU does not share this process's GIL. Run:

    .venv/bin/python -m benchmarks.manifest_build                              # the full run
    .venv/bin/python -m benchmarks.manifest_build --objects 5000 --images 300 --inventory 0  # a smoke run
    .venv/bin/python -m benchmarks.manifest_build --objects 0 --images 0       # inventory only
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

BUCKET = "labeljob-bench"
INVENTORIED = "labeljob-bench-inventoried"  # filled in the server process for the inventory comparison


def small_object(i: int) -> tuple[str, bytes]:
    return f"listing/{i % 100:02d}/img_{i:07d}.jpg", b"object %d" % i


def serve(port_out, inventoried: int) -> None:
    """Child process: a moto S3 on a free loopback port, until the parent ends it; `inventoried` small
    objects are put in INVENTORIED straight into moto's backend, a hundred times faster than PutObject."""
    import logging

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    if inventoried:
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        backend.create_bucket(INVENTORIED, "us-east-1")
        for i in range(inventoried):
            backend.put_object(INVENTORIED, *small_object(i))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port_out.put(server.get_host_and_port()[1])
    multiprocessing.Event().wait()


def start_server(inventoried: int = 0) -> tuple[multiprocessing.Process, str]:
    ports: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=serve, args=(ports, inventoried), daemon=True)
    process.start()
    return process, f"http://127.0.0.1:{ports.get(timeout=3600)}"


def base_images(count: int, width: int) -> list[bytes]:
    """Noise images: JPEGs 80-100% of `width` wide (4:3), and every fourth a PNG half as wide. Noise does
    not compress, so each file is as large as a photo of its size: 800 px gives ~350 KiB on average,
    2400 px ~3 MiB, a phone photo's size."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(count):
        w = width // 2 if i % 4 == 3 else width * (8 + i % 3) // 10
        pixels = rng.integers(0, 255, (w * 3 // 4, w, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG" if i % 4 == 3 else "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def upload(client, keys_and_bodies: list[tuple[str, bytes]], threads: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda kb: client.put_object(Bucket=BUCKET, Key=kb[0], Body=kb[1]), keys_and_bodies))
    return time.perf_counter() - start


def best_of(repeat: int, runs: dict[str, Callable[[], int]]) -> dict[str, tuple[float, float, int]]:
    """(best, median, count) seconds of each run, running them in turn `repeat` times."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    counts: dict[str, int] = {}
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            counts[name] = run()
            times[name].append(time.perf_counter() - start)
    return {name: (min(t), statistics.median(t), counts[name]) for name, t in times.items()}


def row(what: str, result: tuple[float, float, int], extra: str = "") -> str:
    best, median, count = result
    return f"| {what} | {count:,} | {best:.2f} | {median:.2f} | {best / count * 1e6:,.0f} | {extra} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=100_000, help="small objects to list; 0 skips")
    parser.add_argument("--images", type=int, default=5_000, help="images to probe; 0 skips")
    parser.add_argument("--image-width", type=int, default=800, help="widest JPEG, px (800: ~350 KiB)")
    parser.add_argument("--workers", type=int, default=16, help="threads for probing and for downloads")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; the best counts")
    parser.add_argument(
        "--inventory-listed", type=int, default=100_000, help="objects of the inventory vs listing run"
    )
    parser.add_argument("--inventory", type=int, default=1_000_000, help="objects of the inventory-only run")
    args = parser.parse_args()

    inventoried = args.inventory_listed if args.inventory else 0
    start = time.perf_counter()
    server, endpoint = start_server(inventoried)
    print(f"put {inventoried:,} objects in moto in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    # Everything below talks to the loopback server only, with throwaway credentials.
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ENDPOINT_URL_S3=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    import boto3

    from orchestrator.aws import client as make_client
    from orchestrator.manifest import HEADER_BYTES, BuildOptions, Destination, build_manifest, sniff
    from orchestrator.storage import S3Store

    s3 = make_client("s3", boto3.Session(), config_kwargs={"max_pool_connections": max(32, args.workers)})
    s3.create_bucket(Bucket=BUCKET)
    out_store = S3Store(BUCKET, "manifests", s3)

    def build(prefix: str, probe: bool) -> int:
        dest = Destination(out_store, {"input": f"{prefix}.manifest"}, f"{prefix}.skipped.jsonl")
        options = BuildOptions(probe=probe, workers=args.workers)
        return build_manifest(S3Store(BUCKET, prefix, s3), dest, options).accepted

    def bare_listing() -> int:
        count = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="listing/"):
            count += len(page.get("Contents", ()))
        return count

    def list_and_get(byte_range: str | None) -> int:
        """List the images and GET each (whole, or one range) on the same threads as the probe."""
        keys = [obj.key for obj in S3Store(BUCKET, "images", s3).list()]
        extra = {"Range": byte_range} if byte_range else {}

        def fetch(key: str) -> bool:
            body = s3.get_object(Bucket=BUCKET, Key=f"images/{key}", **extra)["Body"].read()
            return sniff(body) is not None

        with ThreadPoolExecutor(args.workers) as pool:
            return sum(pool.map(fetch, keys))

    table = [
        f"| run (best of {args.repeat}) | objects | best s | median s | µs / object | |",
        "|---|---:|---:|---:|---:|---|",
    ]
    ratios = ["| ratio | value | target |", "|---|---:|---|"]
    if args.objects:
        small = [(f"listing/{i % 100:02d}/img_{i:07d}.jpg", b"object %d" % i) for i in range(args.objects)]
        seconds = upload(s3, small, threads=32)
        print(f"uploaded {args.objects:,} small objects in {seconds:.0f} s", file=sys.stderr)
        runs = best_of(args.repeat, {"list": bare_listing, "build": lambda: build("listing", False)})
        assert runs["list"][2] == runs["build"][2] == args.objects, runs
        added = (runs["build"][0] - runs["list"][0]) / args.objects * 1e6
        table += [
            row("bare `list_objects_v2` paginator loop", runs["list"]),
            row(
                "`manifest build`, no probe (manifest put to S3)",
                runs["build"],
                f"adds {added:.0f} µs/object",
            ),
        ]
        ratios.append(f"| build / listing | {runs['build'][0] / runs['list'][0]:.2f} | <= 1.3 |")
    if args.images:
        bases = base_images(16, args.image_width)
        # A distinct trailer after the image data (decoders ignore it) gives each object its own ETag.
        images = [
            (f"images/img_{i:05d}.{'png' if i % 4 == 3 else 'jpg'}", bases[i % 16] + b"labeljob-%d" % i)
            for i in range(args.images)
        ]
        seconds = upload(s3, images, threads=32)
        mean = sum(len(body) for _, body in images) / len(images)
        print(f"uploaded {args.images:,} images of {mean / 1024:.0f} KiB in {seconds:.0f} s", file=sys.stderr)
        runs = best_of(
            args.repeat,
            {
                "whole": lambda: list_and_get(None),
                "range": lambda: list_and_get(f"bytes=0-{HEADER_BYTES - 1}"),
                "probe": lambda: build("images", True),
            },
        )
        assert runs["whole"][2] == runs["range"][2] == runs["probe"][2] == args.images, runs
        table += [
            row(
                f"list + GET every image whole, {args.workers} threads",
                runs["whole"],
                f"{mean / 1024:,.0f} KiB/image",
            ),
            row(
                f"list + ranged GET of the first 64 KiB, bare loop, {args.workers} threads",
                runs["range"],
                "the floor for probing",
            ),
            row(
                f"`manifest build --probe`, {args.workers} threads",
                runs["probe"],
                f"{min(mean, HEADER_BYTES) / 1024:,.0f} KiB/image",
            ),
        ]
        ratios += [
            f"| whole downloads / probing, time | {runs['whole'][0] / runs['probe'][0]:.1f}x | >= 5x |",
            f"| whole downloads / probing, bytes | {mean / min(mean, HEADER_BYTES):.1f}x | |",
        ]
    if args.inventory:
        table, ratios = compare_inventory(s3, args, table, ratios)
    print("\n".join([*table, "", *ratios]))
    server.terminate()
    server.join()


def compare_inventory(s3, args, table: list[str], ratios: list[str]) -> tuple[list[str], list[str]]:
    """Builds from CSV and Parquet reports against the listed build; the inventory builds at full size."""
    import hashlib
    import tracemalloc

    import boto3

    from orchestrator.manifest import BuildOptions, Destination, build_manifest, open_inventory
    from orchestrator.storage import S3Store
    from tests.fakes.s3_inventory import write_inventory

    reports, alone = "labeljob-bench-reports", "labeljob-bench-unlisted"
    s3.create_bucket(Bucket=reports)
    s3.create_bucket(Bucket=alone)  # the large report's bucket: without --probe it is never read
    out_store = S3Store(reports, "manifests", s3)

    def write(bucket: str, count: int, fmt: str) -> str:
        rows = []
        for i in range(count):
            key, body = small_object(i)
            rows.append({"Key": key, "Size": len(body), "ETag": hashlib.md5(body).hexdigest()})
        files = max(1, count // 250_000)
        return write_inventory(s3, rows, source_bucket=bucket, dest_bucket=reports, fmt=fmt, files=files)

    def build(bucket: str, name: str, manifest_json: str | None = None, dedupe: bool = True) -> int:
        source = S3Store(bucket, "listing", s3)
        dest = Destination(out_store, {"input": f"{name}.manifest"}, f"{name}.skipped.jsonl")
        objects = open_inventory(manifest_json, boto3.Session()).objects(source) if manifest_json else None
        return build_manifest(source, dest, BuildOptions(dedupe=dedupe), objects=objects).accepted

    def peak_mib(bucket: str, manifest_json: str) -> float:
        tracemalloc.start()
        build(bucket, "peak", manifest_json, dedupe=False)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak / 2**20

    listed, count = args.inventory_listed, args.inventory
    start = time.perf_counter()
    small = {fmt: write(INVENTORIED, listed, fmt) for fmt in ("CSV", "Parquet")}
    large = {fmt: write(alone, count, fmt) for fmt in ("CSV", "Parquet")}
    print(f"wrote the reports in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    runs = best_of(
        args.repeat,
        {
            "listed": lambda: build(INVENTORIED, "listed"),
            "csv": lambda: build(INVENTORIED, "csv", small["CSV"]),
            "parquet": lambda: build(INVENTORIED, "parquet", small["Parquet"]),
        },
    )
    assert runs["listed"][2] == runs["csv"][2] == runs["parquet"][2] == listed, runs
    assert (
        out_store.get("csv.manifest") == out_store.get("parquet.manifest") == out_store.get("listed.manifest")
    )
    peaks = {listed: peak_mib(INVENTORIED, small["CSV"]), count: peak_mib(alone, large["CSV"])}
    big = best_of(
        args.repeat, {fmt: lambda fmt=fmt: build(alone, fmt, large[fmt]) for fmt in ("CSV", "Parquet")}
    )
    assert big["CSV"][2] == big["Parquet"][2] == count, big
    table += [
        row("`manifest build`, listed (manifest put to S3)", runs["listed"]),
        row("`manifest build --from-inventory`, CSV report", runs["csv"], f"peak {peaks[listed]:.0f} MiB"),
        row("`manifest build --from-inventory`, Parquet report", runs["parquet"]),
        row("`manifest build --from-inventory`, CSV report", big["CSV"], f"peak {peaks[count]:.0f} MiB"),
        row("`manifest build --from-inventory`, Parquet report", big["Parquet"]),
    ]
    for fmt in ("csv", "parquet"):
        ratios.append(
            f"| listed / inventory ({fmt}), time | {runs['listed'][0] / runs[fmt][0]:.1f}x | >= 10x |"
        )
    return table, ratios


if __name__ == "__main__":
    main()

"""Input manifests: build them from a bucket, read and write JSON Lines, check them, report dataset health.

A manifest is JSON Lines, one `{"source-ref": URI, ...}` object a line (design.md, data contracts).

Building lists SOURCE (`s3://bucket/prefix` or a folder) once, in key order, and decides for each
object, in this order, whether it is skipped and why: extension, excluded, empty, too_large, duplicate;
then, with probing, vanished, access_denied, unreadable, too_small, too_many_pixels. Nothing is
downloaded without `probe`; with it, only each image's first bytes are. Lines are streamed to
temporary files and each file is put into DEST in one atomic write at the end, so memory does not grow
with the number of objects, except for the ETags kept for de-duplication (about 200 bytes an object;
`dedupe=False` keeps memory flat) and the `sample` objects kept for sampling.

DEST is a folder or prefix that receives `input.manifest` (or `<split>.manifest` per split) and
`skipped.jsonl`; or, when it ends in `.manifest`, the one manifest file itself, with
`<name>.skipped.jsonl` beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import mmap
import posixpath
import re
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlparse

from orchestrator import images
from orchestrator.errors import AccessDenied, InputError, NotFound, UsageError
from orchestrator.storage import (
    ObjectInfo,
    ObjectStore,
    S3Store,
    is_s3_uri,
    open_object,
    open_store,
    split_s3_uri,
)

if TYPE_CHECKING:
    import boto3

T = TypeVar("T")
R = TypeVar("R")

MANIFEST_CONTENT_TYPE = "application/x-ndjson"
DEFAULT_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "bmp"})
DEFAULT_MAX_BYTES = 6 * 1024 * 1024
DEFAULT_WORKERS = 16
NO_SPLIT = "input"
# Ground Truth refuses images over 100 megapixels (reference/groundtruth.md section 8).
MAX_PIXELS = 100_000_000
# A header that needs more than this is not worth fetching: no real image keeps its size that far in.
MAX_HEADER_BYTES = 4 * 1024 * 1024

SKIP_REASONS = {
    "extension": "the name does not end in one of the included extensions",
    "excluded": "the key matches the exclude pattern",
    "empty": "the object has zero bytes",
    "too_large": "the object is larger than the size limit",
    "duplicate": "the object has the same ETag as an earlier one",
    "vanished": "the object was deleted between the listing and the probe",
    "access_denied": "the probe may not read the object",
    "unreadable": "the header is not that of a JPEG, PNG, BMP, GIF or WebP image",
    "too_small": "the shorter side is under the minimum side",
    "too_many_pixels": "the image has more than 100 megapixels, Ground Truth's limit",
}

# Dataset health thresholds.
MIN_IMAGES_PER_LABEL = 50
MIN_LABEL_BALANCE = 0.5
MIN_IMAGE_SIDE = 256
MIN_BOX_WIDTH = 30

# Ground Truth's limits on an input manifest (reference/groundtruth.md section 8).
GT_MAX_LINE_CHARS = 100_000
GT_MAX_OBJECTS = 100_000

_READ_CHUNK = 8 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]+")
_MAX_KEPT_MESSAGES = 1000
# Not a skip reason: an object left out of --sample is counted, not listed in skipped.jsonl.
_SAMPLED_OUT = "sampled_out"


# ------------------------------------------------------------------------------ JSON Lines


def read_lines(store: ObjectStore, key: str) -> Iterator[tuple[int, bytes]]:
    """The lines of a text object, numbered from 1, without their line ends; read in 8 MiB ranges.

    Raises NotFound or AccessDenied from the store.
    """
    offset, number, pending = 0, 0, b""
    while True:
        chunk = store.get_range(key, offset, _READ_CHUNK)
        offset += len(chunk)
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            number += 1
            yield number, line.removesuffix(b"\r")
        if len(chunk) < _READ_CHUNK:
            break
    if pending:
        yield number + 1, pending.removesuffix(b"\r")


def parse_line(raw: bytes, *, first: bool = False) -> dict[str, Any] | None:
    """One manifest line as an object with a well-formed `source-ref`; None for a blank line.

    Raises ValueError saying what is wrong, without the file and line, which the caller knows.
    """
    if first:
        raw = raw.removeprefix(_BOM)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start + 1})") from None
    if not text.strip():
        return None
    try:
        row = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(row, dict):
        raise ValueError(f"a line must be a JSON object, not {_json_type(row)}")
    if "source-ref" not in row:
        raise ValueError('no "source-ref" key')
    problem = source_ref_problem(row["source-ref"])
    if problem:
        raise ValueError(problem)
    return row


def read_manifest(
    store: ObjectStore, key: str, *, name: str | None = None, errors: list[InputError] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The manifest's objects with their line numbers, streamed; blank lines are skipped.

    A bad line raises `InputError("<name>:<line>: ...")`, `name` defaulting to the manifest's URI; or,
    when `errors` is a list, the error is appended to it and the line skipped, so that one pass can
    report every bad line.
    """
    name = name or store.uri(key)
    for number, raw in read_lines(store, key):
        try:
            row = parse_line(raw, first=number == 1)
        except ValueError as exc:
            error = InputError(f"{name}:{number}: {exc}")
            if errors is None:
                raise error from None
            errors.append(error)
            continue
        if row is not None:
            yield number, row


def json_line(row: dict[str, Any]) -> bytes:
    """One JSON Lines line, UTF-8, ending in a newline."""
    return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")


def write_jsonl(store: ObjectStore, key: str, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON Lines through a temporary file, in one atomic put; returns the line count."""
    with _Spool() as spool:
        for row in rows:
            spool.write(row)
        spool.put(store, key)
        return spool.lines


class _Spool:
    """JSON Lines collected in a temporary file, then put into a store in one piece."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile()
        self.lines = 0

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.file.close()

    def write(self, row: dict[str, Any]) -> None:
        self.file.write(json_line(row))
        self.lines += 1

    def put(self, store: ObjectStore, key: str) -> None:
        self.file.flush()
        if self.file.tell() == 0:
            store.put(key, b"", MANIFEST_CONTENT_TYPE)
            return
        # The store reads the file through a memory map, which the OS pages in and out: the
        # manifest is never copied into this process's memory whole.
        with mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ) as view:
            store.put(key, view, MANIFEST_CONTENT_TYPE)  # type: ignore[arg-type]


def _reject_constant(name: str) -> None:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


# ---------------------------------------------------------------------------------- source-ref


def source_ref_problem(value: object) -> str | None:
    """What is wrong with a `source-ref` value, or None if it is `s3://BUCKET/KEY` or `file:///PATH`."""
    if not isinstance(value, str):
        return f'"source-ref" must be a string, not {_json_type(value)}'
    if value != value.strip():
        return f'"source-ref" {value!r} has leading or trailing spaces'
    if value.startswith("s3://"):
        bucket, key = split_s3_uri(value)
        if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
            return f'"source-ref" {value!r}: {bucket!r} is not a valid S3 bucket name'
        if not key or key.endswith("/"):
            return f'"source-ref" {value!r} names no object; write s3://BUCKET/KEY'
        return None
    if value.startswith("file://"):
        parsed = urlparse(value)
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/") or value.endswith("/"):
            return f'"source-ref" {value!r} is not a file:///PATH URI'
        return None
    return f'"source-ref" {value!r} is not an s3:// or file:// URI'


def object_checker(
    boto3_session: boto3.Session | None = None, workers: int = DEFAULT_WORKERS
) -> Callable[[str], str | None]:
    """A function telling whether the object behind a well-formed `source-ref` exists: None, or the problem.

    It is safe to call from several threads at once.
    """
    from orchestrator.aws import client

    # One connection per thread; botocore's default pool of 10 would make the others wait.
    s3 = client("s3", boto3_session, config_kwargs={"max_pool_connections": workers})

    def check(uri: str) -> str | None:
        if uri.startswith("file://"):
            path = Path(unquote(urlparse(uri).path))
            return None if path.is_file() else f"{uri}: no such file"
        bucket, key = split_s3_uri(uri)
        try:
            S3Store(bucket, "", s3).head(key)
        except NotFound:
            return f"{uri}: no such object (or no such bucket)"
        except AccessDenied:
            return f"{uri}: access denied"
        return None

    return check


# ---------------------------------------------------------------------------------- building


@dataclass(frozen=True)
class BuildOptions:
    """What to put in the manifest; see `labeljob manifest build --help` for each option."""

    extensions: frozenset[str] = DEFAULT_EXTENSIONS
    exclude: re.Pattern[str] | None = None
    max_bytes: int | None = DEFAULT_MAX_BYTES
    min_side: int | None = None
    probe: bool = False
    dedupe: bool = True
    limit: int | None = None
    sample: int | None = None
    seed: int = 0
    splits: tuple[tuple[str, float], ...] = ()
    workers: int = DEFAULT_WORKERS

    def __post_init__(self) -> None:
        if not self.extensions:
            raise UsageError("--include-ext names no extension")
        if self.min_side is not None and not self.probe:
            raise UsageError("--min-side needs image sizes, so it needs --probe")
        if self.limit is not None and self.sample is not None:
            raise UsageError(
                "--limit and --sample cannot be combined", hint="--sample picks from all objects"
            )
        for flag, value in (
            ("--max-bytes", self.max_bytes),
            ("--min-side", self.min_side),
            ("--limit", self.limit),
            ("--sample", self.sample),
            ("--workers", self.workers),
        ):
            if value is not None and value < 1:
                raise UsageError(f"{flag} must be at least 1, not {value}")


def parse_extensions(text: str) -> frozenset[str]:
    """`"jpg, .PNG"` -> {"jpg", "png"}."""
    return frozenset(part.strip().lstrip(".").lower() for part in text.split(",") if part.strip(" ."))


def parse_splits(text: str) -> tuple[tuple[str, float], ...]:
    """`"train=0.8,validation=0.2"` -> (("train", 0.8), ("validation", 0.2)); fractions must sum to 1."""
    splits: list[tuple[str, float]] = []
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not _SPLIT_NAME.fullmatch(name):
            raise UsageError(
                f"--split: {part.strip()!r} is not NAME=FRACTION", hint="e.g. train=0.8,validation=0.2"
            )
        try:
            fraction = float(value)
        except ValueError:
            raise UsageError(f"--split: {value.strip()!r} is not a number") from None
        if not 0 < fraction <= 1:
            raise UsageError(f"--split: the fraction of {name!r} must be above 0 and at most 1")
        if name in dict(splits):
            raise UsageError(f"--split names {name!r} twice")
        splits.append((name, fraction))
    total = sum(fraction for _, fraction in splits)
    if abs(total - 1) > 1e-6:
        raise UsageError(f"--split: the fractions sum to {total:g}, not 1")
    return tuple(splits)


def parse_size(text: str) -> int:
    """`"6MB"`, `"512k"`, `"1048576"` -> bytes; K, M and G are powers of 1024."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not match:
        raise UsageError(
            f"--max-bytes: {text!r} is not a size", hint="write bytes, or a number with K, M or G, e.g. 6MB"
        )
    number, unit = match.groups()
    return int(float(number) * 1024 ** " kmg".index(unit.lower() or " "))


def assign_split(key: str, splits: tuple[tuple[str, float], ...], seed: int = 0) -> str:
    """The split of the object at `key`, from a hash of the seed and the key alone.

    Adding or removing other objects never moves this one; changing a fraction moves only objects
    near the boundaries it shifts.
    """
    point = _hash64("split", seed, key) / 2**64
    cumulative = 0.0
    for name, fraction in splits:
        cumulative += fraction
        if point < cumulative:
            return name
    return splits[-1][0]  # the fractions summed to a hair under 1


def _hash64(domain: str, seed: int, key: str) -> int:
    # Each use gets its own domain, so the sample is not correlated with the split.
    digest = hashlib.sha256(f"{domain}\0{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def probe_image(store: ObjectStore, key: str, size: int) -> images.ImageHeader | None:
    """The format and size of the image at `key` from a ranged GET of its first bytes; None if not an image.

    Fetches 64 KiB, and more only for a JPEG that keeps its frame header further in.
    """
    head = store.get_range(key, 0, min(images.HEADER_BYTES, size))
    while True:
        try:
            return images.sniff(head)
        except images.NeedMoreBytes as more:
            if more.needed > min(size, MAX_HEADER_BYTES):
                return None  # the file, or any sane header, ends before the size does
            extra = store.get_range(key, len(head), max(more.needed - len(head), images.HEADER_BYTES))
            if not extra:
                return None
            head += extra


@dataclass(frozen=True)
class Destination:
    """Where a build writes: the manifest key of each split, and the key of the skipped list."""

    store: ObjectStore
    manifests: dict[str, str]
    skipped: str


def plan_destination(
    dest: str, split_names: Iterable[str] = (), boto3_session: boto3.Session | None = None
) -> Destination:
    """DEST as a folder/prefix (`<split>.manifest`, `skipped.jsonl`) or, ending in `.manifest`, one file."""
    names = list(split_names)
    if dest.endswith(".manifest"):
        if names:
            raise UsageError(
                "--split writes one manifest per split, so --out must be a folder or prefix",
                hint=f"e.g. --out {posixpath.dirname(dest) or '.'}",
            )
        store, key = open_object(dest, boto3_session)
        return Destination(store, {NO_SPLIT: key}, key.removesuffix(".manifest") + ".skipped.jsonl")
    store = open_store(dest, boto3_session)
    return Destination(store, {name: f"{name}.manifest" for name in names or [NO_SPLIT]}, "skipped.jsonl")


@dataclass
class BuildReport:
    """What a build wrote: objects per split and skipped objects per reason."""

    source: str
    manifests: dict[str, str]
    skipped_uri: str
    objects: dict[str, int] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    listed: int = 0
    sampled_out: int = 0

    @property
    def accepted(self) -> int:
        return sum(self.objects.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "listed": self.listed,
            "accepted": self.accepted,
            "manifests": [
                {"split": name, "objects": self.objects.get(name, 0), "uri": uri}
                for name, uri in self.manifests.items()
            ],
            "skipped": {
                "uri": self.skipped_uri,
                "total": sum(self.skipped.values()),
                "by_reason": {reason: self.skipped[reason] for reason in SKIP_REASONS},
            },
            "sampled_out": self.sampled_out,
        }


@dataclass
class _Candidate:
    index: int
    info: ObjectInfo
    reason: str | None = None
    detail: str = ""
    duplicate_of: str | None = None
    header: images.ImageHeader | None = None
    rank: int = 0

    def skip(self, reason: str, detail: str) -> _Candidate:
        self.reason, self.detail = reason, detail
        return self

    def manifest_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"source-ref": self.info.uri}
        if self.header:
            row["width"], row["height"] = self.header.width, self.header.height
        return row

    def skipped_row(self) -> dict[str, Any]:
        row = {
            "source-ref": self.info.uri,
            "reason": self.reason,
            "detail": self.detail,
            "size": self.info.size,
        }
        if self.duplicate_of:
            row["duplicate_of"] = self.duplicate_of
        return row


class _Sample:
    """The `size` objects of smallest rank seen so far (a bottom-k sample): order-free and seeded."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.heap: list[tuple[int, int, _Candidate]] = []  # (-rank, -index, candidate): max-heap by rank

    def admits(self, rank: int) -> bool:
        return len(self.heap) < self.size or rank < -self.heap[0][0]

    def offer(self, cand: _Candidate) -> bool:
        """Keep `cand`; True if that pushed another object out."""
        heapq.heappush(self.heap, (-cand.rank, -cand.index, cand))
        if len(self.heap) > self.size:
            heapq.heappop(self.heap)
            return True
        return False

    def in_listing_order(self) -> list[_Candidate]:
        return sorted((entry[2] for entry in self.heap), key=lambda cand: cand.index)


class _Screen:
    """The decisions taken in listing order, before any probe: the cheap filters and de-duplication."""

    def __init__(self, options: BuildOptions, sample: _Sample | None) -> None:
        self.options = options
        self.sample = sample
        self.first_with_etag: dict[str, str] = {}
        self.sampled_out = 0

    def __call__(self, index: int, info: ObjectInfo) -> _Candidate:
        opts = self.options
        cand = _Candidate(index, info)
        extension = posixpath.splitext(info.key)[1][1:].lower()
        if extension not in opts.extensions:
            return cand.skip("extension", f"extension {extension or '(none)'!r} is not included")
        if opts.exclude and opts.exclude.search(info.key):
            return cand.skip("excluded", f"matches --exclude {opts.exclude.pattern!r}")
        if info.size == 0:
            return cand.skip("empty", "0 bytes")
        if opts.max_bytes is not None and info.size > opts.max_bytes:
            return cand.skip("too_large", f"{info.size} bytes, over the limit of {opts.max_bytes}")
        if opts.dedupe and info.etag:
            first = self.first_with_etag.get(info.etag)
            if first is not None:
                cand.duplicate_of = first
                return cand.skip("duplicate", f"same ETag {info.etag} as {first}")
            self.first_with_etag[info.etag] = info.uri
        if self.sample is not None:
            cand.rank = _hash64("sample", opts.seed, info.key)
            # The sample's bar only drops as objects come in: an object above it now never gets
            # in, so it is not worth probing.
            if not self.sample.admits(cand.rank):
                self.sampled_out += 1
                cand.reason = _SAMPLED_OUT
        return cand


def _probe(store: ObjectStore, options: BuildOptions, cand: _Candidate) -> _Candidate:
    """Read the header of a candidate that passed the screen; runs on a worker thread."""
    if cand.reason:
        return cand
    try:
        header = probe_image(store, cand.info.key, cand.info.size)
    except NotFound:
        return cand.skip("vanished", "deleted after the listing")
    except AccessDenied as exc:
        return cand.skip("access_denied", exc.message)
    if header is None:
        return cand.skip("unreadable", "not a JPEG, PNG, BMP, GIF or WebP image by its header")
    size = f"{header.format} {header.width}x{header.height}"
    if options.min_side is not None and min(header.width, header.height) < options.min_side:
        return cand.skip("too_small", f"{size}, a side under {options.min_side} px")
    if header.width * header.height > MAX_PIXELS:
        return cand.skip("too_many_pixels", f"{size}, over {MAX_PIXELS} pixels")
    cand.header = header
    return cand


def build_manifest(
    source: ObjectStore,
    dest: Destination,
    options: BuildOptions,
    *,
    on_object: Callable[[], None] | None = None,
) -> BuildReport:
    """List `source` once and write the manifest(s) and the skipped list to `dest`.

    `on_object` is called once per listed object (for a progress bar). Raises InputError if `source`
    holds no object at all; then nothing is written.
    """
    split_names = [name for name, _ in options.splits] or [NO_SPLIT]
    report = BuildReport(
        source=source.root_uri,
        manifests={name: dest.store.uri(dest.manifests[name]) for name in split_names},
        skipped_uri=dest.store.uri(dest.skipped),
        objects=dict.fromkeys(split_names, 0),
    )
    if is_s3_uri(dest.store.root_uri):
        # A missing bucket or a denied listing shows now rather than after a long listing of SOURCE.
        next(iter(dest.store.list(posixpath.dirname(dest.skipped))), None)

    sample = _Sample(options.sample) if options.sample is not None else None
    screen = _Screen(options, sample)
    candidates: Iterator[_Candidate] = (screen(i, info) for i, info in enumerate(source.list()))
    if options.probe:
        candidates = _in_order(lambda cand: _probe(source, options, cand), candidates, options.workers)

    with contextlib.ExitStack() as stack:
        manifests = {name: stack.enter_context(_Spool()) for name in split_names}
        skipped = stack.enter_context(_Spool())

        def write(cand: _Candidate) -> None:
            name = assign_split(cand.info.key, options.splits, options.seed) if options.splits else NO_SPLIT
            manifests[name].write(cand.manifest_row())
            report.objects[name] += 1

        with contextlib.closing(candidates):
            for cand in candidates:
                report.listed += 1
                if on_object:
                    on_object()
                if cand.reason == _SAMPLED_OUT:
                    continue
                if cand.reason:
                    skipped.write(cand.skipped_row())
                    report.skipped[cand.reason] += 1
                elif sample is not None:
                    report.sampled_out += sample.offer(cand)
                else:
                    write(cand)
                    if options.limit is not None and report.accepted >= options.limit:
                        break
        if sample is not None:
            for cand in sample.in_listing_order():
                write(cand)
        report.sampled_out += screen.sampled_out

        if report.listed == 0:
            raise InputError(
                f"{source.root_uri}: no objects found",
                hint="check SOURCE; every key under the prefix is listed, folders included",
            )
        for name in split_names:
            manifests[name].put(dest.store, dest.manifests[name])
        skipped.put(dest.store, dest.skipped)
    return report


def _in_order(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """`fn` over `items` on a pool of threads, results in input order, at most 4 x workers in flight."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="labeljob")
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------- checking


@dataclass
class CheckReport:
    """Everything `manifest check` found; `errors` and `warnings` keep the first 1,000 of each."""

    manifests: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    warnings: list[str] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    health: list[dict[str, Any]] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < _MAX_KEPT_MESSAGES:
            self.errors.append(message)

    def warn(self, message: str) -> None:
        if len(self.warnings) < _MAX_KEPT_MESSAGES:
            self.warnings.append(message)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.error_count == 0,
            "manifests": self.manifests,
            "error_count": self.error_count,
            "errors": self.errors,
            "warnings": self.warnings,
            "splits": self.splits,
            "health": self.health,
        }


def check_manifests(
    manifests: Iterable[tuple[str, ObjectStore, str]],
    *,
    verify: Callable[[str], str | None] | None = None,
    workers: int = DEFAULT_WORKERS,
    on_line: Callable[[], None] | None = None,
) -> CheckReport:
    """Check every line of each `(name, store, key)` manifest, and report the health of labeled ones.

    Errors read `<name>:<line>: <message>`; a manifest that cannot be read is one error, and the others
    are still checked. `verify`, from `object_checker`, checks that each object exists, on `workers`
    threads. Split sizes come from a `split` key on the lines or, with several manifests, from their
    file names. Memory grows with the number of lines only by the source-refs kept to find duplicates.
    """
    manifests = list(manifests)
    report = CheckReport()
    first_seen: dict[str, str] = {}
    health: dict[str, _Health] = {}
    splits: Counter[str] = Counter()
    for name, store, key in manifests:
        stats = {"manifest": name, "lines": 0, "objects": 0}
        report.manifests.append(stats)
        file_split = _split_name(name) if len(manifests) > 1 else None
        rows: Iterator[tuple[int, dict[str, Any], str | None]]
        if verify is None:
            rows = (
                (number, row, None)
                for number, row in _checked_lines(name, store, key, stats, report, on_line)
            )
        else:
            rows = _in_order(
                lambda item: (item[0], item[1], verify(item[1]["source-ref"])),
                _checked_lines(name, store, key, stats, report, on_line),
                workers,
            )
        try:
            with contextlib.closing(rows):
                for number, row, missing in rows:
                    where = f"{name}:{number}"
                    stats["objects"] += 1
                    if missing:
                        report.error(f"{where}: {missing}")
                    ref = row["source-ref"]
                    if ref in first_seen:
                        report.error(f"{where}: duplicate source-ref {ref}, first at {first_seen[ref]}")
                    else:
                        first_seen[ref] = where
                    split = row["split"] if isinstance(row.get("split"), str) else file_split
                    if split:
                        splits[split] += 1
                    for attr in label_attributes(row):
                        problem = health.setdefault(attr, _Health(attr)).add(row)
                        if problem:
                            report.error(f"{where}: {attr}{problem}")
        except (NotFound, AccessDenied) as exc:
            report.error(exc.message)
            continue
        if stats["objects"] > GT_MAX_OBJECTS:
            report.warn(f"{name}: {stats['objects']} objects, over Ground Truth's 100,000 per job")
    report.errors.sort(key=_error_order)
    report.splits = dict(sorted(splits.items()))
    report.health = [stats.report() for stats in health.values()]
    return report


def _checked_lines(
    name: str,
    store: ObjectStore,
    key: str,
    stats: dict[str, Any],
    report: CheckReport,
    on_line: Callable[[], None] | None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The well-formed lines of one manifest; the others become errors in `report`."""
    for number, raw in read_lines(store, key):
        stats["lines"] = number
        if on_line:
            on_line()
        if len(raw) > GT_MAX_LINE_CHARS and len(raw.decode("utf-8", "replace")) > GT_MAX_LINE_CHARS:
            report.warn(f"{name}:{number}: longer than Ground Truth's limit of 100,000 characters")
        try:
            row = parse_line(raw, first=number == 1)
        except ValueError as exc:
            report.error(f"{name}:{number}: {exc}")
            continue
        if row is not None:
            yield number, row


def _split_name(name: str) -> str:
    base = posixpath.basename(name.rstrip("/"))
    for suffix in (".manifest", ".jsonl", ".json"):
        base = base.removesuffix(suffix)
    return base


def _error_order(message: str) -> tuple[str, int]:
    # "<name>:<line>: ..." sorts by file, then by line number as a number.
    match = re.match(r"(.*?):(\d+): ", message)
    return (match.group(1), int(match.group(2))) if match else (message, 0)


def label_attributes(row: dict[str, Any]) -> list[str]:
    """The label attributes of an augmented manifest line: `<attr>` with `annotations` and
    `<attr>-metadata` with `class-map`."""
    return [
        attr
        for attr, value in row.items()
        if isinstance(value, dict)
        and "annotations" in value
        and isinstance(row.get(f"{attr}-metadata"), dict)
        and "class-map" in row[f"{attr}-metadata"]
    ]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Health:
    """Per-label counts and quality flags of one label attribute over all lines that carry it."""

    def __init__(self, attr: str) -> None:
        self.attr = attr
        self.images = 0
        self.images_without_boxes = 0
        self.images_without_size = 0
        self.small_images = 0
        self.label_images: Counter[str] = Counter()
        self.label_boxes: Counter[str] = Counter()
        self.narrow_boxes = 0
        self.boxes_outside = 0

    def add(self, row: dict[str, Any]) -> str | None:
        """Count one line; returns what is malformed in it (after the attribute name), or None."""
        value, class_map = row[self.attr], row[f"{self.attr}-metadata"]["class-map"]
        annotations = value["annotations"]
        if not isinstance(class_map, dict):
            return "-metadata.class-map: must be an object"
        if not isinstance(annotations, list):
            return ".annotations: must be an array"
        for i, box in enumerate(annotations):
            if not isinstance(box, dict):
                return f".annotations[{i}]: must be an object"
            for name in ("class_id", "left", "top", "width", "height"):
                if not _number(box.get(name)):
                    return f".annotations[{i}]: {name!r} must be a number"
            if box["width"] < 0 or box["height"] < 0:
                return f".annotations[{i}]: negative width or height"
        size = value.get("image_size")
        width = height = None
        if isinstance(size, list) and size and isinstance(size[0], dict):
            width, height = size[0].get("width"), size[0].get("height")
            if not (_number(width) and _number(height)):
                return ".image_size[0]: 'width' and 'height' must be numbers"

        self.images += 1
        if width is None or height is None:
            self.images_without_size += 1
        elif min(width, height) < MIN_IMAGE_SIDE:
            self.small_images += 1
        if not annotations:
            self.images_without_boxes += 1
        labels = set()
        for box in annotations:
            label = str(class_map.get(str(int(box["class_id"])), box["class_id"]))
            labels.add(label)
            self.label_boxes[label] += 1
            if box["width"] < MIN_BOX_WIDTH:
                self.narrow_boxes += 1
            if (
                width is not None
                and height is not None
                and (
                    box["left"] < 0
                    or box["top"] < 0
                    or box["left"] + box["width"] > width
                    or box["top"] + box["height"] > height
                )
            ):
                self.boxes_outside += 1
        self.label_images.update(labels)
        return None

    def report(self) -> dict[str, Any]:
        labels = sorted(self.label_images, key=lambda label: (-self.label_images[label], label))
        balance = None
        if labels:
            common, rare = labels[0], labels[-1]
            ratio = self.label_images[rare] / self.label_images[common]
            balance = {
                "rarest": rare,
                "most_common": common,
                "ratio": round(ratio, 4),
                "below_1_to_2": ratio < MIN_LABEL_BALANCE,
            }
        return {
            "label_attribute": self.attr,
            "images": self.images,
            "boxes": sum(self.label_boxes.values()),
            "labels": [
                {"label": label, "images": self.label_images[label], "boxes": self.label_boxes[label]}
                for label in labels
            ],
            f"labels_under_{MIN_IMAGES_PER_LABEL}_images": [
                label for label in labels if self.label_images[label] < MIN_IMAGES_PER_LABEL
            ],
            "balance": balance,
            "images_without_boxes": self.images_without_boxes,
            f"images_under_{MIN_IMAGE_SIDE}_px": self.small_images,
            "images_without_size": self.images_without_size,
            f"boxes_narrower_than_{MIN_BOX_WIDTH}_px": self.narrow_boxes,
            "boxes_outside_image": self.boxes_outside,
        }

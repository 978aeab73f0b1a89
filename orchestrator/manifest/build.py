"""Building an input manifest from a bucket or folder: list, skip, probe, split.

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
import posixpath
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.errors import AccessDenied, InputError, NotFound, UsageError
from orchestrator.storage import (
    ObjectInfo,
    ObjectStore,
    is_s3_uri,
    open_object,
    open_store,
)

if TYPE_CHECKING:
    import boto3

from orchestrator.manifest import images
from orchestrator.manifest.jsonl import (
    DEFAULT_WORKERS,
    Spool,
)

T = TypeVar("T")
R = TypeVar("R")
DEFAULT_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "bmp"})
DEFAULT_MAX_BYTES = 6 * 1024 * 1024
NO_SPLIT = "input"
# Ground Truth refuses images over 100 megapixels (docs/groundtruth.md, "Limits").
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
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]+")
# Not a skip reason: an object left out of --sample is counted, not listed in skipped.jsonl.
_SAMPLED_OUT = "sampled_out"


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
    objects: Iterable[ObjectInfo] | None = None,
    on_object: Callable[[], None] | None = None,
) -> BuildReport:
    """List `source` once and write the manifest(s) and the skipped list to `dest`.

    `objects`, in key order, replaces the listing (an S3 Inventory report's objects); probing still
    reads `source`. `on_object` is called once per listed object (for a progress bar). Raises
    InputError if there is no object at all; then nothing is written.
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
    candidates: Iterator[_Candidate] = (
        screen(i, info) for i, info in enumerate(source.list() if objects is None else objects)
    )
    if options.probe:
        candidates = map_in_order(lambda cand: _probe(source, options, cand), candidates, options.workers)

    with contextlib.ExitStack() as stack:
        manifests = {name: stack.enter_context(Spool()) for name in split_names}
        skipped = stack.enter_context(Spool())

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


def map_in_order(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
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

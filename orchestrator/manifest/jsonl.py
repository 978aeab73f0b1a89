"""Manifests as JSON Lines: read and write them line by line, and the rules a source-ref must follow.

A manifest is JSON Lines, one `{"source-ref": URI, ...}` object a line (docs/manifests.md).
"""

from __future__ import annotations

import json
import mmap
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from orchestrator.errors import AccessDenied, InputError, NotFound
from orchestrator.storage import (
    ObjectStore,
    S3Store,
    split_s3_uri,
)

if TYPE_CHECKING:
    import boto3


MANIFEST_CONTENT_TYPE = "application/x-ndjson"
DEFAULT_WORKERS = 16
_READ_CHUNK = 8 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def read_chunks(store: ObjectStore, key: str) -> Iterator[bytes]:
    """The bytes of an object in 8 MiB ranges, so that no object is held whole.

    Raises NotFound or AccessDenied from the store.
    """
    offset = 0
    while True:
        chunk = store.get_range(key, offset, _READ_CHUNK)
        offset += len(chunk)
        yield chunk
        if len(chunk) < _READ_CHUNK:
            return


def read_lines(store: ObjectStore, key: str) -> Iterator[tuple[int, bytes]]:
    """The lines of a text object, numbered from 1, without their line ends; read in 8 MiB ranges.

    Raises NotFound or AccessDenied from the store.
    """
    number, pending = 0, b""
    for chunk in read_chunks(store, key):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            number += 1
            yield number, line.removesuffix(b"\r")
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
    with Spool() as spool:
        for row in rows:
            spool.write(row)
        spool.put(store, key)
        return spool.lines


class Spool:
    """JSON Lines collected in a temporary file, then put into a store in one piece."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile()
        self.lines = 0

    def __enter__(self) -> Spool:
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

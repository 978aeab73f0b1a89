"""An S3 Inventory report read in place of a listing (docs/manifests.md, "From an S3 Inventory report").

A report is a `manifest.json` naming data files in the destination bucket: CSV compressed with gzip,
without a header row, its columns in `fileSchema` order and its keys URL-encoded; or Parquet or ORC,
read with pyarrow (the `inventory` extra). Each data file is downloaded to a temporary file, its size
and MD5 checked against `manifest.json`, then read row by row. A report is not in key order, so rows
are sorted in runs of `RUN_ROWS` spilled to a temporary file and merged: memory holds one run and a
block of each spilled run, not the whole report.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import heapq
import itertools
import marshal
import re
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.errors import InputError, NotFound
from orchestrator.manifest.jsonl import read_chunks
from orchestrator.storage import ObjectInfo, ObjectStore, S3Store, open_object, open_store

if TYPE_CHECKING:
    import boto3

RUN_ROWS = 100_000
_BLOCK_ROWS = 1_000
# The columns read, by their names lower-cased without underscores: CSV schemas say `ETag` and
# `IsLatest`, Parquet and ORC schemas `e_tag` and `is_latest`.
_WANTED = ("key", "size", "etag", "islatest", "isdeletemarker")
_Row = tuple[str, int, str]  # key, size, ETag: sorted by key
_Values = tuple[Any, ...]  # a data file's values of the _WANTED columns, None where a column is absent


class InventoryFile(BaseModel):
    """One data file of a report, as `manifest.json` lists it."""

    model_config = ConfigDict(extra="forbid")

    key: str
    size: int
    MD5checksum: str


class InventoryManifest(BaseModel):
    """An S3 Inventory `manifest.json`."""

    model_config = ConfigDict(extra="forbid")

    sourceBucket: str
    destinationBucket: str
    version: str | None = None
    creationTimestamp: str | None = None
    fileFormat: Literal["CSV", "Parquet", "ORC"]
    fileSchema: str
    files: list[InventoryFile]


def schema_columns(manifest: InventoryManifest) -> list[str]:
    """The column names of `fileSchema`, in order, as the schema spells them."""
    if manifest.fileFormat == "CSV":
        return [name.strip() for name in manifest.fileSchema.split(",")]
    if manifest.fileFormat == "Parquet":  # message s3.inventory { required binary key (UTF8); ... }
        return re.findall(r"(?:required|optional|repeated)\s+\w+\s+(\w+)", manifest.fileSchema)
    return re.findall(r"(\w+):", manifest.fileSchema)  # ORC: struct<bucket:string,key:string,...>


def _normal(name: str) -> str:
    return name.replace("_", "").lower()


@dataclass(frozen=True)
class Inventory:
    """A checked `manifest.json` and the bucket its data files are in."""

    uri: str
    manifest: InventoryManifest
    columns: list[str]
    data: ObjectStore

    @property
    def has_etag(self) -> bool:
        return "etag" in map(_normal, self.columns)

    def objects(self, source: S3Store) -> Iterator[ObjectInfo]:
        """The current objects under `source`'s prefix, in key order, as `source.list()` gives them.

        Raises InputError for a data file that is missing, changed since the report or malformed.
        """
        if source.bucket != self.manifest.sourceBucket:
            raise InputError(
                f"{self.uri}: the inventory lists bucket {self.manifest.sourceBucket}, not {source.bucket}",
                hint="name a SOURCE in the inventory's bucket, or leave SOURCE out",
            )
        prefix = source.prefix + "/" if source.prefix else ""
        run: list[_Row] = []
        spilled: list[list[tuple[int, int]]] = []
        with tempfile.TemporaryFile() as spill:
            for row in self._rows():
                # Folder placeholders made by consoles are not objects, as in S3Store.list.
                if row[0].startswith(prefix) and not row[0].endswith("/"):
                    run.append(row)
                    if len(run) >= RUN_ROWS:
                        spilled.append(_spill(spill, sorted(run)))
                        run = []
            run.sort()
            for key, size, etag in heapq.merge(run, *(_unspill(spill, blocks) for blocks in spilled)):
                yield ObjectInfo(key[len(prefix) :], size, etag, f"s3://{source.bucket}/{key}")

    def _rows(self) -> Iterator[_Row]:
        read = _read_csv if self.manifest.fileFormat == "CSV" else _read_arrow
        wanted = [
            next((i for i, name in enumerate(self.columns) if _normal(name) == want), None)
            for want in _WANTED
        ]
        for number, entry in enumerate(self.manifest.files):
            where = self.data.uri(entry.key)
            with self._download(number, entry) as local:
                for line, (key, size, etag, latest, deleted) in read(local, self, wanted, where):
                    # A versioned report lists every version: only the current ones are listed objects.
                    if str(latest).lower() == "false" or str(deleted).lower() == "true":
                        continue
                    try:
                        size = int(size)
                    except (TypeError, ValueError):
                        raise InputError(f"{where}:{line}: Size {size!r} is not a number of bytes") from None
                    yield key, size, etag or ""

    @contextlib.contextmanager
    def _download(self, number: int, entry: InventoryFile) -> Iterator[IO[bytes]]:
        where = self.data.uri(entry.key)
        digest = hashlib.md5(usedforsecurity=False)
        with tempfile.TemporaryFile() as local:
            try:
                for chunk in read_chunks(self.data, entry.key):
                    digest.update(chunk)
                    local.write(chunk)
            except NotFound:
                raise InputError(
                    f"{self.uri}: files[{number}]: {where} does not exist",
                    hint="inventory data files may expire; use the newest manifest.json",
                ) from None
            size, md5 = local.tell(), digest.hexdigest()
            if (size, md5) != (entry.size, entry.MD5checksum.lower()):
                raise InputError(
                    f"{where}: {size} bytes with MD5 {md5}, but {self.uri} says {entry.size} bytes "
                    f"with MD5 {entry.MD5checksum}",
                    hint="the data file was changed or cut short after the report was written",
                )
            local.seek(0)
            yield local


def open_inventory(uri: str, boto3_session: boto3.Session | None = None) -> Inventory:
    """Read and check the `manifest.json` of an S3 Inventory report at `uri`.

    Raises InputError naming the key at fault, NotFound if there is no such object.
    """
    store, key = open_object(uri, boto3_session)
    try:
        manifest = InventoryManifest.model_validate_json(store.get(key))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise InputError(
            f"{uri}: {where + ': ' if where else ''}{error['msg']}",
            hint="--from-inventory takes the manifest.json of an S3 Inventory report",
        ) from None
    columns = schema_columns(manifest)
    missing = [name for name in ("Key", "Size") if name.lower() not in map(_normal, columns)]
    if missing:
        raise InputError(
            f"{uri}: fileSchema has no {' and no '.join(missing)} column: {manifest.fileSchema!r}",
            hint="add the Size field to the inventory configuration and wait for the next report",
        )
    if manifest.fileFormat != "CSV":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InputError(
                f"{uri}: reading a {manifest.fileFormat} inventory needs pyarrow",
                hint="pip install 'labeljob[inventory]', or configure the inventory as CSV",
            ) from None
    bucket = manifest.destinationBucket.removeprefix("arn:aws:s3:::")
    return Inventory(uri, manifest, columns, open_store(f"s3://{bucket}/", boto3_session))


def _read_csv(
    local: IO[bytes], inventory: Inventory, wanted: list[int | None], where: str
) -> Iterator[tuple[int, _Values]]:
    width = len(inventory.columns)
    try:
        with gzip.open(local, "rt", encoding="utf-8", newline="") as text:
            reader = csv.reader(text)
            for fields in reader:
                if len(fields) != width:
                    raise InputError(
                        f"{where}:{reader.line_num}: {len(fields)} columns, but fileSchema names {width}"
                    )
                values = [None if i is None else fields[i] for i in wanted]
                # S3 URL-encodes the keys of a CSV report, a space as "+".
                values[0] = unquote_plus(values[0])
                yield reader.line_num, tuple(values)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{where}: not a gzip-compressed CSV inventory file ({exc})") from None


def _read_arrow(
    local: IO[bytes], inventory: Inventory, wanted: list[int | None], where: str
) -> Iterator[tuple[int, _Values]]:
    import pyarrow
    from pyarrow import orc, parquet

    names = [inventory.columns[i] for i in wanted if i is not None]
    try:
        if inventory.manifest.fileFormat == "Parquet":
            batches = parquet.ParquetFile(local).iter_batches(batch_size=65_536, columns=names)
        else:
            stripes = orc.ORCFile(local)
            batches = (stripes.read_stripe(i, columns=names) for i in range(stripes.nstripes))
        done = 0
        for batch in batches:
            data = batch.to_pydict()
            columns = [
                itertools.repeat(None, batch.num_rows) if i is None else data[inventory.columns[i]]
                for i in wanted
            ]
            yield from enumerate(zip(*columns, strict=True), done + 1)
            done += batch.num_rows
    except (pyarrow.ArrowException, KeyError) as exc:
        fmt = inventory.manifest.fileFormat
        raise InputError(f"{where}: not a {fmt} inventory file with its fileSchema ({exc})") from None


def _spill(file: IO[bytes], rows: list[_Row]) -> list[tuple[int, int]]:
    """Append sorted `rows` to `file` in blocks; the offset and length of each block."""
    file.seek(0, 2)
    blocks = []
    for start in range(0, len(rows), _BLOCK_ROWS):
        data = marshal.dumps(rows[start : start + _BLOCK_ROWS])
        blocks.append((file.tell(), len(data)))
        file.write(data)
    return blocks


def _unspill(file: IO[bytes], blocks: list[tuple[int, int]]) -> Iterator[_Row]:
    for offset, length in blocks:
        # One read a block: marshal.load on a file object would read it a few bytes at a time.
        file.seek(offset)
        yield from marshal.loads(file.read(length))

"""S3 Inventory reports written into a (moto) bucket the way S3 writes them.

A report is `<prefix>/<source bucket>/<config>/<timestamp>/manifest.json` naming data files under
`<prefix>/<source bucket>/<config>/data/`: gzip CSV without a header row, every value quoted, keys
URL-encoded with a space as "+"; or Parquet (Snappy) or ORC (zlib) with snake_case column names.
Rows are shuffled across the files, since S3 does not promise key order.
"""

from __future__ import annotations

import csv
import datetime
import gzip
import hashlib
import io
import json
import random
import re
import uuid
from urllib.parse import quote_plus

FIELDS = ("Bucket", "Key", "Size", "LastModifiedDate", "ETag", "StorageClass")
VERSIONED_FIELDS = ("Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", *FIELDS[2:])
_ARROW_TYPES = {
    "Size": "int64",
    "IsLatest": "bool",
    "IsDeleteMarker": "bool",
    "LastModifiedDate": "timestamp",
}
_PARQUET_TYPES = {"int64": "int64", "bool": "boolean", "timestamp": "int64", "string": "binary"}
_ORC_TYPES = {"int64": "bigint", "bool": "boolean", "timestamp": "timestamp", "string": "string"}


def bucket_rows(client, bucket: str, versions: bool = False) -> list[dict]:
    """What an inventory of `bucket` lists: its current objects, or every version and delete marker."""
    if not versions:
        return [
            {"Key": obj["Key"], "Size": obj["Size"], "LastModifiedDate": obj["LastModified"],
             "ETag": obj["ETag"].strip('"'), "StorageClass": obj.get("StorageClass", "STANDARD")}
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for obj in page.get("Contents", ())
        ]  # fmt: skip
    rows = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for obj in page.get("Versions", ()):
            rows.append(
                {"Key": obj["Key"], "VersionId": obj["VersionId"], "IsLatest": obj["IsLatest"],
                 "IsDeleteMarker": False, "Size": obj["Size"], "LastModifiedDate": obj["LastModified"],
                 "ETag": obj["ETag"].strip('"'), "StorageClass": obj.get("StorageClass", "STANDARD")}
            )  # fmt: skip
        for obj in page.get("DeleteMarkers", ()):
            rows.append(
                {"Key": obj["Key"], "VersionId": obj["VersionId"], "IsLatest": obj["IsLatest"],
                 "IsDeleteMarker": True, "LastModifiedDate": obj["LastModified"]}
            )  # fmt: skip
    return rows


def write_inventory(
    client,
    rows: list[dict],
    *,
    source_bucket: str,
    dest_bucket: str,
    fmt: str = "CSV",
    fields: tuple[str, ...] = FIELDS,
    files: int = 2,
    seed: int = 0,
) -> str:
    """Write `rows` (dicts keyed by CSV field names) as a report of `source_bucket`; its manifest.json URI."""
    rows = [{**row, "Bucket": source_bucket} for row in rows]
    random.Random(seed).shuffle(rows)
    base = f"inventory/{source_bucket}/labeljob"
    suffix = {"CSV": "csv.gz", "Parquet": "parquet", "ORC": "orc"}[fmt]
    entries = []
    for part in range(files):
        body = _encode(rows[part::files], fmt, fields)
        key = f"{base}/data/{uuid.UUID(int=random.Random(seed + part).getrandbits(128))}.{suffix}"
        client.put_object(Bucket=dest_bucket, Key=key, Body=body)
        entries.append({"key": key, "size": len(body), "MD5checksum": hashlib.md5(body).hexdigest()})
    manifest = {
        "sourceBucket": source_bucket,
        "destinationBucket": f"arn:aws:s3:::{dest_bucket}",
        "version": "2016-11-30",
        "creationTimestamp": "1764806400000",
        "fileFormat": fmt,
        "fileSchema": _schema(fmt, fields),
        "files": entries,
    }
    key = f"{base}/2026-12-04T00-00Z/manifest.json"
    client.put_object(Bucket=dest_bucket, Key=key, Body=json.dumps(manifest, indent=2).encode())
    return f"s3://{dest_bucket}/{key}"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()  # ETag -> e_tag, IsLatest -> is_latest


def _schema(fmt: str, fields: tuple[str, ...]) -> str:
    if fmt == "CSV":
        return ", ".join(fields)
    types = [_ARROW_TYPES.get(name, "string") for name in fields]
    if fmt == "Parquet":
        columns = " ".join(
            f"{'required' if name in ('Bucket', 'Key') else 'optional'} {_PARQUET_TYPES[t]} {_snake(name)};"
            for name, t in zip(fields, types, strict=True)
        )
        return f"message s3.inventory {{ {columns} }}"
    return (
        "struct<" + ",".join(f"{_snake(n)}:{_ORC_TYPES[t]}" for n, t in zip(fields, types, strict=True)) + ">"
    )


def _encode(rows: list[dict], fmt: str, fields: tuple[str, ...]) -> bytes:
    if fmt == "CSV":
        text = io.StringIO()
        writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for row in rows:
            writer.writerow(_csv_value(name, row.get(name)) for name in fields)
        return gzip.compress(text.getvalue().encode())
    import pyarrow
    from pyarrow import orc, parquet

    kinds = {"int64": pyarrow.int64(), "bool": pyarrow.bool_(), "timestamp": pyarrow.timestamp("ms")}
    table = pyarrow.table(
        {
            _snake(name): pyarrow.array(
                [row.get(name) for row in rows], kinds.get(_ARROW_TYPES.get(name, ""), pyarrow.string())
            )
            for name in fields
        }
    )
    buffer = io.BytesIO()
    if fmt == "Parquet":
        parquet.write_table(table, buffer, compression="snappy")
    else:
        orc.write_table(table, buffer, compression="zlib")
    return buffer.getvalue()


def _csv_value(name: str, value) -> str:
    if value is None:
        return ""
    if name == "Key":
        return quote_plus(value, safe="/")
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return str(value)

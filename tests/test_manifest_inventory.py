"""Building from an S3 Inventory report (moto S3): malformed reports first, then parity with a listing."""

from __future__ import annotations

import gzip
import json

import pytest

from orchestrator.errors import InputError, NotFound
from orchestrator.manifest import BuildOptions, build_manifest, open_inventory, parse_splits, plan_destination
from orchestrator.manifest import inventory as manifest_inventory
from orchestrator.storage import S3Store, s3_client
from tests.fakes.s3_inventory import VERSIONED_FIELDS, bucket_rows, write_inventory
from tests.test_manifest import BUCKET, EVERY_CASE_OPTIONS, every_case, read_jsonl, s3_store

DEST = "labeljob-inventory"


@pytest.fixture
def client(s3):
    """A client of moto's S3 holding the bucket that receives reports."""
    s3_client(s3).create_bucket(Bucket=DEST)
    return s3_client(s3)


def report(client, fmt: str = "CSV", **kwargs) -> str:
    return write_inventory(
        client, bucket_rows(client, BUCKET), source_bucket=BUCKET, dest_bucket=DEST, fmt=fmt, **kwargs
    )


def edit_manifest(client, uri: str, **changes) -> dict:
    key = uri.removeprefix(f"s3://{DEST}/")
    manifest = json.loads(client.get_object(Bucket=DEST, Key=key)["Body"].read())
    manifest.update(changes)
    client.put_object(Bucket=DEST, Key=key, Body=json.dumps(manifest).encode())
    return manifest


def objects(s3, uri: str, prefix: str = "data") -> list:
    return list(open_inventory(uri, s3).objects(S3Store(BUCKET, prefix, s3_client(s3))))


# ------------------------------------------------------------------------------- malformed reports


def test_missing_manifest_json(s3, client):
    with pytest.raises(NotFound, match="no such object"):
        open_inventory(f"s3://{DEST}/inventory/nope/manifest.json", s3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"files": [{"key": "a.csv.gz", "size": "big", "MD5checksum": "0"}]}, "files.0.size: Input should"),
        ({"fileFormat": "JSON"}, "fileFormat: Input should be 'CSV', 'Parquet' or 'ORC'"),
        ({"sourceBucket": None}, "sourceBucket: Input should be a valid string"),
        ({"unexpected": 1}, "unexpected: Extra inputs are not permitted"),
        ({"fileSchema": "Bucket, Key, LastModifiedDate"}, "fileSchema has no Size column"),
        ({"fileSchema": "Bucket, Size"}, "fileSchema has no Key column"),
    ],
)
def test_malformed_manifest_json_names_the_key(s3, client, change, message):
    s3_store(s3, {"a.jpg": b"1"})
    uri = report(client)
    edit_manifest(client, uri, **change)
    with pytest.raises(InputError, match=message) as raised:
        open_inventory(uri, s3)
    assert raised.value.message.startswith(uri)


def test_manifest_json_that_is_not_json(s3, client):
    client.put_object(Bucket=DEST, Key="manifest.json", Body=b"{oops")
    with pytest.raises(InputError, match="manifest.json: Invalid JSON"):
        open_inventory(f"s3://{DEST}/manifest.json", s3)


def first_data_file(client, uri: str) -> str:
    key = uri.removeprefix(f"s3://{DEST}/")
    return json.loads(client.get_object(Bucket=DEST, Key=key)["Body"].read())["files"][0]["key"]


def replace_data_file(client, uri: str, body: bytes) -> str:
    """Put `body` in place of the first data file, with manifest.json's size and MD5 made to match."""
    import hashlib

    key = first_data_file(client, uri)
    client.put_object(Bucket=DEST, Key=key, Body=body)
    manifest = edit_manifest(client, uri)
    manifest["files"][0].update(size=len(body), MD5checksum=hashlib.md5(body).hexdigest())
    edit_manifest(client, uri, files=manifest["files"])
    return f"s3://{DEST}/{key}"


def test_data_file_listed_but_missing(s3, client):
    s3_store(s3, {"a.jpg": b"1"})
    uri = report(client)
    client.delete_object(Bucket=DEST, Key=first_data_file(client, uri))
    with pytest.raises(InputError, match=r"files\[0\]: s3://labeljob-inventory/.*\.csv\.gz does not exist"):
        objects(s3, uri)


def test_data_file_that_changed_fails_its_checksum(s3, client):
    s3_store(s3, {"a.jpg": b"1", "b.jpg": b"2"})
    uri = report(client, files=1)
    key = first_data_file(client, uri)
    client.put_object(Bucket=DEST, Key=key, Body=gzip.compress(b'"labeljob-images","data/c.jpg","1"\n'))
    with pytest.raises(InputError, match=r"\.csv\.gz: \d+ bytes with MD5 [0-9a-f]{32}, but .* says"):
        objects(s3, uri)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not gzip at all", "not a gzip-compressed CSV inventory file"),
        (gzip.compress(b'"b","data/a.jpg","1","","",""\n' * 50)[:-20], "Compressed file ended before"),
        (gzip.compress(b'"b","data/a.jpg"\n'), r"\.csv\.gz:1: 2 columns, but fileSchema names 6"),
        (gzip.compress(b'"b","data/a.jpg","many","","",""\n'), r"\.csv\.gz:1: Size 'many' is not a number"),
    ],
    ids=["not-gzip", "truncated-gzip", "short-row", "bad-size"],
)
def test_malformed_csv_data_file_names_file_and_line(s3, client, body, message):
    s3_store(s3, {"a.jpg": b"1"})
    uri = report(client, files=1)
    data_uri = replace_data_file(client, uri, body)
    with pytest.raises(InputError, match=message) as raised:
        objects(s3, uri)
    assert raised.value.message.startswith(data_uri)


def test_malformed_parquet_data_file(s3, client):
    s3_store(s3, {"a.jpg": b"1"})
    uri = report(client, fmt="Parquet", files=1)
    replace_data_file(client, uri, b"PAR1 but nothing else")
    with pytest.raises(InputError, match=r"\.parquet: not a Parquet inventory file"):
        objects(s3, uri)


def test_report_of_another_bucket(s3, client):
    s3_store(s3, {"a.jpg": b"1"})
    uri = report(client)
    with pytest.raises(InputError, match="lists bucket labeljob-images, not other"):
        list(open_inventory(uri, s3).objects(S3Store("other", "", s3_client(s3))))


def test_parquet_without_pyarrow_says_what_to_install(s3, client, monkeypatch):
    s3_store(s3, {"a.jpg": b"1"})
    uri = report(client, fmt="Parquet")
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    with pytest.raises(InputError, match="needs pyarrow") as raised:
        open_inventory(uri, s3)
    assert "labeljob[inventory]" in raised.value.hint


# ----------------------------------------------------------------------------- parity with a listing


@pytest.mark.parametrize("run_rows", [4, 1_000], ids=["seven-runs-merged", "one-run"])
@pytest.mark.parametrize("fmt", ["CSV", "Parquet", "ORC"])
def test_objects_are_the_listing_in_key_order(s3, client, monkeypatch, fmt, run_rows):
    files = {f"dir {i % 3}/img+{i:02d} é.jpg": b"%d" % i for i in range(25)}
    source = s3_store(s3, {**files, "folder/": b""})
    client.put_object(Bucket=BUCKET, Key="elsewhere/a.jpg", Body=b"outside the prefix")
    monkeypatch.setattr(manifest_inventory, "RUN_ROWS", run_rows)
    uri = report(client, fmt, files=3)
    assert objects(s3, uri) == list(source.list())
    assert open_inventory(uri, s3).has_etag


def test_versioned_report_keeps_current_objects_only(s3, client):
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    for key, body in [
        ("data/a.jpg", b"old"),
        ("data/a.jpg", b"new"),
        ("data/b.jpg", b"b"),
        ("data/c.jpg", b"c"),
    ]:
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    client.delete_object(Bucket=BUCKET, Key="data/b.jpg")
    rows = bucket_rows(client, BUCKET, versions=True)
    assert len(rows) == 5  # two versions of a.jpg, b.jpg and its delete marker, c.jpg
    uri = write_inventory(client, rows, source_bucket=BUCKET, dest_bucket=DEST, fields=VERSIONED_FIELDS)
    assert [(o.key, o.size) for o in objects(s3, uri)] == [("a.jpg", 3), ("c.jpg", 1)]


def test_report_without_etag_column_reads_no_etags(s3, client):
    s3_store(s3, {"a.jpg": b"same", "b.jpg": b"same"})
    uri = report(client, fields=("Bucket", "Key", "Size"))
    inventory = open_inventory(uri, s3)
    assert not inventory.has_etag
    assert [(o.key, o.etag) for o in objects(s3, uri)] == [("a.jpg", ""), ("b.jpg", "")]


@pytest.mark.parametrize("fmt", ["CSV", "Parquet"])
@pytest.mark.parametrize(
    "options",
    [
        EVERY_CASE_OPTIONS,
        BuildOptions(splits=parse_splits("train=0.5,validation=0.5"), seed=4, max_bytes=500_000),
        BuildOptions(sample=3, seed=2, probe=True, workers=2),
    ],
    ids=["every-skip-reason", "splits", "sample"],
)
def test_build_from_inventory_equals_the_listed_build(s3, client, tmp_path, monkeypatch, fmt, options):
    source = s3_store(s3, every_case())
    monkeypatch.setattr(manifest_inventory, "RUN_ROWS", 5)
    inventory = open_inventory(report(client, fmt, files=3), s3)
    names = [name for name, _ in options.splits]

    listed_dest = plan_destination(str(tmp_path / "listed"), names)
    listed = build_manifest(source, listed_dest, options)
    inventory_dest = plan_destination(str(tmp_path / "inventory"), names)
    monkeypatch.setattr(S3Store, "list", lambda *a: pytest.fail("listed the bucket"))
    built = build_manifest(source, inventory_dest, options, objects=inventory.objects(source))

    assert json.dumps(built.as_dict()).replace("/inventory/", "/listed/") == json.dumps(listed.as_dict())
    assert built.skipped["duplicate"] == 1  # the ETag column de-duplicates as the listing's ETags do
    for key in [*listed_dest.manifests.values(), listed_dest.skipped]:
        assert read_jsonl(inventory_dest.store, key) == read_jsonl(listed_dest.store, key), key

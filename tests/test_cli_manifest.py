"""`labeljob manifest build|check` through the real typer app: output formats, exit codes, no tracebacks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from orchestrator.cli.app import app
from orchestrator.storage import s3_client
from tests.fakes.s3_inventory import bucket_rows, write_inventory


def run(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def jpeg(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def images(tmp_path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    for i in range(10):
        (root / f"img_{i:02d}.jpg").write_bytes(jpeg((300 + i, 280), (i * 20, 40, 90)))
    (root / "tiny.jpg").write_bytes(jpeg((40, 30), (1, 2, 3)))
    (root / "fake.jpg").write_text("a text file")
    (root / "readme.md").write_text("# images")
    return root


def test_build_json_with_splits(images, tmp_path):
    out = tmp_path / "manifests"
    result = run(
        "--format", "json", "manifest", "build", str(images), "--out", str(out),
        "--split", "train=0.8,validation=0.2", "--seed", "3", "--min-side", "256",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["listed"] == 13 and report["accepted"] == 10
    assert [m["split"] for m in report["manifests"]] == ["train", "validation"]
    assert sum(m["objects"] for m in report["manifests"]) == 10
    assert report["skipped"]["by_reason"]["too_small"] == 1
    assert report["skipped"]["by_reason"]["unreadable"] == 1
    assert report["skipped"]["by_reason"]["extension"] == 1
    assert "--probe" in result.stderr  # --min-side said it probes
    lines = (out / "train.manifest").read_text().splitlines() + (
        out / "validation.manifest"
    ).read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert sorted(row["width"] for row in rows) == list(range(300, 310))
    assert all(row["source-ref"].startswith(images.as_uri() + "/img_") for row in rows)
    assert len((out / "skipped.jsonl").read_text().splitlines()) == 3


def test_build_table_output(images, tmp_path):
    result = run("manifest", "build", str(images), "--out", str(tmp_path / "one.manifest"), "--probe")
    assert result.exit_code == 0, result.output
    assert "13 objects listed" in result.stdout
    assert "unreadable" in result.stdout and "extension" in result.stdout
    assert (tmp_path / "one.manifest").read_text().count("\n") == 11  # tiny is kept without --min-side
    assert (tmp_path / "one.skipped.jsonl").is_file()


def test_build_on_s3(s3, images):
    client = s3_client(s3)
    client.create_bucket(Bucket="cli-bucket")
    for path in images.iterdir():
        client.put_object(Bucket="cli-bucket", Key=f"raw/{path.name}", Body=path.read_bytes())
    result = run(
        "--format", "json", "manifest", "build", "s3://cli-bucket/raw", "--out", "s3://cli-bucket/manifests/",
        "--probe", "--limit", "4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["manifests"] == [
        {"split": "input", "objects": 4, "uri": "s3://cli-bucket/manifests/input.manifest"}
    ]
    body = client.get_object(Bucket="cli-bucket", Key="manifests/input.manifest")["Body"].read().decode()
    assert [json.loads(line)["source-ref"] for line in body.splitlines()] == [
        "s3://cli-bucket/raw/img_00.jpg",
        "s3://cli-bucket/raw/img_01.jpg",
        "s3://cli-bucket/raw/img_02.jpg",
        "s3://cli-bucket/raw/img_03.jpg",
    ]  # fake.jpg sorts first and is skipped as unreadable


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "train=0.8,validation=0.3"], "sum to 1.1"),
        (["--split", "train=0.8,validation=0.2", "--out", "x.manifest"], "folder or prefix"),
        (["--exclude", "(unclosed"], "--exclude: not a regular expression"),
        (["--limit", "3", "--sample", "3"], "cannot be combined"),
        (["--max-bytes", "lots"], "--max-bytes: 'lots' is not a size"),
        (["--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_usage_errors_exit_2(images, tmp_path, args, message):
    result = run("manifest", "build", str(images), "--out", str(tmp_path / "out"), *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_source_and_empty_folder_exit_1(tmp_path):
    result = run("manifest", "build", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "folder does not exist" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run("manifest", "build", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and "no objects found" in result.stderr


def test_missing_bucket_exits_1(s3, tmp_path):
    result = run("manifest", "build", "s3://no-such-bucket/x", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "bucket does not exist" in result.stderr and "Hint:" in result.stderr


def test_all_skipped_still_reports_and_exits_1(images, tmp_path):
    out = str(tmp_path / "out")
    result = run("--format", "json", "manifest", "build", str(images), "--out", out, "--include-ext", "gif")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["skipped"]["by_reason"]["extension"] == 13
    assert "no object passed the filters" in result.stderr
    assert (tmp_path / "out" / "skipped.jsonl").read_text().count("\n") == 13


def test_check_good_manifest(images, tmp_path):
    run("manifest", "build", str(images), "--out", str(tmp_path / "m"), "--split", "a=0.5,b=0.5", "--probe")
    a, b = str(tmp_path / "m" / "a.manifest"), str(tmp_path / "m" / "b.manifest")
    result = run("--format", "json", "manifest", "check", a, b, "--verify-objects")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["error_count"] == 0
    assert sum(report["splits"].values()) == 11 and set(report["splits"]) == {"a", "b"}


def test_check_bad_manifest_lists_errors_and_exits_1(s3, tmp_path):
    manifest = tmp_path / "bad.manifest"
    manifest.write_bytes(
        b'\xef\xbb\xbf{"source-ref": "s3://bucket-a/1.jpg"}\r\n'
        b"\r\n"
        b"{oops\r\n"
        b'{"source-ref": "' + (tmp_path / "missing.jpg").as_uri().encode() + b'"}\r\n'
    )
    result = run("manifest", "check", str(manifest))
    assert result.exit_code == 1
    assert f"Error: {manifest}:3: not valid JSON" in result.stderr
    assert "1 error(s)" in result.stderr

    result = run("--format", "json", "manifest", "check", str(manifest), "--verify-objects")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["error_count"] == 3
    assert report["errors"] == [
        f"{manifest}:1: s3://bucket-a/1.jpg: no such object (or no such bucket)",
        f"{manifest}:3: not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{manifest}:4: {(tmp_path / 'missing.jpg').as_uri()}: no such file",
    ]
    assert report["manifests"] == [{"manifest": str(manifest), "lines": 4, "objects": 2}]


def test_check_health_report_in_json(tmp_path):
    line = {
        "source-ref": "s3://bucket-a/1.jpg",
        "bbox": {
            "image_size": [{"width": 200, "height": 100, "depth": 3}],
            "annotations": [{"class_id": 0, "left": 1, "top": 1, "width": 10, "height": 10}],
        },
        "bbox-metadata": {"class-map": {"0": "car"}, "objects": [{"confidence": 1}]},
    }
    (tmp_path / "out.manifest").write_text(json.dumps(line) + "\n")
    result = run("--format", "json", "manifest", "check", str(tmp_path / "out.manifest"))
    assert result.exit_code == 0
    (health,) = json.loads(result.stdout)["health"]
    assert health["labels"] == [{"label": "car", "images": 1, "boxes": 1}]
    assert health["images_under_256_px"] == 1 and health["boxes_narrower_than_30_px"] == 1
    table = run("manifest", "check", str(tmp_path / "out.manifest"))
    assert "dataset health: bbox" in table.stdout and "car" in table.stdout


def test_check_missing_manifest_exits_1(tmp_path):
    result = run("manifest", "check", str(tmp_path / "nope.manifest"))
    assert result.exit_code == 1
    assert "no such file" in result.stderr


def inventory_of(client, bucket: str, images: Path) -> str:
    """`images` uploaded under raw/ in `bucket`, and the manifest.json URI of an inventory report of it."""
    client.create_bucket(Bucket=bucket)
    client.create_bucket(Bucket="cli-inventory")
    for path in images.iterdir():
        client.put_object(Bucket=bucket, Key=f"raw/{path.name}", Body=path.read_bytes())
    rows = bucket_rows(client, bucket)
    return write_inventory(client, rows, source_bucket=bucket, dest_bucket="cli-inventory", files=2)


def test_build_from_inventory_is_the_listed_build(s3, images):
    client = s3_client(s3)
    inventory = inventory_of(client, "cli-bucket", images)
    options = ["--format", "json", "manifest", "build", "--split", "a=0.5,b=0.5", "--min-side", "256"]
    listed = run(*options, "s3://cli-bucket/raw", "--out", "s3://cli-bucket/listed/")
    # Newer than the report: a build that listed the bucket would see it.
    client.put_object(Bucket="cli-bucket", Key="raw/img_99.jpg", Body=(images / "img_00.jpg").read_bytes())
    built = run(
        *options, "s3://cli-bucket/raw", "--out", "s3://cli-bucket/built/", "--from-inventory", inventory
    )
    assert listed.exit_code == built.exit_code == 0, built.output
    assert built.stdout.replace("/built/", "/listed/") == listed.stdout
    for name in ("a.manifest", "b.manifest", "skipped.jsonl"):
        bodies = [
            client.get_object(Bucket="cli-bucket", Key=f"{out}/{name}")["Body"].read()
            for out in ("listed", "built")
        ]
        assert bodies[0] == bodies[1], name
    assert json.loads(built.stdout)["accepted"] == 10

    whole_bucket = run(
        "--format",
        "json",
        "manifest",
        "build",
        "--out",
        "s3://cli-bucket/all/",
        "--from-inventory",
        inventory,
    )
    assert whole_bucket.exit_code == 0, whole_bucket.output
    assert json.loads(whole_bucket.stdout)["source"] == "s3://cli-bucket/"
    assert json.loads(whole_bucket.stdout)["listed"] == 13


def test_malformed_inventory_is_a_one_line_error(s3, images, tmp_path):
    client = s3_client(s3)
    inventory = inventory_of(client, "cli-bucket", images)
    key = inventory.removeprefix("s3://cli-inventory/")
    data_key = json.loads(client.get_object(Bucket="cli-inventory", Key=key)["Body"].read())["files"][1][
        "key"
    ]
    client.put_object(Bucket="cli-inventory", Key=data_key, Body=b"changed")
    result = run("manifest", "build", "--out", str(tmp_path / "out"), "--from-inventory", inventory)
    assert result.exit_code == 1
    error, hint = result.stderr.splitlines()
    assert error.startswith(f"Error: s3://cli-inventory/{data_key}: 7 bytes with MD5 ")
    assert hint.startswith("Hint: the data file was changed")
    assert not (tmp_path / "out").exists()


def test_build_without_source_or_inventory_exits_2(tmp_path):
    result = run("manifest", "build", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "missing SOURCE" in result.stderr


def test_inventory_without_etags_warns_that_dedupe_finds_nothing(s3, images, tmp_path):
    client = s3_client(s3)
    client.create_bucket(Bucket="cli-bucket")
    client.create_bucket(Bucket="cli-inventory")
    for name in ("a.jpg", "b.jpg"):
        client.put_object(Bucket="cli-bucket", Key=name, Body=(images / "img_00.jpg").read_bytes())
    rows = bucket_rows(client, "cli-bucket")
    fields = ("Bucket", "Key", "Size")
    inventory = write_inventory(
        client, rows, source_bucket="cli-bucket", dest_bucket="cli-inventory", fields=fields
    )
    result = run(
        "--format", "json", "manifest", "build", "--out", str(tmp_path), "--from-inventory", inventory
    )
    assert result.exit_code == 0, result.output
    assert "no ETag column" in result.stderr
    assert json.loads(result.stdout)["accepted"] == 2

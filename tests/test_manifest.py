"""Manifest building, reading, writing and checking, on local folders and on S3 (moto)."""

from __future__ import annotations

import io
import json
import re
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from orchestrator import manifest
from orchestrator.errors import AccessDenied, InputError, NotFound, UsageError
from orchestrator.manifest import (
    BuildOptions,
    assign_split,
    build_manifest,
    check_manifests,
    object_checker,
    parse_line,
    parse_size,
    parse_splits,
    plan_destination,
    probe_image,
    read_manifest,
    write_jsonl,
)
from orchestrator.manifest import build as manifest_build
from orchestrator.manifest import jsonl as manifest_jsonl
from orchestrator.storage import LocalStore, S3Store, s3_client
from tests.conftest import SAMPLE_BUCKET

BUCKET = "labeljob-images"


def image(fmt: str, size: tuple[int, int], seed: int = 0) -> bytes:
    """A small image of noise, different for each seed so that ETags differ."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """Only a PNG's signature and IHDR: enough for a header probe."""
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    )


def every_case() -> dict[str, bytes]:
    cat = image("JPEG", (300, 300), seed=1)
    return {
        "a/cat1.jpg": cat,
        "a/cat2.JPG": image("JPEG", (400, 300), seed=2),
        "a/dog.png": image("PNG", (512, 256), seed=3),
        "b/pic.bmp": image("BMP", (300, 260), seed=4),
        "b/copy_of_cat1.jpg": cat,
        "notes.txt": b"not listed in any manifest",
        "a/skip_me.jpg": image("JPEG", (300, 300), seed=5),
        "a/empty.jpg": b"",
        "a/big.png": image("PNG", (600, 600), seed=6),  # ~1 MB of noise
        "a/fake.jpg": b"I am text with a picture's name",
        "a/tiny.jpg": image("JPEG", (64, 64), seed=7),
        "a/huge.png": png_header(20000, 20000),
    }


EXPECTED_ACCEPTED = {
    "a/cat1.jpg": (300, 300),
    "a/cat2.JPG": (400, 300),
    "a/dog.png": (512, 256),
    "b/pic.bmp": (300, 260),
}
EXPECTED_SKIPPED = {
    "notes.txt": "extension",
    "a/skip_me.jpg": "excluded",
    "a/empty.jpg": "empty",
    "a/big.png": "too_large",
    "b/copy_of_cat1.jpg": "duplicate",
    "a/fake.jpg": "unreadable",
    "a/tiny.jpg": "too_small",
    "a/huge.png": "too_many_pixels",
}
EVERY_CASE_OPTIONS = BuildOptions(
    exclude=re.compile("skip_"), max_bytes=500_000, min_side=256, probe=True, workers=4
)


def local_store(root: Path, files: dict[str, bytes]) -> LocalStore:
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return LocalStore(root)


def s3_store(session, files: dict[str, bytes], prefix: str = "data") -> S3Store:
    client = s3_client(session)
    client.create_bucket(Bucket=BUCKET)
    for key, data in files.items():
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{key}", Body=data)
    return S3Store(BUCKET, prefix, client)


def read_jsonl(store, key: str) -> list[dict]:
    return [json.loads(line) for line in store.get(key).decode().splitlines()]


def relative(rows: list[dict], root_uri: str) -> list[dict]:
    """Rows with every URI made relative to the store root, to compare S3 and local results."""
    return json.loads(json.dumps(rows).replace(root_uri, "<root>/"))


def build(source, dest_root: Path, options: BuildOptions):
    dest = plan_destination(str(dest_root), [name for name, _ in options.splits])
    return build_manifest(source, dest, options), dest.store


# ----------------------------------------------------------------------------------- building


def test_every_skip_reason_and_s3_local_parity(s3, tmp_path):
    files = every_case()
    local = local_store(tmp_path / "bucket", files)
    remote = s3_store(s3, files)

    results = {}
    for name, source in (("local", local), ("s3", remote)):
        report, out = build(source, tmp_path / f"out-{name}", EVERY_CASE_OPTIONS)
        rows = read_jsonl(out, "input.manifest")
        skipped = read_jsonl(out, "skipped.jsonl")
        results[name] = (relative(rows, source.root_uri), relative(skipped, source.root_uri), report)

        assert {r["source-ref"].removeprefix(source.root_uri): (r["width"], r["height"]) for r in rows} == (
            EXPECTED_ACCEPTED
        )
        assert [r["source-ref"] for r in rows] == sorted(r["source-ref"] for r in rows)  # key order
        assert {
            r["source-ref"].removeprefix(source.root_uri): r["reason"] for r in skipped
        } == EXPECTED_SKIPPED
        duplicate = next(r for r in skipped if r["reason"] == "duplicate")
        assert duplicate["duplicate_of"] == source.uri("a/cat1.jpg")
        assert report.listed == len(files)
        assert report.objects == {"input": 4}
        assert report.skipped == Counter(EXPECTED_SKIPPED.values())
        summary = report.as_dict()
        assert summary["skipped"]["by_reason"]["vanished"] == 0  # every reason has a stable key
        assert list(summary["skipped"]["by_reason"]) == list(manifest.SKIP_REASONS)

    assert results["local"][0] == results["s3"][0]
    assert results["local"][1] == results["s3"][1]
    assert results["local"][0][0]["source-ref"] == "<root>/a/cat1.jpg"
    assert local.uri("a/cat1.jpg").startswith("file:///")


def test_without_probe_nothing_is_downloaded(tmp_path, monkeypatch):
    source = local_store(tmp_path / "bucket", every_case())
    monkeypatch.setattr(source, "get_range", lambda *a: pytest.fail("downloaded"))
    monkeypatch.setattr(source, "get", lambda *a: pytest.fail("downloaded"))
    report, out = build(source, tmp_path / "out", BuildOptions(max_bytes=500_000))
    rows = read_jsonl(out, "input.manifest")
    assert rows[0] == {"source-ref": source.uri("a/cat1.jpg")}  # no width/height without a probe
    # Unprobed, the fake, tiny and huge images pass; the cheap filters still apply.
    assert report.objects == {"input": 8}
    assert report.skipped == Counter({"extension": 1, "empty": 1, "too_large": 1, "duplicate": 1})


def test_min_side_needs_probe():
    with pytest.raises(UsageError, match="--probe"):
        BuildOptions(min_side=256)


class FailingReads(LocalStore):
    """A folder whose objects named in `fail` cannot be read: deleted, or denied."""

    fail: dict[str, Exception] = {}

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if key in self.fail:
            raise self.fail[key]
        return super().get_range(key, start, length)


def test_vanished_and_access_denied_objects_are_skipped(tmp_path):
    source = FailingReads(tmp_path / "bucket")
    local_store(source.root, {f"{n}.jpg": image("JPEG", (32, 32), seed=n) for n in range(3)})
    source.fail = {"0.jpg": NotFound("gone"), "2.jpg": AccessDenied("s3://b/2.jpg: access denied (KMS)")}
    report, out = build(source, tmp_path / "out", BuildOptions(probe=True))
    assert [r["source-ref"] for r in read_jsonl(out, "input.manifest")] == [source.uri("1.jpg")]
    skipped = {r["source-ref"]: (r["reason"], r["detail"]) for r in read_jsonl(out, "skipped.jsonl")}
    assert skipped == {
        source.uri("0.jpg"): ("vanished", "deleted after the listing"),
        source.uri("2.jpg"): ("access_denied", "s3://b/2.jpg: access denied (KMS)"),
    }


def test_probe_fetches_more_for_a_deep_jpeg_header(tmp_path):
    segment = b"\xff\xe2" + struct.pack(">H", 60 * 1024 + 2) + b"\x00" * (60 * 1024)
    data = image("JPEG", (700, 500))
    deep = data[:2] + segment * 3 + data[2:]
    truncated = deep[: 100 * 1024]  # ends inside the APP2 segments: no frame header at all
    store = local_store(tmp_path, {"deep.jpg": deep, "cut.jpg": truncated})
    header = probe_image(store, "deep.jpg", len(deep))
    assert (header.format, header.width, header.height) == ("jpeg", 700, 500)
    assert probe_image(store, "cut.jpg", len(truncated)) is None


def test_splits_are_stable_when_objects_are_added(tmp_path):
    files = {f"img/{i:04d}.jpg": str(i).encode() for i in range(300)}
    source = local_store(tmp_path / "bucket", files)
    options = BuildOptions(splits=parse_splits("train=0.7,validation=0.2,test=0.1"), seed=7)

    def assignment(out) -> dict[str, str]:
        return {
            row["source-ref"]: split
            for split in ("train", "validation", "test")
            for row in read_jsonl(out, f"{split}.manifest")
        }

    report, out = build(source, tmp_path / "out1", options)
    before = assignment(out)
    assert len(before) == 300 and sum(report.objects.values()) == 300
    assert 170 <= report.objects["train"] <= 250 and report.objects["test"] >= 10

    local_store(source.root, {f"img/{i:04d}.jpg": str(i).encode() for i in range(300, 600)})
    local_store(source.root, {"img/0000a.jpg": b"wedged between old keys"})
    _, out = build(source, tmp_path / "out2", options)
    after = assignment(out)
    assert len(after) == 601
    assert {ref: after[ref] for ref in before} == before  # nothing moved

    _, out = build(source, tmp_path / "out3", BuildOptions(splits=options.splits, seed=8))
    reseeded = assignment(out)
    assert sum(reseeded[ref] != after[ref] for ref in after) > 100  # the seed matters


def test_split_fractions_hold_on_many_keys():
    splits = parse_splits("train=0.8,validation=0.2")
    counts = Counter(assign_split(f"images/{i}.jpg", splits, seed=0) for i in range(20_000))
    assert abs(counts["train"] / 20_000 - 0.8) < 0.01
    assert assign_split("images/1.jpg", splits, 0) == assign_split("images/1.jpg", splits, 0)


def test_sample_is_seeded_exact_and_independent_of_the_split(tmp_path):
    source = local_store(tmp_path / "bucket", {f"{i:04d}.jpg": str(i).encode() for i in range(400)})
    splits = parse_splits("a=0.5,b=0.5")

    def sample(seed: int, name: str) -> tuple[set[str], dict]:
        report, out = build(source, tmp_path / name, BuildOptions(sample=60, seed=seed, splits=splits))
        refs = {row["source-ref"] for split in ("a", "b") for row in read_jsonl(out, f"{split}.manifest")}
        return refs, report.objects

    first, objects = sample(1, "s1")
    again, _ = sample(1, "s2")
    other, _ = sample(2, "s3")
    assert len(first) == 60 and first == again
    assert len(first & other) < 30  # two seeds pick mostly different objects (9 in common on average)
    # The sample and the split hash with different domains, so the sample is not all one split.
    assert 15 <= objects["a"] <= 45 and objects["a"] + objects["b"] == 60


def test_sample_keeps_the_smallest_ranks_and_writes_them_in_key_order(tmp_path):
    keys = [f"{i:03d}.jpg" for i in range(200)]
    source = local_store(tmp_path / "bucket", {k: k.encode() for k in keys})
    report, out = build(source, tmp_path / "out", BuildOptions(sample=20, seed=3))
    expected = sorted(sorted(keys, key=lambda k: manifest_build._hash64("sample", 3, k))[:20])
    assert [r["source-ref"] for r in read_jsonl(out, "input.manifest")] == [source.uri(k) for k in expected]
    assert report.sampled_out == 180
    assert read_jsonl(out, "skipped.jsonl") == []  # left out of a sample is not "skipped"


def test_sample_with_probe_does_not_probe_objects_that_cannot_get_in(tmp_path, monkeypatch):
    source = local_store(tmp_path / "bucket", {f"{i:03d}.png": png_header(300 + i, 300) for i in range(400)})
    probed = []
    real = LocalStore.get_range
    monkeypatch.setattr(
        LocalStore, "get_range", lambda self, k, s, n: probed.append(k) or real(self, k, s, n)
    )
    report, out = build(source, tmp_path / "out", BuildOptions(sample=10, probe=True, workers=2))
    assert report.accepted == 10
    assert len(probed) < 150  # about 10 x ln(400 / 10) ~ 47 expected, not 400
    rows = read_jsonl(out, "input.manifest")
    assert all(row["width"] >= 300 for row in rows)


@pytest.mark.parametrize("probe", [False, True])
def test_limit_takes_the_first_accepted_objects_in_key_order(tmp_path, probe):
    files = {f"{i:03d}.jpg": image("JPEG", (20, 20), seed=i) for i in range(40)}
    files["002.jpg"] = b"not an image"
    source = local_store(tmp_path / "bucket", files)
    report, out = build(source, tmp_path / "out", BuildOptions(limit=5, probe=probe, workers=3))
    expected = ["000", "001", "003", "004", "005"] if probe else ["000", "001", "002", "003", "004"]
    assert [r["source-ref"] for r in read_jsonl(out, "input.manifest")] == [
        source.uri(f"{k}.jpg") for k in expected
    ]
    assert report.accepted == 5


def test_limit_and_sample_exclude_each_other():
    with pytest.raises(UsageError, match="cannot be combined"):
        BuildOptions(limit=3, sample=3)


def test_dedupe_none_keeps_duplicates(tmp_path):
    source = local_store(tmp_path / "bucket", {"a.jpg": b"same", "b.jpg": b"same"})
    report, _ = build(source, tmp_path / "out", BuildOptions(dedupe=False))
    assert report.objects == {"input": 2}
    report, _ = build(source, tmp_path / "out", BuildOptions())
    assert report.objects == {"input": 1} and report.skipped == Counter({"duplicate": 1})


def test_dest_ending_in_manifest_is_one_file(tmp_path):
    source = local_store(tmp_path / "bucket", {"a.jpg": b"1", "b.txt": b"2"})
    dest = plan_destination(str(tmp_path / "out" / "pets.manifest"))
    report = build_manifest(source, dest, BuildOptions())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pets.manifest", "pets.skipped.jsonl"]
    assert report.manifests == {"input": (tmp_path / "out" / "pets.manifest").as_uri()}
    with pytest.raises(UsageError, match="folder or prefix"):
        plan_destination(str(tmp_path / "x.manifest"), ["train", "validation"])


def test_build_to_s3_dest(s3, tmp_path):
    source = local_store(tmp_path / "bucket", {"a.jpg": b"1"})
    s3_client(s3).create_bucket(Bucket="out-bucket")
    dest = plan_destination("s3://out-bucket/manifests/", (), s3)
    report = build_manifest(source, dest, BuildOptions())
    assert report.manifests == {"input": "s3://out-bucket/manifests/input.manifest"}
    assert read_jsonl(dest.store, "input.manifest") == [{"source-ref": source.uri("a.jpg")}]


def test_empty_source_is_an_error_and_writes_nothing(s3, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no objects found"):
        build(LocalStore(tmp_path / "empty"), tmp_path / "out", BuildOptions())
    assert not (tmp_path / "out").exists()
    s3_client(s3).create_bucket(Bucket=BUCKET)
    with pytest.raises(InputError, match="no objects found"):
        build(S3Store(BUCKET, "images", s3_client(s3)), tmp_path / "out", BuildOptions())


def test_missing_source_bucket_and_folder(s3, tmp_path):
    with pytest.raises(NotFound, match="bucket does not exist"):
        build(S3Store("no-such-bucket", "", s3_client(s3)), tmp_path / "out", BuildOptions())
    with pytest.raises(NotFound, match="folder does not exist"):
        build(LocalStore(tmp_path / "nope"), tmp_path / "out", BuildOptions())


def test_missing_dest_bucket_fails_before_listing(s3, tmp_path, monkeypatch):
    source = local_store(tmp_path / "bucket", {"a.jpg": b"1"})
    monkeypatch.setattr(LocalStore, "list", lambda *a: pytest.fail("listed the source first"))
    dest = plan_destination("s3://no-such-bucket/m/", (), s3)
    with pytest.raises(NotFound, match="bucket does not exist"):
        build_manifest(source, dest, BuildOptions())


def test_access_denied_listing(s3, tmp_path):
    source = s3_store(s3, {"a.jpg": b"1"})

    def refuse(**_):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "ListObjectsV2")

    source.client.meta.events.register("before-call.s3.ListObjectsV2", refuse)
    with pytest.raises(AccessDenied):
        build(source, tmp_path / "out", BuildOptions())


def test_option_parsing():
    assert parse_splits("train=0.8, validation=0.2") == (("train", 0.8), ("validation", 0.2))
    for bad, message in [
        ("train=0.8,validation=0.1", "sum to 0.9"),
        ("train=0.5,train=0.5", "twice"),
        ("train", "NAME=FRACTION"),
        ("tr/ain=1", "NAME=FRACTION"),
        ("train=x", "not a number"),
        ("train=0,val=1", "above 0"),
    ]:
        with pytest.raises(UsageError, match=message):
            parse_splits(bad)
    assert parse_size("6MB") == 6 * 1024 * 1024
    assert parse_size("512k") == 512 * 1024 and parse_size("1.5KiB") == 1536 and parse_size("100") == 100
    with pytest.raises(UsageError, match="not a size"):
        parse_size("6 parsecs")
    assert manifest.parse_extensions(" JPG, .png,,") == {"jpg", "png"}
    with pytest.raises(UsageError, match="no extension"):
        BuildOptions(extensions=manifest.parse_extensions(" , "))


# ------------------------------------------------------------------------- reading and writing


def test_read_manifest_handles_bom_crlf_and_blank_lines(tmp_path):
    text = (
        '\ufeff{"source-ref": "s3://bucket-a/1.jpg"}\r\n'
        "\r\n"
        '   {"source-ref": "s3://bucket-a/2.jpg", "extra": {"kept": true}}  \r\n'
        "\n"
        '{"source-ref": "file:///data/3.jpg"}'  # no newline at the end
    )
    (tmp_path / "m.manifest").write_bytes(text.encode("utf-8"))
    rows = list(read_manifest(LocalStore(tmp_path), "m.manifest"))
    assert rows == [
        (1, {"source-ref": "s3://bucket-a/1.jpg"}),
        (3, {"source-ref": "s3://bucket-a/2.jpg", "extra": {"kept": True}}),
        (5, {"source-ref": "file:///data/3.jpg"}),
    ]


def test_read_manifest_across_chunk_boundaries(tmp_path, monkeypatch):
    lines = [json.dumps({"source-ref": f"s3://bucket-a/{'x' * i}.jpg"}) for i in range(40)]
    (tmp_path / "m.manifest").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    monkeypatch.setattr(manifest_jsonl, "_READ_CHUNK", 7)  # splits lines, and CRLF pairs, everywhere
    rows = list(read_manifest(LocalStore(tmp_path), "m.manifest"))
    assert [row["source-ref"] for _, row in rows] == [json.loads(line)["source-ref"] for line in lines]
    assert [number for number, _ in rows] == list(range(1, 41))


def test_read_manifest_names_the_bad_line(tmp_path):
    (tmp_path / "m.manifest").write_text(
        '{"source-ref": "s3://bucket-a/1.jpg"}\n{"source-ref": "s3://bucket-a/2.jpg"\n[]\n'
    )
    store = LocalStore(tmp_path)
    with pytest.raises(
        InputError, match=r"^m\.manifest:2: not valid JSON: Expecting ',' delimiter \(column 37\)"
    ):
        list(read_manifest(store, "m.manifest", name="m.manifest"))
    errors: list[InputError] = []
    rows = list(read_manifest(store, "m.manifest", errors=errors))
    assert [number for number, _ in rows] == [1]
    uri = store.uri("m.manifest")
    assert [e.message for e in errors] == [
        f"{uri}:2: not valid JSON: Expecting ',' delimiter (column 37)",
        f"{uri}:3: a line must be a JSON object, not an array",
    ]


def test_read_manifest_from_s3_and_missing_manifest(s3):
    store = s3_store(s3, {"m.manifest": b'{"source-ref": "s3://bucket-a/1.jpg"}\n'}, prefix="m")
    assert list(read_manifest(store, "m.manifest")) == [(1, {"source-ref": "s3://bucket-a/1.jpg"})]
    with pytest.raises(NotFound):
        list(read_manifest(store, "other.manifest"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"source-ref": NaN}', "NaN is not JSON"),
        (b"\xff\xfe{}", "not UTF-8 text (byte 1)"),
        (b'"s3://bucket-a/x.jpg"', "not a string"),
        (b'{"source_ref": "s3://bucket-a/x.jpg"}', 'no "source-ref" key'),
        (b'{"source-ref": 7}', "must be a string, not a number"),
        (b'{"source-ref": "s3://Bad_Bucket/x.jpg"}', "not a valid S3 bucket name"),
        (b'{"source-ref": "s3://bucket-a/"}', "names no object"),
        (b'{"source-ref": "s3://bucket-a"}', "names no object"),
        (b'{"source-ref": "https://example.com/x.jpg"}', "not an s3:// or file:// URI"),
        (b'{"source-ref": "file://host/x.jpg"}', "not a file:///PATH URI"),
        (b'{"source-ref": " s3://bucket-a/x.jpg"}', "leading or trailing spaces"),
    ],
)
def test_parse_line_problems(raw, message):
    with pytest.raises(ValueError, match=re.escape(message) if "(" in message else message):
        parse_line(raw)


def test_write_jsonl_round_trip_local_and_s3(s3, tmp_path):
    rows = [{"source-ref": f"s3://bucket-a/ünïcode {i}.jpg", "n": i} for i in range(1000)]
    client = s3_client(s3)
    client.create_bucket(Bucket=BUCKET)
    for store in (LocalStore(tmp_path), S3Store(BUCKET, "out", client)):
        assert write_jsonl(store, "x.manifest", rows) == 1000
        assert [row for _, row in read_manifest(store, "x.manifest")] == rows
        assert store.get("x.manifest").count(b"\n") == 1000
        assert write_jsonl(store, "empty.manifest", []) == 0
        assert store.get("empty.manifest") == b""


# ---------------------------------------------------------------------------------- checking


def test_check_reports_every_bad_line_and_continues(tmp_path):
    (tmp_path / "train.manifest").write_text(
        '{"source-ref": "s3://bucket-a/1.jpg"}\nnot json\n\n{"no": 1}\n{"source-ref": "s3://bucket-a/2.jpg"}\n'
    )
    (tmp_path / "validation.manifest").write_text(
        '{"source-ref": "s3://bucket-a/2.jpg"}\n{"source-ref": "s3://bucket-a/3.jpg"}\n'
    )
    store = LocalStore(tmp_path)
    report = check_manifests(
        [
            ("train.manifest", store, "train.manifest"),
            ("missing.manifest", store, "missing.manifest"),
            ("validation.manifest", store, "validation.manifest"),
        ]
    )
    assert report.errors == [
        f"{tmp_path / 'missing.manifest'}: no such file",
        "train.manifest:2: not valid JSON: Expecting value (column 1)",
        'train.manifest:4: no "source-ref" key',
        "validation.manifest:1: duplicate source-ref s3://bucket-a/2.jpg, first at train.manifest:5",
    ]
    assert report.error_count == 4
    assert report.manifests == [
        {"manifest": "train.manifest", "lines": 5, "objects": 2},
        {"manifest": "missing.manifest", "lines": 0, "objects": 0},
        {"manifest": "validation.manifest", "lines": 2, "objects": 2},
    ]
    assert report.splits == {"train": 2, "validation": 2}
    assert report.health == []
    assert report.as_dict()["ok"] is False


def test_check_verifies_objects_local_and_s3(s3, tmp_path):
    (tmp_path / "here.jpg").write_bytes(b"x")
    client = s3_client(s3)
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="there/a b.jpg", Body=b"x")
    lines = [
        {"source-ref": (tmp_path / "here.jpg").as_uri()},
        {"source-ref": (tmp_path / "gone.jpg").as_uri()},
        {"source-ref": f"s3://{BUCKET}/there/a b.jpg"},
        {"source-ref": f"s3://{BUCKET}/there/missing.jpg"},
        {"source-ref": "s3://no-such-bucket/a.jpg"},
    ]
    (tmp_path / "m.manifest").write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = check_manifests(
        [("m.manifest", LocalStore(tmp_path), "m.manifest")], verify=object_checker(s3, workers=3), workers=3
    )
    assert report.errors == [
        f"m.manifest:2: {(tmp_path / 'gone.jpg').as_uri()}: no such file",
        f"m.manifest:4: s3://{BUCKET}/there/missing.jpg: no such object (or no such bucket)",
        "m.manifest:5: s3://no-such-bucket/a.jpg: no such object (or no such bucket)",
    ]


def labeled_line(ref: str, boxes: list[tuple[str, int]], size=(640, 480), split: str | None = None) -> dict:
    """An augmented manifest line with boxes given as (label, width)."""
    labels = sorted({label for label, _ in boxes})
    line = {
        "source-ref": ref,
        "bbox": {
            "image_size": [{"width": size[0], "height": size[1], "depth": 3}],
            "annotations": [
                {"class_id": labels.index(label), "left": 10, "top": 10, "width": width, "height": 40}
                for label, width in boxes
            ],
        },
        "bbox-metadata": {
            "objects": [{"confidence": 0.9} for _ in boxes],
            "class-map": {str(i): label for i, label in enumerate(labels)},
            "type": "groundtruth/object-detection",
            "human-annotated": "yes",
        },
    }
    if split:
        line["split"] = split
    return line


def test_health_report_of_an_augmented_manifest(tmp_path):
    lines = []
    for i in range(120):  # car in 120 images, two boxes each, one of them narrow
        lines.append(labeled_line(f"s3://bucket-a/c{i}.jpg", [("car", 50), ("car", 20)], split="train"))
    for i in range(40):  # person in 40 images (under 50), with a car; small images
        lines.append(labeled_line(f"s3://bucket-a/p{i}.jpg", [("person", 60), ("car", 60)], size=(200, 300)))
    lines.append(labeled_line("s3://bucket-a/empty.jpg", [], split="validation"))
    lines.append(labeled_line("s3://bucket-a/out.jpg", [("car", 700)], split="validation"))  # outside
    (tmp_path / "out.manifest").write_text("".join(json.dumps(line) + "\n" for line in lines))

    report = check_manifests([("out.manifest", LocalStore(tmp_path), "out.manifest")])

    assert report.errors == []
    assert report.splits == {"train": 120, "validation": 2}
    (health,) = report.health
    assert health == {
        "label_attribute": "bbox",
        "images": 162,
        "boxes": 120 * 2 + 40 * 2 + 1,
        "labels": [
            {"label": "car", "images": 161, "boxes": 281},
            {"label": "person", "images": 40, "boxes": 40},
        ],
        "labels_under_50_images": ["person"],
        "balance": {
            "rarest": "person",
            "most_common": "car",
            "ratio": round(40 / 161, 4),
            "below_1_to_2": True,
        },
        "images_without_boxes": 1,
        "images_under_256_px": 40,
        "images_without_size": 0,
        "boxes_narrower_than_30_px": 120,
        "boxes_outside_image": 1,
    }


def test_check_reports_malformed_annotations(tmp_path):
    good = labeled_line("s3://bucket-a/1.jpg", [("car", 50)])
    bad_width = labeled_line("s3://bucket-a/2.jpg", [("car", 50)])
    bad_width["bbox"]["annotations"][0]["width"] = "50"
    negative = labeled_line("s3://bucket-a/3.jpg", [("car", -5)])
    bad_map = labeled_line("s3://bucket-a/4.jpg", [("car", 50)])
    bad_map["bbox-metadata"]["class-map"] = ["car"]
    (tmp_path / "m.manifest").write_text(
        "".join(json.dumps(line) + "\n" for line in (good, bad_width, negative, bad_map))
    )
    report = check_manifests([("m.manifest", LocalStore(tmp_path), "m.manifest")])
    assert report.errors == [
        "m.manifest:2: bbox.annotations[0]: 'width' must be a number",
        "m.manifest:3: bbox.annotations[0]: negative width or height",
        "m.manifest:4: bbox-metadata.class-map: must be an object",
    ]
    assert report.health[0]["images"] == 1


@pytest.mark.skipif(not (SAMPLE_BUCKET / "truth.jsonl").is_file(), reason="no sample bucket")
def test_sample_bucket_against_its_truth(tmp_path):
    truth = {
        row["key"]: (row["width"], row["height"])
        for row in map(json.loads, (SAMPLE_BUCKET / "truth.jsonl").read_text().splitlines())
    }
    source = LocalStore(SAMPLE_BUCKET)
    report, out = build(source, tmp_path / "out", BuildOptions(probe=True, min_side=256))
    accepted = {
        r["source-ref"].removeprefix(source.root_uri): (r["width"], r["height"])
        for r in read_jsonl(out, "input.manifest")
    }
    skipped = {r["source-ref"].removeprefix(source.root_uri): r for r in read_jsonl(out, "skipped.jsonl")}

    # Every readable image is either in the manifest with its true size, too small, or a duplicate.
    for key, size in truth.items():
        if key in accepted:
            assert accepted[key] == size
        else:
            assert skipped[key]["reason"] in ("too_small", "duplicate"), key
            assert skipped[key]["reason"] == "duplicate" or min(size) < 256
    assert all(min(size) >= 256 for size in accepted.values())
    # Files that are not in the truth are images in name only.
    for key in (k for k in skipped if k not in truth and k != "truth.jsonl"):
        assert skipped[key]["reason"] == "unreadable", key
    assert skipped["truth.jsonl"]["reason"] == "extension"
    assert report.skipped["duplicate"] == 1 and report.skipped["unreadable"] >= 2

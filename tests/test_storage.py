"""ObjectStore on S3 (moto) and on a local folder: listing, reads, conditional writes, errors."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from orchestrator.errors import AccessDenied, NotFound, PreconditionFailed, StorageError
from orchestrator.storage import LocalStore, S3Store, join_key, open_object, open_store, s3_client

BUCKET = "labeljob-test"


@pytest.fixture
def s3_client_(s3):
    client = s3_client(s3)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """The same store contract on both backends, rooted at a prefix."""
    if request.param == "local":
        return LocalStore(tmp_path / "root")
    client = request.getfixturevalue("s3_client_")
    return S3Store(BUCKET, "root/prefix", client)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ---------------------------------------------------------------------------------- listing


def test_listing_pages_through_more_than_1000_objects(s3_client_):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    # Straight into moto's backend: 1,010 PutObject calls through botocore would take seconds.
    keys = [f"imgs/{i:05d}.jpg" for i in range(1010)]
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for key in keys:
        backend.put_object(BUCKET, key, key.encode())
    requests = []
    s3_client_.meta.events.register("before-call.s3.ListObjectsV2", lambda **kw: requests.append(kw))

    listed = list(S3Store(BUCKET, "imgs", s3_client_).list())

    assert [o.key for o in listed] == [k.removeprefix("imgs/") for k in keys]
    assert len(requests) == 2  # 1,000 + 10: the paginator followed the continuation token
    first = listed[0]
    assert (first.size, first.etag, first.uri) == (
        14,
        md5(b"imgs/00000.jpg"),
        f"s3://{BUCKET}/imgs/00000.jpg",
    )


def test_both_stores_list_in_s3_key_order(store):
    # `a.jpg` < `a/…` < `a0.jpg` < `ab.jpg` byte-wise; a naive folder walk gets this wrong.
    keys = ["ab.jpg", "a/z.jpg", "a.jpg", "a0.jpg", "B.jpg", "a/b/c.jpg", "a-b.jpg", "é.jpg"]
    for key in keys:
        store.put(key, key.encode())
    listed = [o.key for o in store.list()]
    assert listed == sorted(keys, key=lambda k: k.encode())
    assert listed[:4] == ["B.jpg", "a-b.jpg", "a.jpg", "a/b/c.jpg"]


def test_listing_a_prefix_and_reported_sizes_and_etags(store):
    store.put("x/1.png", b"one")
    store.put("x/2.png", b"")
    store.put("y/3.png", b"three")
    listed = {o.key: o for o in store.list("x/")}
    assert set(listed) == {"x/1.png", "x/2.png"}
    assert (listed["x/1.png"].size, listed["x/1.png"].etag) == (3, md5(b"one"))
    assert listed["x/2.png"].size == 0
    assert listed["x/1.png"].uri == store.uri("x/1.png")


def test_s3_listing_skips_folder_placeholders(s3_client_):
    s3_client_.put_object(Bucket=BUCKET, Key="data/", Body=b"")
    s3_client_.put_object(Bucket=BUCKET, Key="data/a.jpg", Body=b"a")
    assert [o.key for o in S3Store(BUCKET, "data", s3_client_).list()] == ["a.jpg"]


def test_empty_store_lists_nothing(store, tmp_path):
    if isinstance(store, LocalStore):
        store.root.mkdir()
    assert list(store.list()) == []


# ------------------------------------------------------------------------------------ reads


def test_head_get_and_ranges(store):
    data = bytes(range(256)) * 4
    etag = store.put("dir/blob.bin", data)
    assert etag == md5(data)
    info = store.head("dir/blob.bin")
    assert (info.key, info.size, info.etag) == ("dir/blob.bin", 1024, md5(data))
    assert store.get("dir/blob.bin") == data
    assert store.get_range("dir/blob.bin", 0, 10) == data[:10]
    assert store.get_range("dir/blob.bin", 1000, 10) == data[1000:1010]
    assert store.get_range("dir/blob.bin", 1020, 100) == data[1020:]  # clipped at the end
    assert store.get_range("dir/blob.bin", 5000, 10) == b""  # past the end
    assert store.get_range("dir/blob.bin", 3, 0) == b""
    assert store.exists("dir/blob.bin") and not store.exists("dir/other.bin")


def test_range_of_an_empty_object_is_empty(store):
    store.put("empty.jpg", b"")
    assert store.get_range("empty.jpg", 0, 65536) == b""
    assert store.head("empty.jpg").size == 0


def test_missing_object_is_not_found(store):
    store.put("present", b"x")  # the folder or prefix exists; only the object is missing
    for call in (
        lambda: store.get("missing.jpg"),
        lambda: store.head("missing.jpg"),
        lambda: store.get_range("missing.jpg", 0, 10),
    ):
        with pytest.raises(NotFound):
            call()


def test_uris(store, tmp_path):
    if isinstance(store, LocalStore):
        assert store.uri("a b/c.jpg") == (tmp_path / "root").as_uri() + "/a%20b/c.jpg"
    else:
        assert store.uri("a b/c.jpg") == f"s3://{BUCKET}/root/prefix/a b/c.jpg"


def test_read_url(store):
    store.put("img.jpg", b"x")
    url = store.read_url("img.jpg", expires_in=60)
    if isinstance(store, LocalStore):
        assert url == store.path("img.jpg").as_uri()
    else:
        assert url.startswith(f"https://{BUCKET}.s3.amazonaws.com/root/prefix/img.jpg?")
        assert "Signature=" in url


def test_delete(store):
    store.put("gone.txt", b"x")
    store.delete("gone.txt")
    assert not store.exists("gone.txt")
    store.delete("gone.txt")  # deleting twice is fine


# ------------------------------------------------------------------------------- conditional


def test_second_create_fails(store):
    etag = store.put_if_absent("jobs/a/job.json", b'{"v": 1}')
    assert etag == md5(b'{"v": 1}')
    with pytest.raises(PreconditionFailed):
        store.put_if_absent("jobs/a/job.json", b'{"v": 2}')
    assert store.get("jobs/a/job.json") == b'{"v": 1}'


def test_if_match_replaces_only_what_was_read(store):
    first = store.put("rec.json", b"1")
    second = store.put_if_match("rec.json", b"2", first)
    assert second == md5(b"2")
    with pytest.raises(PreconditionFailed):
        store.put_if_match("rec.json", b"3", first)  # stale: the record moved on to "2"
    assert store.get("rec.json") == b"2"
    assert store.put_if_match("rec.json", b"3", second) == md5(b"3")
    assert store.get("rec.json") == b"3"


def test_local_concurrent_creates_have_one_winner(tmp_path):
    store = LocalStore(tmp_path)

    def create(i: int) -> bool:
        try:
            store.put_if_absent("lock", str(i).encode())
        except PreconditionFailed:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(create, range(16)))
    assert wins.count(True) == 1


# ----------------------------------------------------------------------------- local safety


@pytest.mark.parametrize(
    "key", ["../../etc/passwd", "/etc/passwd", "a/../../x", "..", "\\..\\x", "a/\x00b", "", "."]
)
def test_local_keys_cannot_leave_the_root(tmp_path, key):
    store = LocalStore(tmp_path / "root")
    with pytest.raises(StorageError):
        store.path(key)
    with pytest.raises(StorageError):
        store.put(key, b"x")
    with pytest.raises(StorageError):
        store.get(key)
    assert not (tmp_path / "x").exists()


def test_local_symlink_out_of_the_root_is_refused(tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    with pytest.raises(StorageError, match="outside the store root"):
        LocalStore(root).get("link.txt")


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a/b.json", b"1")
    store.put("a/b.json", b"2")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.json"]


def test_missing_local_folder_is_not_found(tmp_path):
    with pytest.raises(NotFound, match="folder does not exist"):
        list(LocalStore(tmp_path / "nope").list())


# --------------------------------------------------------------------------------- S3 errors


def test_missing_bucket_is_not_found(s3):
    store = S3Store("no-such-bucket-here", "", s3_client(s3))
    for call in (lambda: list(store.list()), lambda: store.get("k"), lambda: store.put("k", b"x")):
        with pytest.raises(NotFound, match="bucket does not exist"):
            call()


def deny(client, operation: str) -> None:
    """Make `operation` answer 403 AccessDenied, as S3 does for a missing permission."""

    def refuse(**_):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, operation)

    client.meta.events.register(f"before-call.s3.{operation}", refuse)


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        ("ListObjectsV2", lambda s: list(s.list())),
        ("GetObject", lambda s: s.get("a.jpg")),
        ("GetObject", lambda s: s.get_range("a.jpg", 0, 4)),
        ("HeadObject", lambda s: s.head("a.jpg")),
        ("PutObject", lambda s: s.put("b.jpg", b"x")),
    ],
)
def test_access_denied_is_mapped(s3_client_, operation, call):
    s3_client_.put_object(Bucket=BUCKET, Key="a.jpg", Body=b"abcd")
    deny(s3_client_, operation)
    with pytest.raises(AccessDenied, match="access denied") as denied:
        call(S3Store(BUCKET, "", s3_client_))
    assert denied.value.hint and "--profile" in denied.value.hint


def test_s3_store_needs_a_bucket(s3):
    with pytest.raises(StorageError, match="no bucket"):
        open_store("s3:///prefix", s3)


# ---------------------------------------------------------------------------------- opening


def test_open_store_and_object(s3, tmp_path):
    s3_store = open_store("s3://bkt/some/prefix/", s3)
    assert isinstance(s3_store, S3Store)
    assert (s3_store.bucket, s3_store.prefix, s3_store.root_uri) == (
        "bkt",
        "some/prefix",
        "s3://bkt/some/prefix/",
    )
    assert isinstance(open_store(tmp_path), LocalStore)
    assert open_store(tmp_path.as_uri()).root == tmp_path.resolve()
    with pytest.raises(StorageError, match="unsupported"):
        open_store("gs://bucket/x")

    obj_store, key = open_object("s3://bkt/a/b.manifest", s3)
    assert (obj_store.bucket, key) == ("bkt", "a/b.manifest")
    local, name = open_object(tmp_path / "m" / "x.manifest")
    assert (local.root, name) == ((tmp_path / "m").resolve(), "x.manifest")
    with pytest.raises(StorageError, match="names a bucket"):
        open_object("s3://bkt/", s3)


@pytest.mark.parametrize("key", ["a/100%25 off.jpg", "a/shot #1.jpg", "a/why?.jpg", "a/space and+plus.jpg"])
def test_s3_uris_round_trip_keys_with_url_characters(s3_client_, s3, key):
    """A source-ref is the raw key S3Store.uri writes: nothing percent-decoded, nothing cut at # or ?."""
    store = S3Store(BUCKET, "", s3_client_)
    store.put(key, b"image bytes")
    opened, opened_key = open_object(store.uri(key), s3)
    assert opened_key == key
    assert opened.get(opened_key) == b"image bytes"
    folder = open_store(f"s3://{BUCKET}/a/", s3)
    assert [info.uri for info in folder.list()] == [store.uri(key)]


def test_join_key():
    assert join_key("a/", "/b/", "", "c") == "a/b/c"

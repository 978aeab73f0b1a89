"""One object store over `s3://bucket/prefix` and local folders.

Keys are always relative to the store's root and use `/`. Both implementations give the same
guarantees: atomic puts, create-only puts (If-None-Match) and replace-only-what-you-read puts
(If-Match), so job records survive crashes and concurrent writers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mimetypes
import os
import posixpath
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote, unquote, urlparse

from orchestrator.aws import error_code, error_message
from orchestrator.errors import AccessDenied, NotFound, PreconditionFailed, StorageError

if TYPE_CHECKING:
    import boto3

# S3 answers these codes for a lost conditional write: 412 for a failed precondition, 409 when
# another conditional write to the same key is in flight.
_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_NOT_FOUND_CODES = {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}
_DENIED_CODES = {"AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


@dataclass(frozen=True)
class ObjectInfo:
    """An object in a store: its key relative to the store root, size, ETag and full URI."""

    key: str
    size: int
    etag: str
    uri: str


class ObjectStore(Protocol):
    root_uri: str

    def uri(self, key: str) -> str: ...
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def head(self, key: str) -> ObjectInfo: ...
    def exists(self, key: str) -> bool: ...
    def get(self, key: str) -> bytes: ...
    def get_range(self, key: str, start: int, length: int) -> bytes: ...
    def put(self, key: str, data: bytes, content_type: str | None = None) -> str: ...
    def put_if_absent(self, key: str, data: bytes, content_type: str | None = None) -> str: ...
    def put_if_match(self, key: str, data: bytes, etag: str, content_type: str | None = None) -> str: ...
    def delete(self, key: str) -> None: ...
    def read_url(self, key: str, expires_in: int = 3600) -> str: ...


def is_s3_uri(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Bucket and key of an `s3://bucket/key` URI.

    Keys are raw, as S3 stores them and `S3Store.uri` writes them: no percent-decoding, and `#` or `?`
    are part of the key (a URL parser would cut the key there).
    """
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def bucket_name(uri: str) -> str:
    """The bucket of an `s3://bucket/key` URI."""
    return split_s3_uri(uri)[0]


def join_key(*parts: str) -> str:
    """Join key parts with single slashes, whatever trailing slashes the parts carry."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _content_type(key: str, content_type: str | None) -> str:
    return content_type or mimetypes.guess_type(key)[0] or "application/octet-stream"


# ---------------------------------------------------------------------------------------- S3


class S3Store:
    """A bucket, or a prefix inside one, reached through a caller's boto3 S3 client."""

    def __init__(self, bucket: str, prefix: str, s3_client) -> None:
        if not bucket:
            raise StorageError("s3:// URI has no bucket name", hint="write it as s3://BUCKET/PREFIX")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = s3_client
        self.root_uri = f"s3://{bucket}/{self.prefix + '/' if self.prefix else ''}"

    def _full(self, key: str) -> str:
        return join_key(self.prefix, key)

    def _rel(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    @contextlib.contextmanager
    def _errors(self, what: str):
        from botocore.exceptions import ClientError

        try:
            yield
        except ClientError as exc:
            raise _map_client_error(exc, what) from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full_prefix = join_key(self.prefix, prefix)
        if full_prefix and (prefix == "" or prefix.endswith("/")):
            full_prefix += "/"
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors(f"s3://{self.bucket}/{full_prefix}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for obj in page.get("Contents", ()):
                    if obj["Key"].endswith("/"):
                        continue  # folder placeholder objects made by consoles
                    yield ObjectInfo(
                        key=self._rel(obj["Key"]),
                        size=obj["Size"],
                        etag=obj.get("ETag", "").strip('"'),
                        uri=f"s3://{self.bucket}/{obj['Key']}",
                    )

    def head(self, key: str) -> ObjectInfo:
        with self._errors(self.uri(key)):
            meta = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        return ObjectInfo(key, meta["ContentLength"], meta.get("ETag", "").strip('"'), self.uri(key))

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except NotFound:
            return False
        return True

    def get(self, key: str) -> bytes:
        with self._errors(self.uri(key)):
            return self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"].read()

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        with self._errors(self.uri(key)):
            resp = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            return resp["Body"].read(), resp.get("ETag", "").strip('"')

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        with self._errors(self.uri(key)):
            try:
                resp = self.client.get_object(
                    Bucket=self.bucket, Key=self._full(key), Range=f"bytes={start}-{start + length - 1}"
                )
            except Exception as exc:  # an empty object cannot satisfy any range
                if error_code(exc) == "InvalidRange":
                    return b""
                raise
            return resp["Body"].read()

    def _put(self, key: str, data: bytes, content_type: str | None, **conditions) -> str:
        with self._errors(self.uri(key)):
            resp = self.client.put_object(
                Bucket=self.bucket,
                Key=self._full(key),
                Body=data,
                ContentType=_content_type(key, content_type),
                **conditions,
            )
        return resp.get("ETag", "").strip('"')

    def put(self, key: str, data: bytes, content_type: str | None = None) -> str:
        return self._put(key, data, content_type)

    def put_if_absent(self, key: str, data: bytes, content_type: str | None = None) -> str:
        return self._put(key, data, content_type, IfNoneMatch="*")

    def put_if_match(self, key: str, data: bytes, etag: str, content_type: str | None = None) -> str:
        return self._put(key, data, content_type, IfMatch=f'"{etag}"')

    def delete(self, key: str) -> None:
        with self._errors(self.uri(key)):
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def read_url(self, key: str, expires_in: int = 3600) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._full(key)}, ExpiresIn=expires_in
        )


def _map_client_error(exc: Exception, what: str) -> StorageError:
    code = error_code(exc)
    status = str(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    if code in _PRECONDITION_CODES or status in {"412", "409"}:
        return PreconditionFailed(f"{what}: changed since it was read or already exists ({code})")
    if code == "NoSuchBucket":
        return NotFound(f"{what}: bucket does not exist", hint="check the bucket name and the region")
    if code in _NOT_FOUND_CODES or status == "404":
        return NotFound(f"{what}: no such object")
    if code in _DENIED_CODES or status == "403":
        return AccessDenied(
            f"{what}: access denied ({code or status})",
            hint="check the credentials (--profile) and the bucket policy; "
            "`labeljob iam-policy` lists what is needed",
        )
    message = error_message(exc)
    return StorageError(f"{what}: {code or status}: {message}")


# ------------------------------------------------------------------------------------- local


def _create_temp(folder: Path) -> tuple[int, str]:
    """A new temporary file in `folder`, open for writing, with mode 0666 less the umask.

    Manifests, exports and reports are for people and tools other than this process, so they get
    the permissions any new file gets (mkstemp's 0600 would hide them); the kernel applies the
    umask at creation, which reading it with os.umask() could not do safely across threads.
    """
    while True:
        tmp = str(folder / f".tmp-{secrets.token_hex(8)}.part")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
def _lock_folder() -> int:
    """A descriptor of this user's lock folder in the system temp folder, made owner-only.

    The temp folder is shared: another user could plant the folder or a symbolic link in its place,
    so it is opened without following links and refused unless this user owns it and nobody else
    may write to it.
    """
    path = os.path.join(tempfile.gettempdir(), f"labeljob-locks-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:  # a symbolic link (ELOOP) or a file (ENOTDIR) in its place
        fd = None
    info = os.fstat(fd) if fd is not None else None
    if info is None or info.st_uid != os.getuid() or info.st_mode & 0o022:
        if fd is not None:
            os.close(fd)
        raise StorageError(
            f"{path} is not this user's private lock folder", hint="remove it; labeljob makes a new one"
        )
    return fd


class LocalStore:
    """A folder on this machine. Keys never reach outside it."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root_uri = self.root.as_uri() + "/"

    def path(self, key: str) -> Path:
        """The file behind `key`, refusing keys that would leave the root."""
        if "\x00" in key:
            raise StorageError(f"key {key!r} contains a NUL byte")
        norm = posixpath.normpath("/" + key.replace("\\", "/")).lstrip("/")
        parts = key.replace("\\", "/").split("/")
        if key.startswith(("/", "\\")) or ".." in parts or not norm or norm == ".":
            raise StorageError(f"key {key!r} is outside the store root {self.root}")
        target = (self.root / norm).resolve()
        if not self._holds(target):
            raise StorageError(f"key {key!r} is outside the store root {self.root}")
        return target

    def _holds(self, path: Path) -> bool:
        """Whether `path`, once its symbolic links are resolved, lies inside the root."""
        resolved = path.resolve()
        return resolved == self.root or self.root in resolved.parents

    def uri(self, key: str) -> str:
        return self.root_uri + quote(join_key(key))

    def _info(self, key: str, path: Path) -> ObjectInfo:
        data = path.read_bytes()
        return ObjectInfo(key, len(data), _etag(data), self.uri(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            raise NotFound(f"{self.root}: folder does not exist")
        start = self.path(prefix) if prefix else self.root  # refuses a prefix that leads out of the root
        if not start.is_dir():
            start = self.root  # a prefix of names, not a folder
        for path in _files_in_key_order(start):
            key = path.relative_to(self.root).as_posix()
            # A symbolic link leading out of the root is skipped: get() refuses its key too.
            if not key.startswith(prefix) or not self._holds(path):
                continue
            # The ETag is an MD5 as S3 gives for single-part uploads, so de-duplication
            # behaves the same on both stores; it costs one read per file.
            yield ObjectInfo(key, path.stat().st_size, _file_md5(path), self.uri(key))

    def head(self, key: str) -> ObjectInfo:
        path = self.path(key)
        if not path.is_file():
            raise NotFound(f"{path}: no such file")
        return ObjectInfo(key, path.stat().st_size, _file_md5(path), self.uri(key))

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{path}: no such file") from None
        except PermissionError:
            raise AccessDenied(f"{path}: permission denied") from None
        except IsADirectoryError:
            raise NotFound(f"{path}: is a folder, not a file") from None

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, _etag(data)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        path = self.path(key)
        try:
            with path.open("rb") as fh:
                fh.seek(start)
                return fh.read(max(0, length))
        except FileNotFoundError:
            raise NotFound(f"{path}: no such file") from None

    @contextlib.contextmanager
    def _lock(self):
        # One lock per store root, outside the root so it never shows up in listings.
        name = hashlib.sha256(str(self.root).encode()).hexdigest()[:32]
        folder = _lock_folder()
        try:
            fd = os.open(f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=folder)
        finally:
            os.close(folder)
        with os.fdopen(fd, "r+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write_atomic(self, path: Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return _etag(data)

    def put(self, key: str, data: bytes, content_type: str | None = None) -> str:
        return self._write_atomic(self.path(key), data)

    def put_if_absent(self, key: str, data: bytes, content_type: str | None = None) -> str:
        path = self.path(key)
        with self._lock():
            if path.exists():
                raise PreconditionFailed(f"{path}: already exists")
            return self._write_atomic(path, data)

    def put_if_match(self, key: str, data: bytes, etag: str, content_type: str | None = None) -> str:
        path = self.path(key)
        with self._lock():
            if not path.is_file():
                raise PreconditionFailed(f"{path}: no longer exists")
            if _file_md5(path) != etag:
                raise PreconditionFailed(f"{path}: changed since it was read")
            return self._write_atomic(path, data)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def read_url(self, key: str, expires_in: int = 3600) -> str:
        return self.path(key).as_uri()


def _files_in_key_order(folder: Path) -> Iterator[Path]:
    """The files under `folder` in the order S3 lists their keys (`a.jpg` before `a/b.jpg` before `ab.jpg`).

    Sorting a folder's entries by name, with `/` after folder names, orders them by their whole keys.
    Symbolic links to folders are not followed, as `os.walk` does not.
    """
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda e: e.name + "/" if e.is_dir(follow_symlinks=False) else e.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _files_in_key_order(Path(entry.path))
        elif entry.is_file():
            yield Path(entry.path)


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_or_empty(store: ObjectStore, prefix: str = "") -> Iterator[ObjectInfo]:
    """`store.list(prefix)`, where a local folder that does not exist yet lists as empty.

    Outputs and records appear in a local folder with their first write; a missing bucket is
    still NotFound.
    """
    try:
        yield from store.list(prefix)
    except NotFound:
        if not store.root_uri.startswith("file://"):
            raise


# ----------------------------------------------------------------------------------- opening


def s3_client(boto3_session: boto3.Session | None = None):
    """An S3 client with adaptive retries; `AWS_ENDPOINT_URL_S3` is honoured by botocore itself.

    SigV4 for presigned URLs too: botocore would presign with SigV2, which newer regions refuse.
    """
    from orchestrator.aws import client

    return client("s3", boto3_session, config_kwargs={"signature_version": "s3v4"})


def open_store(uri: str | os.PathLike, boto3_session: boto3.Session | None = None) -> ObjectStore:
    """The store rooted at `uri`: `s3://bucket/prefix`, `file:///path` or a plain path."""
    text = str(uri)
    if is_s3_uri(text):
        bucket, prefix = split_s3_uri(text)
        return S3Store(bucket, prefix, s3_client(boto3_session))
    if text.startswith("file://"):
        return LocalStore(unquote(urlparse(text).path))
    if "://" in text:
        raise StorageError(
            f"{text}: unsupported location", hint="use s3://BUCKET/PREFIX, file:///PATH or a path"
        )
    return LocalStore(text)


def open_object(
    uri: str | os.PathLike, boto3_session: boto3.Session | None = None
) -> tuple[ObjectStore, str]:
    """The store holding the object at `uri` and the object's key in it."""
    text = str(uri)
    if is_s3_uri(text):
        bucket, key = split_s3_uri(text)
        if not key:
            raise StorageError(f"{text}: names a bucket, not an object")
        return S3Store(bucket, "", s3_client(boto3_session)), key
    path = Path(unquote(urlparse(text).path) if text.startswith("file://") else text).expanduser().resolve()
    return LocalStore(path.parent), path.name

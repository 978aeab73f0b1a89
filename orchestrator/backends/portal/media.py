"""Where a job's images live and how the portal serves them.

At launch the manifest's source-refs are split into one root (the deepest folder or S3 prefix
holding them all) and a key per image. The portal serves only keys of the job's own tasks, under
that root: a local file is streamed with its content type, an S3 object through a short-lived
presigned redirect.
"""

from __future__ import annotations

import mimetypes
import posixpath
from pathlib import Path
from urllib.parse import unquote, urlparse

from orchestrator.errors import InputError, StorageError
from orchestrator.storage import is_s3_uri, split_s3_uri

# How long a presigned S3 image URL lives: long enough to load the page, short enough not to share.
PRESIGN_SECONDS = 300


def _location(source_ref: str) -> tuple[str, str]:
    """("s3://bucket/", key) or ("", absolute posix path) for one source-ref."""
    if is_s3_uri(source_ref):
        bucket, key = split_s3_uri(source_ref)
        return f"s3://{bucket}/", key
    path = unquote(urlparse(source_ref).path) if source_ref.startswith("file://") else source_ref
    return "", Path(path).expanduser().resolve().as_posix()


def split_image_root(source_refs: list[str]) -> tuple[str, list[str]]:
    """The common root of all images and each image's key under it.

    InputError when the images are spread over several buckets, or over S3 and local files.
    """
    locations = [_location(ref) for ref in source_refs]
    bases = {base for base, _ in locations}
    if len(bases) != 1:
        raise InputError(
            "the portal serves the images of one job from one bucket or folder, but the manifest "
            f"points into {len(bases)}: {', '.join(sorted(b or 'local files' for b in bases))}"
        )
    base = bases.pop()
    folders = [posixpath.dirname(path) for _, path in locations]
    if base:
        parts = [folder.split("/") if folder else [] for folder in folders]
        common = []
        for segment in zip(*parts, strict=False):
            if len(set(segment)) != 1:
                break
            common.append(segment[0])
        prefix = "/".join(common)
    else:
        prefix = posixpath.commonpath(folders)
    start = len(prefix.rstrip("/")) + 1 if prefix else 0
    keys = [path[start:] for _, path in locations]
    root = base + (prefix + "/" if prefix and base else prefix)
    return root, keys


def check_key(key: str) -> None:
    """StorageError unless `key` is a plain relative key: no `..`, no leading slash, no backslash."""
    parts = key.split("/")
    if (
        not key
        or len(key) > 1024
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise StorageError(f"image key {key!r} is not a plain key under the job's image folder")


def content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"

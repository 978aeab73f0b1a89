"""Where a job's images live and how the portal serves them.

At launch the manifest's source-refs are split into one root and a key per image. The root is the
deepest S3 prefix holding them all, or for local files the spec's `portal.image_folder` (every
file, symlinks resolved, must lie in it) or else their deepest common folder, which may not be the
filesystem root or a folder holding the home directory. Only raster types a browser renders are
accepted (SERVED_TYPES). The portal serves only keys of the job's own tasks, under that root: a
local file is streamed with the type its first bytes show, an S3 object through a short-lived
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
# The raster formats a browser renders, by the format name manifest.images reads from the bytes.
SERVED_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "bmp": "image/bmp",
    "gif": "image/gif",
    "webp": "image/webp",
}
SERVED_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp"})
# Sent with every image: an image the browser got wrong can run nothing and load nothing.
IMAGE_CSP = "default-src 'none'; sandbox"


def _location(source_ref: str) -> tuple[str, str]:
    """("s3://bucket/", key) or ("", absolute posix path) for one source-ref."""
    if is_s3_uri(source_ref):
        bucket, key = split_s3_uri(source_ref)
        return f"s3://{bucket}/", key
    path = unquote(urlparse(source_ref).path) if source_ref.startswith("file://") else source_ref
    return "", Path(path).expanduser().resolve().as_posix()


def split_image_root(source_refs: list[str], image_folder: str | None = None) -> tuple[str, list[str]]:
    """The common root of all images and each image's key under it.

    InputError when the images are spread over several buckets, or over S3 and local files, when a
    reference is not of a served image type, or when local files lie outside `image_folder` (or,
    without one, share no folder narrower than the filesystem root or the home directory).
    """
    locations = [_location(ref) for ref in source_refs]
    bases = {base for base, _ in locations}
    if len(bases) != 1:
        raise InputError(
            "the portal serves the images of one job from one bucket or folder, but the manifest "
            f"points into {len(bases)}: {', '.join(sorted(b or 'local files' for b in bases))}"
        )
    not_images = [ref for ref in source_refs if posixpath.splitext(ref.lower())[1] not in SERVED_EXTENSIONS]
    if not_images:
        raise InputError(
            f"{len(not_images)} source-ref(s) are not JPEG, PNG, BMP, GIF or WebP files, the only "
            f"images the portal serves: {not_images[0]}"
        )
    base = bases.pop()
    if not base:
        return _local_root([path for _, path in locations], image_folder)
    folders = [posixpath.dirname(path) for _, path in locations]
    parts = [folder.split("/") if folder else [] for folder in folders]
    common = []
    for segment in zip(*parts, strict=False):
        if len(set(segment)) != 1:
            break
        common.append(segment[0])
    prefix = "/".join(common)
    start = len(prefix) + 1 if prefix else 0
    return base + (prefix + "/" if prefix else ""), [path[start:] for _, path in locations]


def _local_root(paths: list[str], image_folder: str | None) -> tuple[str, list[str]]:
    if image_folder is not None:
        root = Path(image_folder).expanduser().resolve().as_posix()
        outside = [path for path in paths if not path.startswith(root.rstrip("/") + "/")]
        if outside:
            raise InputError(
                f"{len(outside)} image(s) lie outside portal.image_folder {root} "
                f"(symlinks resolved): {outside[0]}",
                hint="move them into the image folder, or drop them from the manifest",
            )
    else:
        root = posixpath.commonpath([posixpath.dirname(path) for path in paths])
        home = Path.home().resolve().as_posix()
        if root == "/" or home == root or home.startswith(root.rstrip("/") + "/"):
            raise InputError(
                f"the job's images share no folder narrower than {root}: the portal would serve "
                "files from all of it",
                hint='set portal.image_folder = "FOLDER" in the spec: the one folder holding the images',
            )
    start = len(root.rstrip("/")) + 1
    return root, [path[start:] for path in paths]


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


def served_type(key: str, head: bytes | None = None) -> str | None:
    """The content type to serve `key` with, or None if the portal must not serve it.

    With the file's first bytes, the type is the one they show (the name is not trusted); without
    them (an S3 object, served by redirect), the name must be of a served type.
    """
    if head is None:
        kind = content_type(key)
        return kind if kind in SERVED_TYPES.values() else None
    for signature, name in _SIGNATURES:
        if head.startswith(signature) and (name != "webp" or head[8:12] == b"WEBP"):
            return SERVED_TYPES[name]
    return None


_SIGNATURES = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"RIFF", "webp"),
)

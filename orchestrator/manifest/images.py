"""Image format and pixel size from the first bytes of a file, without decoding it.

Pure functions over bytes: the manifest builder fetches a file's first bytes with a ranged GET and
asks `sniff` what they are. JPEG, PNG, BMP, GIF and WebP are recognised; anything else is not an
image (`None`). A JPEG may keep its frame header behind large EXIF or ICC segments: then `sniff`
raises `NeedMoreBytes` saying how many leading bytes would settle it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Enough for the header of nearly every image: a camera's EXIF block (with its thumbnail) is at most
# one 64 KiB JPEG segment.
HEADER_BYTES = 64 * 1024

# JPEG start-of-frame markers: SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC), which share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length: TEM and RST0-RST7.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# BMP DIB header sizes: BITMAPCOREHEADER (12), OS/2 v2 (16, 64), BITMAPINFOHEADER (40) and V2-V5.
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


@dataclass(frozen=True)
class ImageHeader:
    """What the header says: the format ("jpeg", "png", "bmp", "gif", "webp") and the size in pixels."""

    format: str
    width: int
    height: int


class NeedMoreBytes(Exception):
    """The bytes start like an image, but its size lies beyond them; `needed` leading bytes would do."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"the image header needs the first {needed} bytes")
        self.needed = needed


def sniff(head: bytes) -> ImageHeader | None:
    """The format and size of the image whose first bytes are `head`, or None if it is not an image.

    Raises NeedMoreBytes when `head` is a true prefix of a JPEG, PNG, BMP, GIF or WebP file (or of
    their signatures) but too short to hold its size. A zero width or height counts as not an image.
    """
    for signature, parse in _FORMATS:
        if head.startswith(signature):
            header = parse(head)
            return header if header and header.width > 0 and header.height > 0 else None
    longer = [len(signature) for signature, _ in _FORMATS if signature.startswith(head)]
    if longer:
        raise NeedMoreBytes(min(longer))
    return None


def _need(head: bytes, n: int) -> None:
    if len(head) < n:
        raise NeedMoreBytes(n)


def _jpeg(head: bytes) -> ImageHeader | None:
    # Walk the marker segments from after SOI until a start-of-frame, which holds the size.
    pos = 2
    while True:
        _need(head, pos + 2)
        if head[pos] != 0xFF:
            return None  # garbage where a marker must be
        marker = head[pos + 1]
        if marker == 0xFF:
            pos += 1  # fill byte before a marker
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA, 0x00):
            return None  # a second SOI, the end, or scan data before any frame header
        _need(head, pos + 4)
        (length,) = struct.unpack_from(">H", head, pos + 2)
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            _need(head, pos + 9)
            height, width = struct.unpack_from(">HH", head, pos + 5)
            return ImageHeader("jpeg", width, height)
        pos += 2 + length


def _png(head: bytes) -> ImageHeader | None:
    _need(head, 24)
    if head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", head, 16)
    return ImageHeader("png", width, height)


def _bmp(head: bytes) -> ImageHeader | None:
    _need(head, 18)
    (dib_size,) = struct.unpack_from("<I", head, 14)
    if dib_size not in _BMP_HEADER_SIZES:
        return None  # "BM" followed by anything else: text that happens to start so
    if dib_size == 12:
        _need(head, 26)
        width, height, planes = struct.unpack_from("<HHH", head, 18)
    else:
        _need(head, 28)
        width, height, planes = struct.unpack_from("<iiH", head, 18)
    if planes != 1:
        return None
    # A negative height marks a top-down bitmap; the size is its absolute value.
    return ImageHeader("bmp", width, abs(height))


def _gif(head: bytes) -> ImageHeader:
    _need(head, 10)
    width, height = struct.unpack_from("<HH", head, 6)
    return ImageHeader("gif", width, height)


def _webp(head: bytes) -> ImageHeader | None:
    _need(head, 12)
    if head[8:12] != b"WEBP":
        return None  # another RIFF file: WAV, AVI
    _need(head, 30)
    chunk = head[12:16]
    if chunk == b"VP8 ":
        if head[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack_from("<HH", head, 26)
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        if head[20] != 0x2F:
            return None
        (bits,) = struct.unpack_from("<I", head, 21)
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return ImageHeader("webp", width, height)
    return None


# Signatures in the order they are tried; a WebP file is a RIFF file whose form type is WEBP.
_FORMATS = (
    (b"\xff\xd8\xff", _jpeg),
    (b"\x89PNG\r\n\x1a\n", _png),
    (b"BM", _bmp),
    (b"GIF87a", _gif),
    (b"GIF89a", _gif),
    (b"RIFF", _webp),
)

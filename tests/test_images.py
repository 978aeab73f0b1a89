"""Image sizes from header bytes: every format against Pillow's own files, truncation, and non-images."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from orchestrator.manifest import HEADER_BYTES, ImageHeader, NeedMoreBytes, sniff


def encode(fmt: str, size: tuple[int, int], mode: str = "RGB", **params) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (120, 30, 200) if mode == "RGB" else 0).save(buffer, fmt, **params)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "params", "expected_format"),
    [
        ("JPEG", {}, "jpeg"),
        ("JPEG", {"progressive": True}, "jpeg"),  # SOF2, not SOF0
        ("JPEG", {"exif": b"Exif\x00\x00" + b"\x00" * 2000}, "jpeg"),  # APP1 before the frame
        ("PNG", {}, "png"),
        ("BMP", {}, "bmp"),
        ("GIF", {}, "gif"),
        ("WEBP", {"lossless": False}, "webp"),
        ("WEBP", {"lossless": True}, "webp"),
    ],
)
@pytest.mark.parametrize("size", [(1, 1), (640, 480), (333, 4001)])
def test_sizes_match_pillow(fmt, params, expected_format, size):
    data = encode(fmt, size, **params)
    assert sniff(data[:HEADER_BYTES]) == ImageHeader(expected_format, *size)


def test_webp_extended_header():
    # Pillow writes a VP8X header when the image has an alpha channel.
    data = encode("WEBP", (300, 200), mode="RGBA")
    assert data[12:16] == b"VP8X"
    assert sniff(data) == ImageHeader("webp", 300, 200)


def bmp_header(dib_size: int, width: int, height: int, planes: int = 1) -> bytes:
    file_header = b"BM" + struct.pack("<IHHI", 14 + dib_size, 0, 0, 14 + dib_size)
    if dib_size == 12:
        return file_header + struct.pack("<IHHHH", 12, width, height, planes, 24)
    return (
        file_header + struct.pack("<IiiHH", dib_size, width, height, planes, 24) + b"\x00" * (dib_size - 16)
    )


def test_bmp_top_down_has_negative_height():
    assert sniff(bmp_header(40, 320, -240)) == ImageHeader("bmp", 320, 240)


def test_bmp_core_header_and_v5_header():
    assert sniff(bmp_header(12, 64, 48)) == ImageHeader("bmp", 64, 48)
    assert sniff(bmp_header(124, 800, 600)) == ImageHeader("bmp", 800, 600)


def test_jpeg_with_fill_bytes_and_restart_markers_before_the_frame():
    data = encode("JPEG", (50, 40))
    padded = data[:2] + b"\xff\xff\xff" + b"\xff\xd0" + data[2:]
    assert sniff(padded) == ImageHeader("jpeg", 50, 40)


def test_jpeg_frame_beyond_the_first_bytes_asks_for_more():
    # Three 60 KiB APP2 segments (as large ICC profiles are) push the frame header past 64 KiB.
    segment = b"\xff\xe2" + struct.pack(">H", 60 * 1024 + 2) + b"\x00" * (60 * 1024)
    data = encode("JPEG", (1234, 567))
    big = data[:2] + segment * 3 + data[2:]
    with pytest.raises(NeedMoreBytes) as more:
        sniff(big[:HEADER_BYTES])
    assert HEADER_BYTES < more.value.needed <= len(big)
    # Fetching what it asked for, and again, converges on the size.
    head = big[:HEADER_BYTES]
    for _ in range(len(big)):
        try:
            assert sniff(head) == ImageHeader("jpeg", 1234, 567)
            break
        except NeedMoreBytes as again:
            assert again.needed > len(head)
            head = big[: again.needed]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "WEBP"])
def test_every_prefix_gives_the_size_or_asks_for_more(fmt):
    data = encode(fmt, (321, 123))
    expected = sniff(data)
    assert expected is not None and (expected.width, expected.height) == (321, 123)
    settled = False
    for n in range(0, 700):
        try:
            result = sniff(data[:n])
        except NeedMoreBytes as more:
            assert not settled, "asked for more after it had settled"
            assert more.needed > n
            continue
        assert result == expected, f"prefix of {n} bytes"
        settled = True
    assert settled


@pytest.mark.parametrize(
    "data",
    [
        b"hello, this is a text file named like a picture\n",
        b"BM but then plain text follows here, long enough to hold a header",
        b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + b"garbage" * 20,  # SOI, then no valid marker chain
        b"\xff\xd8\xff\xda\x00\x0c" + b"\x00" * 20,  # scan data before any frame header
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IDAT" + b"\x00" * 13,  # IHDR not first
        b"GIF89a\x00\x00\x10\x00",  # zero width
        b"RIFF\x00\x00\x00\x00WEBPVP8Z" + b"\x00" * 30,
        b"%PDF-1.7\n",
    ],
)
def test_non_images_are_none(data):
    assert sniff(data) is None


def test_zero_sized_and_bad_planes_bmp_are_none():
    assert sniff(bmp_header(40, 0, 10)) is None
    assert sniff(bmp_header(40, 10, 10, planes=3)) is None


def test_a_prefix_of_a_signature_asks_for_more():
    assert pytest.raises(NeedMoreBytes, sniff, b"").value.needed == 2
    assert pytest.raises(NeedMoreBytes, sniff, b"\xff\xd8").value.needed == 3
    assert pytest.raises(NeedMoreBytes, sniff, b"GIF8").value.needed == 6
    assert pytest.raises(NeedMoreBytes, sniff, b"RIFF\0\0").value.needed == 12
    assert sniff(b"RIFF\0\0\0\0WAVEfmt ") is None


def test_truncated_png_asks_for_more():
    data = encode("PNG", (10, 10))
    with pytest.raises(NeedMoreBytes) as more:
        sniff(data[:20])
    assert more.value.needed == 24


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data):
    try:
        result = sniff(data)
    except NeedMoreBytes as more:
        assert more.needed > len(data)
        return
    assert result is None or (result.width > 0 and result.height > 0)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF89a", b"RIFF\0\0\0\0WEBP"]),
    st.binary(),
)
def test_arbitrary_bytes_after_a_signature_never_crash(signature, rest):
    try:
        result = sniff(signature + rest)
    except NeedMoreBytes as more:
        assert more.needed > len(signature + rest)
        return
    assert result is None or (result.width > 0 and result.height > 0)

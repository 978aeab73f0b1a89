"""A bar chart as a PNG, written with zlib alone: the dataset card's histogram needs no plotting library."""

from __future__ import annotations

import struct
import zlib

BACKGROUND = (255, 255, 255)
BAR = (49, 110, 180)
AXIS = (120, 120, 120)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def bar_chart_png(counts: list[int], *, width: int = 480, height: int = 240, margin: int = 10) -> bytes:
    """One bar per count, left to right, the tallest reaching the top margin, on a baseline; RGB, 8 bit."""
    pixels = [[BACKGROUND] * width for _ in range(height)]
    baseline = height - margin
    slot = (width - 2 * margin) // max(1, len(counts))
    tallest = max(counts, default=0) or 1
    for i, count in enumerate(counts):
        top = baseline - round((baseline - margin) * count / tallest)
        left = margin + i * slot + slot // 8
        for y in range(top, baseline):
            pixels[y][left : left + slot - slot // 4] = [BAR] * (slot - slot // 4)
    pixels[baseline][margin : width - margin] = [AXIS] * (width - 2 * margin)
    raw = b"".join(b"\x00" + bytes(channel for pixel in row for channel in pixel) for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )

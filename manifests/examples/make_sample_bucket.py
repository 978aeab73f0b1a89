"""Write the sample bucket `manifests/examples/bucket/` and `manifests/examples/labels.json`.

Run `python manifests/examples/make_sample_bucket.py`. The output is deterministic (fixed seed) and
kept in the repository: small synthetic street scenes with cars, pedestrians and signs at known
positions, their true boxes in `bucket/truth.jsonl`, plus the awkward files a real bucket holds
(too-small images, a corrupt image, a non-image, a duplicate).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw

HERE = Path(__file__).resolve().parent
BUCKET = HERE / "bucket"
SEED = 20240611
LABELS = ["car", "pedestrian", "sign"]

# (key, size, number of objects); sizes span 320x240 to 640x480 (two portrait), counts 0-4.
SCENES: list[tuple[str, tuple[int, int], int]] = [
    ("images/img_0001.jpg", (640, 480), 3),
    ("images/img_0002.jpg", (640, 480), 0),
    ("images/img_0003.jpg", (480, 360), 2),
    ("images/img_0004.jpg", (480, 360), 4),
    ("images/img_0005.jpg", (400, 300), 1),
    ("images/img_0006.jpg", (320, 240), 2),
    ("images/img_0007.jpg", (640, 480), 4),
    ("images/img_0008.jpeg", (360, 480), 1),
    ("images/img_0009.jpg", (400, 300), 0),
    ("images/img_0010.jpg", (640, 480), 2),
    ("images/img_0011.png", (400, 300), 3),
    ("images/img_0012.png", (320, 240), 0),
    ("images/img_0013.png", (480, 360), 4),
    ("images/img_0014.png", (400, 300), 1),
    ("images/img_0015.bmp", (320, 240), 2),
    ("images/img_0016.bmp", (320, 240), 0),
    ("images/batch2/img_0101.jpg", (640, 480), 1),
    ("images/batch2/img_0102.jpg", (480, 360), 3),
    ("images/batch2/img_0103.jpg", (240, 320), 2),
    ("images/batch2/img_0104.jpg", (400, 300), 4),
    ("images/batch2/img_0105.png", (480, 360), 2),
    ("images/batch2/img_0106.png", (320, 240), 0),
    ("images/batch2/img_0107.jpg", (640, 480), 3),
    ("images/batch2/img_0108.jpg", (320, 240), 1),
]
# Readable images whose shorter side is below 256 pixels: `--min-side 256` skips them.
TINY: list[tuple[str, tuple[int, int]]] = [
    ("images/tiny_0001.jpg", (64, 48)),
    ("images/tiny_0002.png", (96, 72)),
    ("images/batch2/thumb_0001.jpg", (200, 150)),
]
DUPLICATE = ("images/batch2/img_0003_copy.jpg", "images/img_0003.jpg")
CORRUPT = "images/corrupt_0001.jpg"
NOT_AN_IMAGE = "images/readme_not_an_image.jpg"

# Backgrounds are greys and tans; object colours are saturated so each class stands out.
BACKGROUNDS = [(170, 170, 160), (140, 148, 140), (196, 190, 176), (120, 124, 130), (205, 205, 200)]
CAR_COLOURS = [(200, 30, 30), (225, 90, 20), (170, 20, 90)]
SHIRT_COLOURS = [(30, 80, 220), (20, 150, 210), (90, 40, 200)]
PLATE_COLOURS = [(250, 205, 0), (30, 190, 60)]
TYRE = (20, 20, 20)
SKIN = (235, 190, 150)
TROUSERS = (40, 40, 70)
POLE = (90, 90, 90)
GAP = 4  # pixels between objects, so no object hides part of another and boxes stay tight


def draw_car(draw: ImageDraw.ImageDraw, left: int, top: int, width: int, height: int, rng: random.Random):
    wheel = height * 2 // 5
    body_bottom = top + height - wheel // 2
    draw.rounded_rectangle(
        (left, top + height // 3, left + width - 1, body_bottom),
        radius=height // 6,
        fill=rng.choice(CAR_COLOURS),
    )
    draw.rounded_rectangle(
        (left + width // 5, top, left + width * 4 // 5, top + height // 3 + 2),
        radius=height // 8,
        fill=(150, 200, 230),
    )
    for x in (left + width // 5, left + width * 4 // 5):
        draw.ellipse((x - wheel // 2, top + height - wheel, x + wheel // 2, top + height - 1), fill=TYRE)


def draw_pedestrian(
    draw: ImageDraw.ImageDraw, left: int, top: int, width: int, height: int, rng: random.Random
):
    head = width // 2
    cx = left + width // 2
    draw.ellipse((cx - head // 2, top, cx + head // 2, top + head), fill=SKIN)
    body_top = top + head + 1
    hips = top + height * 3 // 5
    draw.rounded_rectangle(
        (left, body_top, left + width - 1, hips), radius=width // 4, fill=rng.choice(SHIRT_COLOURS)
    )
    leg = max(width // 4, 2)
    draw.rectangle((cx - leg - 1, hips, cx - 1, top + height - 1), fill=TROUSERS)
    draw.rectangle((cx + 1, hips, cx + leg + 1, top + height - 1), fill=TROUSERS)


def draw_sign(draw: ImageDraw.ImageDraw, left: int, top: int, width: int, height: int, rng: random.Random):
    cx = left + width // 2
    pole = max(width // 8, 2)
    draw.rectangle((cx - pole // 2, top + width // 2, cx + pole // 2, top + height - 1), fill=POLE)
    plate = (left, top, left + width - 1, top + width - 1)
    if rng.random() < 0.5:
        draw.ellipse(plate, fill=rng.choice(PLATE_COLOURS), outline=(255, 255, 255), width=2)
    else:
        draw.rectangle(plate, fill=rng.choice(PLATE_COLOURS), outline=(255, 255, 255), width=2)


Drawer = Callable[[ImageDraw.ImageDraw, int, int, int, int, random.Random], None]
DRAWERS: dict[str, Drawer] = {"car": draw_car, "pedestrian": draw_pedestrian, "sign": draw_sign}


def object_size(label: str, image_size: tuple[int, int], rng: random.Random) -> tuple[int, int]:
    """Width and height of the object's frame, relative to the image so small images get small objects."""
    w, h = image_size
    if label == "car":
        width = int(w * rng.uniform(0.18, 0.32))
        return width, int(width * rng.uniform(0.45, 0.55))
    if label == "pedestrian":
        height = int(h * rng.uniform(0.28, 0.45))
        return int(height * rng.uniform(0.3, 0.38)), height
    height = int(h * rng.uniform(0.25, 0.4))
    return int(height * rng.uniform(0.3, 0.4)), height


def background(size: tuple[int, int], noisy: bool, rng: random.Random) -> Image.Image:
    """A plain colour, or the colour with mild noise (JPEG only: noise would bloat PNG and BMP)."""
    base = rng.choice(BACKGROUNDS)
    if not noisy:
        return Image.new("RGB", size, base)
    amplitude = 24
    image = Image.new("RGB", size, tuple(c - amplitude // 2 for c in base))
    noise = Image.frombytes("L", size, rng.randbytes(size[0] * size[1]))
    noise = noise.point(lambda v: v * amplitude // 256).convert("RGB")
    return ImageChops.add(image, noise)


def overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return not (a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1])


def scene(
    size: tuple[int, int], count: int, noisy: bool, rng: random.Random
) -> tuple[Image.Image, list[dict]]:
    """An image with `count` objects (fewer if they do not fit) and their tight boxes."""
    image = background(size, noisy, rng)
    draw = ImageDraw.Draw(image)
    taken: list[tuple[int, int, int, int]] = []
    boxes = []
    for _ in range(count):
        label = rng.choice(LABELS)
        width, height = object_size(label, size, rng)
        for _attempt in range(200):
            left = rng.randrange(2, size[0] - width - 2)
            top = rng.randrange(2, size[1] - height - 2)
            frame = (left, top, left + width, top + height)
            if not any(overlaps(frame, other) for other in taken):
                break
        else:
            continue
        taken.append(frame)
        # Draw the same object (same style seed) on a black mask too: the mask's bounding box is
        # the tight box of the pixels actually drawn.
        mask = Image.new("RGB", size)
        style = rng.random()
        for target in (draw, ImageDraw.Draw(mask)):
            DRAWERS[label](target, left, top, width, height, random.Random(style))
        x0, y0, x1, y1 = mask.getbbox()
        boxes.append({"label": label, "left": x0, "top": y0, "width": x1 - x0, "height": y1 - y0})
    return image, boxes


def save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".jpg", ".jpeg"):
        image.save(path, "JPEG", quality=82)
    elif path.suffix == ".png":
        image.save(path, "PNG", optimize=True)
    else:
        # A 256-colour BMP is a third of the size of a 24-bit one and looks the same here.
        image.quantize(colors=256).save(path, "BMP")


def corrupt_jpeg(rng: random.Random) -> bytes:
    """A JPEG start (SOI, a JFIF APP0 segment) followed by bytes that are no marker: no SOF, no size."""
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    garbage = bytes(b % 0xFF for b in rng.randbytes(300))  # never 0xFF, so no marker can follow
    return b"\xff\xd8" + app0 + garbage


def main() -> None:
    rng = random.Random(SEED)
    if BUCKET.exists():
        shutil.rmtree(BUCKET)
    truth = []
    for key, size, count in SCENES:
        image, boxes = scene(size, count, noisy=key.endswith((".jpg", ".jpeg")), rng=rng)
        save(image, BUCKET / key)
        truth.append({"key": key, "width": size[0], "height": size[1], "boxes": boxes})
    for key, size in TINY:
        image, boxes = scene(size, 0, noisy=False, rng=rng)
        save(image, BUCKET / key)
        truth.append({"key": key, "width": size[0], "height": size[1], "boxes": boxes})
    copy_key, original_key = DUPLICATE
    shutil.copyfile(BUCKET / original_key, BUCKET / copy_key)
    original = next(line for line in truth if line["key"] == original_key)
    truth.append({**original, "key": copy_key})
    (BUCKET / CORRUPT).write_bytes(corrupt_jpeg(rng))
    (BUCKET / NOT_AN_IMAGE).write_text("This file is named .jpg but it is plain text, not an image.\n")

    truth.sort(key=lambda line: line["key"])
    with (BUCKET / "truth.jsonl").open("w", encoding="utf-8", newline="\n") as out:
        for line in truth:
            out.write(json.dumps(line) + "\n")
    labels = {"document-version": "2018-11-28", "labels": [{"label": label} for label in LABELS]}
    (HERE / "labels.json").write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")

    total = sum(p.stat().st_size for p in BUCKET.rglob("*") if p.is_file())
    print(f"wrote {len(list(BUCKET.rglob('*.*')))} files, {total:,} bytes, to {BUCKET}")


if __name__ == "__main__":
    main()

"""Train an Ultralytics YOLO detector on labeljob's YOLO export, inside SageMaker's PyTorch container.

Each channel (`train`, `validation`) holds one YOLO export (`labels/`, `classes.txt`, `images.csv`).
`prepare` downloads every image `images.csv` names beside its label file and renumbers the labels to
the class list given in the `names` hyperparameter, so both channels agree even when one lacks a
class. The container installs `requirements.txt` (ultralytics) before running this file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

CHANNELS = {"train": "train", "validation": "val"}


def s3_fetch(uri: str, path: Path) -> None:
    import boto3

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    boto3.client("s3").download_file(bucket, key, str(path))


def prepare(
    channels: dict[str, Path], work: Path, names: list[str], fetch: Callable[[str, Path], None]
) -> Path:
    """Lay the channels out as Ultralytics expects (`<split>/images`, `<split>/labels`); returns data.yaml."""
    for channel, directory in channels.items():
        split = work / channel
        (split / "images").mkdir(parents=True, exist_ok=True)
        (split / "labels").mkdir(parents=True, exist_ok=True)
        own = (directory / "classes.txt").read_text(encoding="utf-8").splitlines()
        renumber = {str(i): str(names.index(name)) for i, name in enumerate(own)}
        with (directory / "images.csv").open(encoding="utf-8", newline="") as index:
            for row in csv.DictReader(index):
                label = (directory / row["label_file"]).read_text(encoding="utf-8").splitlines()
                boxes = [" ".join([renumber[line.split()[0]], *line.split()[1:]]) for line in label if line]
                stem = Path(row["image"]).stem
                (split / "labels" / f"{stem}.txt").write_text(
                    "".join(b + "\n" for b in boxes), encoding="utf-8"
                )
                fetch(row["source-ref"], split / "images" / Path(row["image"]).name)
    data = work / "data.yaml"
    lines = [f"path: {json.dumps(str(work))}"]
    lines += [f"{key}: {channel}/images" for channel, key in CHANNELS.items()]
    lines += ["names:"] + [f"  {i}: {json.dumps(name)}" for i, name in enumerate(names)]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", type=json.loads, required=True)
    parser.add_argument("--model", default="yolov8n.pt")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    args, _ = parser.parse_known_args()
    channels = {c: Path(os.environ[f"SM_CHANNEL_{c.upper()}"]) for c in CHANNELS}
    data = prepare(channels, Path("/tmp/yolo"), args.names, s3_fetch)

    from ultralytics import YOLO

    YOLO(args.model).train(
        data=str(data),
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        project="/tmp/runs",
        name="yolo",
        exist_ok=True,
    )
    shutil.copy("/tmp/runs/yolo/weights/best.pt", Path(os.environ["SM_MODEL_DIR"]) / "best.pt")


if __name__ == "__main__":
    main()

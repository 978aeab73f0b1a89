"""`labeljob consolidate` end to end (process start to exit) against WBF's algorithm alone, same boxes.

The crowd is the simulator's base scenario (10 % spammers, 5 % wrong labels of 3) with `--workers`
workers per image, written as a Ground Truth consolidation payload (a JSON array, each answer's
content a JSON string, as Ground Truth sends it). labeljob runs as its own process and writes the
augmented manifest; WBF (ensemble-boxes, as in benchmarks/consolidation.py: each worker a model,
iou_thr 0.55, box_and_model_avg, keep >= 0.5) is timed on inputs prepared beforehand, in this
process. Best of `--repeats` each, interleaved.

    .venv/bin/python -m benchmarks.consolidate_cli
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.consolidation import SCENARIOS, synthetic, wbf_inputs, wbf_run

ROOT = Path(__file__).resolve().parent.parent
TARGET = 3.0  # labeljob at least this many times faster than WBF alone


def payload(objects) -> list[dict]:
    """Ground Truth's post-annotation payload for simulated `ObjectAnswers`."""
    items = []
    for obj in objects:
        annotations = []
        for answer in obj.answers:
            element = {
                "boundingBoxes": [
                    {"label": b.label, "left": b.left, "top": b.top, "width": b.width, "height": b.height}
                    for b in answer.boxes
                ],
                "inputImageProperties": {"width": answer.image_width, "height": answer.image_height},
            }
            content = json.dumps({"boundingBox": element})
            annotations.append({"workerId": answer.worker_id, "annotationData": {"content": content}})
        items.append(
            {
                "datasetObjectId": obj.dataset_object_id,
                "dataObject": {"s3Uri": f"s3://bench-bucket/images/{obj.dataset_object_id}.jpg"},
                "annotations": annotations,
            }
        )
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=6, help="workers per image")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    scenario = SCENARIOS[0]
    data = synthetic(type(scenario)(scenario.name, workers_per_image=args.workers), args.images, 0)
    n_boxes = sum(len(a.boxes) for obj in data.objects for a in obj.answers)
    labeljob = str(Path(sys.executable).with_name("labeljob"))
    inputs = wbf_inputs(data.objects, data.labels)
    wbf_run(wbf_inputs(data.objects[:50], data.labels))  # numba compiles on first use
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "payload.json").write_text(json.dumps(payload(data.objects)))
        (folder / "labels.json").write_text(json.dumps(data.labels))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONPYCACHEPREFIX": str(folder / "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        argv = [labeljob, "--quiet", "consolidate", str(folder / "payload.json")]
        argv += ["--out", str(folder / "out.manifest"), "--labels", str(folder / "labels.json")]
        subprocess.run(argv, env=env, check=True, capture_output=True)  # caches bytecode, warms the disk
        best_cli = best_wbf = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(argv, env=env, check=True, capture_output=True)
            best_cli = min(best_cli, time.perf_counter() - start)
            start = time.perf_counter()
            wbf_run(inputs)
            best_wbf = min(best_wbf, time.perf_counter() - start)
        payload_mb = (folder / "payload.json").stat().st_size / 1e6
    print(
        f"{args.images:,} images x {args.workers} workers, {n_boxes:,} boxes, payload {payload_mb:.1f} MB; "
        f"best of {args.repeats}, interleaved\n"
    )
    print("| run | seconds | boxes/s | x WBF |")
    print("|---|---:|---:|---:|")
    for name, seconds in [
        ("WBF alone (ensemble-boxes call, inputs prepared)", best_wbf),
        ("`labeljob consolidate`, process start to exit", best_cli),
    ]:
        print(f"| {name} | {seconds:.2f} | {n_boxes / seconds:,.0f} | {best_wbf / seconds:.2f} |")
    print(f"\ntarget: labeljob >= {TARGET:g}x WBF; met: {'yes' if best_wbf / best_cli >= TARGET else 'no'}")


if __name__ == "__main__":
    main()

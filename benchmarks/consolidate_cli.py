"""`labeljob consolidate` end to end (process start to exit) against WBF's algorithm alone, same boxes.

The crowd is the simulator's base scenario (10 % spammers, 5 % wrong labels of 3) with `--workers`
workers per image, written as a Ground Truth consolidation payload (a JSON array, each answer's
content a JSON string, as Ground Truth sends it). labeljob runs as its own process and writes the
augmented manifest; WBF (ensemble-boxes, as in benchmarks/consolidation.py: each worker a model,
iou_thr 0.55, box_and_model_avg, keep >= 0.5) is timed on inputs prepared beforehand, in this
process. Best of `--repeats` each, interleaved.

    .venv/bin/python -m benchmarks.consolidate_cli
    .venv/bin/python -m benchmarks.consolidate_cli --compare /tmp/labeljob-8f5445d   # an older checkout too
    .venv/bin/python -m benchmarks.consolidate_cli --memory [--compare DIR]   # peak RSS at 10^4 .. 10^6 boxes
    .venv/bin/python -m benchmarks.consolidate_cli --stages [--images 32051]  # CPU and RSS by stage
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


WBF = "WBF alone (ensemble-boxes call, inputs prepared)"
LABELJOB = "`labeljob consolidate`, process start to exit"


def run_cli(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one run of `argv`, which must exit 0."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(argv)} failed")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def run_wbf(inputs: list) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    wbf_run(inputs)
    return time.perf_counter() - wall, time.process_time() - cpu


def without_dates(path: Path) -> list[dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        for key, value in line.items():
            if key.endswith("-metadata"):
                value.pop("creation-date")
    return lines


# Runs a command and prints its exit code and peak RSS in KB. A child forked from this benchmark would
# start with the benchmark's own resident pages (the simulated crowd: gigabytes at 10^6 boxes) counted
# in its peak; forked from this small process, labeljob's peak is its own.
PEAK_RSS = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)"
)


def peak_memory(workers: int, roots: dict[str, Path]) -> None:
    """Peak RSS of one `labeljob consolidate` run per checkout at about 10^4, 10^5 and 10^6 boxes."""
    labeljob = str(Path(sys.executable).with_name("labeljob"))
    scenario = SCENARIOS[0]
    print("| boxes | images | payload MB | " + " | ".join(f"peak RSS MB, {name}" for name in roots) + " |")
    print("|---:|---:|---:|" + "---:|" * len(roots))
    for target in (10**4, 10**5, 10**6):
        images = round(target / (5.2 * workers))  # the base scenario draws about 5.2 boxes per answer
        data = synthetic(type(scenario)(scenario.name, workers_per_image=workers), images, 0)
        n_boxes = sum(len(a.boxes) for obj in data.objects for a in obj.answers)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "payload.json").write_text(json.dumps(payload(data.objects)))
            (folder / "labels.json").write_text(json.dumps(data.labels))
            argv = [labeljob, "--quiet", "consolidate", str(folder / "payload.json")]
            argv += ["--out", str(folder / "out.manifest"), "--labels", str(folder / "labels.json")]
            peaks = []
            for root in roots.values():
                out = subprocess.run(
                    [sys.executable, "-c", PEAK_RSS, *argv],
                    env={**os.environ, "PYTHONPATH": str(root)},
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()
                if out[0] != "0":
                    raise SystemExit(f"{' '.join(argv)} failed")
                peaks.append(int(out[1]) / 1024)
            mb = (folder / "payload.json").stat().st_size / 1e6
        print(f"| {n_boxes:,} | {images:,} | {mb:.1f} | " + " | ".join(f"{p:,.0f}" for p in peaks) + " |")


# One process doing `labeljob consolidate`'s work a stage at a time, as the command does it (cyclic
# collector off): CPU seconds and peak RSS after each stage.
STAGES = """
import gc, json, resource, sys, time
from datetime import UTC, datetime
gc.disable()
def mark(name, start):
    cpu = time.process_time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"| {name} | {cpu - start:.2f} | {peak:,.0f} |")
    return cpu
print("| stage | CPU s | peak RSS MB after |")
print("|---|---:|---:|")
start = mark("interpreter", 0.0)
from orchestrator.consolidation import AnswerReport, IoUVote
from orchestrator.outputs import augmented_line_text, creation_date, read_answer_columns
from orchestrator.outputs import write_augmented_manifest
from orchestrator.spec import ConsolidationSpec
from orchestrator.storage import LocalStore
start = mark("imports", start)
payload, labels_file, out = sys.argv[1:]
labels = json.load(open(labels_file))
answers = read_answer_columns(payload, {}, labels, AnswerReport())
start = mark("read and validate the answers", start)
model = IoUVote(**ConsolidationSpec().model_dump()).fit(answers.answered(), labels=labels)
start = mark("IoUVote.fit", start)
stamp = creation_date(datetime.now(UTC))
lines = [
    augmented_line_text({"source-ref": r.source_ref}, r, labels, "bbox", "bench", stamp)
    for r in model.results_
]
write_augmented_manifest(LocalStore(out), "out.manifest", lines)
mark("output lines, written", start)
"""


def stages(images: int, workers: int) -> None:
    """CPU and peak RSS by stage of one in-process run of `labeljob consolidate`'s work."""
    scenario = SCENARIOS[0]
    data = synthetic(type(scenario)(scenario.name, workers_per_image=workers), images, 0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "payload.json").write_text(json.dumps(payload(data.objects)))
        (folder / "labels.json").write_text(json.dumps(data.labels))
        del data
        argv = [sys.executable, "-c", STAGES, str(folder / "payload.json"), str(folder / "labels.json"), tmp]
        # Started from a small launcher, as in `--memory`: a child of this process would count its pages.
        launcher = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONPYCACHEPREFIX": str(folder / "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # cached bytecode, as an installed package has
        warm = subprocess.run(argv, env=env, capture_output=True)
        if warm.returncode:
            raise SystemExit(warm.stderr.decode()[-2000:])
        subprocess.run([sys.executable, "-c", launcher, *argv], env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=6, help="workers per image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--compare", type=Path, metavar="DIR", help="also run the labeljob of this checkout (an older commit)"
    )
    parser.add_argument("--memory", action="store_true", help="peak RSS at 10^4, 10^5 and 10^6 boxes instead")
    parser.add_argument(
        "--stages", action="store_true", help="CPU and peak RSS by stage, in one process, instead"
    )
    args = parser.parse_args()
    if args.stages:
        stages(args.images, args.workers)
        return
    if args.memory:
        peak_memory(
            args.workers,
            {"this checkout": ROOT, **({str(args.compare): args.compare} if args.compare else {})},
        )
        return

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
        env = {**os.environ, "PYTHONPYCACHEPREFIX": str(folder / "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        roots = {
            LABELJOB: ROOT,
            **({f"the same, {args.compare}": args.compare.resolve()} if args.compare else {}),
        }
        runs = {}
        for n, (name, root) in enumerate(roots.items()):
            out = folder / f"out-{n}.manifest"
            argv = [labeljob, "--quiet", "consolidate", str(folder / "payload.json"), "--out", str(out)]
            runs[name] = (
                argv + ["--labels", str(folder / "labels.json")],
                {**env, "PYTHONPATH": str(root)},
                out,
            )
            run_cli(*runs[name][:2])  # caches bytecode, warms the disk
        best = dict.fromkeys([WBF, *roots], (float("inf"), float("inf")))
        for _ in range(args.repeats):
            timings = {WBF: run_wbf(inputs)} | {name: run_cli(argv, e) for name, (argv, e, _) in runs.items()}
            best = {name: tuple(map(min, best[name], timings[name])) for name in best}
        outputs = [without_dates(out) for _, _, out in runs.values()]
        payload_mb = (folder / "payload.json").stat().st_size / 1e6
    print(
        f"{args.images:,} images x {args.workers} workers, {n_boxes:,} boxes, payload {payload_mb:.1f} MB; "
        f"best of {args.repeats}, interleaved\n"
    )
    print("| run | wall s | CPU s | x WBF (wall) | x WBF (CPU) |")
    print("|---|---:|---:|---:|---:|")
    for name, (wall, cpu) in best.items():
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {best[WBF][0] / wall:.2f} | {best[WBF][1] / cpu:.2f} |")
    ratio = min(best[WBF][0] / best[LABELJOB][0], best[WBF][1] / best[LABELJOB][1])
    print(f"\ntarget: labeljob >= {TARGET:g}x WBF; met: {'yes' if ratio >= TARGET else 'no'}")
    if len(outputs) > 1:
        same = "yes" if outputs[0] == outputs[1] else "no"
        print(f"augmented manifests identical but for creation-date: {same}")


if __name__ == "__main__":
    main()

"""`labeljob consolidate` and `labeljob export`, and the shared finish path behind them."""

from __future__ import annotations

import csv
import json
from datetime import datetime

import pytest
from typer.testing import CliRunner

from orchestrator.cli.app import app
from orchestrator.consolidation import AnswerReport, parse_consolidation_payload
from orchestrator.outputs import OutputTargets, consolidate_and_write, read_augmented_manifest
from orchestrator.storage import LocalStore

LABELS_DOC = {"document-version": "2018-11-28", "labels": [{"label": "car"}, {"label": "dog"}]}


def content(*boxes: tuple, size=(640, 480)) -> str:
    """An answer's `content` string; each box is (label, left, top, width, height)."""
    return json.dumps(
        {
            "annotatedResult": {
                "boundingBoxes": [
                    dict(zip(("label", "left", "top", "width", "height"), b, strict=True)) for b in boxes
                ],
                "inputImageProperties": {"width": size[0], "height": size[1]},
            }
        }
    )


def item(object_id: str, *answers: tuple[str, str]) -> dict:
    return {
        "datasetObjectId": object_id,
        "dataObject": {"s3Uri": f"s3://bucket/images/{object_id}.jpg"},
        "annotations": [{"workerId": w, "annotationData": {"content": c}} for w, c in answers],
    }


PAYLOAD = [
    item(
        "0",
        ("w1", content(("car", 10, 10, 100, 50), ("dog", 300, 200, 40, 40))),
        ("w2", content(("car", 12, 11, 98, 50), ("dog", 302, 198, 40, 42))),
        ("w3", content(("car", 11, 9, 101, 52))),
    ),
    item(
        "1",
        ("w1", content(("dog", 50, 50, 60, 60))),
        ("w2", content(("dog", 52, 49, 60, 61))),
        ("w3", content()),
    ),
]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def labels_file(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(LABELS_DOC))
    return path


def test_consolidate_a_payload_file(tmp_path, labels_file):
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(PAYLOAD))
    out, workers = tmp_path / "out/output.manifest", tmp_path / "workers.csv"
    result = run(
        "--format", "json", "consolidate", str(payload), "--out", str(out), "--labels", str(labels_file),
        "--workers-report", str(workers), "--job-name", "street-1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["objects"] == 2 and summary["boxes"] == 3 and summary["workers"] == 3
    assert summary["unanswered"] == 0 and summary["repairs"] == {"empty_answer": 1}
    lines = [line for _, line in read_augmented_manifest(LocalStore(out.parent), out.name)]
    assert [line.source_ref for line in lines] == ["s3://bucket/images/0.jpg", "s3://bucket/images/1.jpg"]
    first = lines[0]
    assert first.attr == "bbox" and first.metadata.job_name == "labeling-job/street-1"
    assert [(a.class_id, a.left, a.top, a.width) for a in first.label.annotations] == [
        (0, 11, 10, 99),  # median edges: left 11, right 110
        (1, 301, 199, 40),
    ]
    assert first.label.image_size[0].width == 640
    rows = list(csv.DictReader(workers.open()))
    assert [r["worker_id"] for r in rows] == ["w1", "w2", "w3"]


def test_consolidate_prints_a_table_by_default(tmp_path, labels_file):
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(PAYLOAD))
    result = run(
        "consolidate", str(payload), "--out", str(tmp_path / "o.manifest"), "--labels", str(labels_file)
    )
    assert result.exit_code == 0, result.output
    assert "objects" in result.stdout and "repairs" in result.stdout


def test_malformed_payload_content_is_counted_not_fatal(tmp_path, labels_file):
    payload = tmp_path / "payload.jsonl"
    bad = item(
        "2",
        ("w1", "{not json"),
        ("w2", json.dumps({"annotatedResult": {"boundingBoxes": [{"label": "car", "left": "x", "top": 1}]}})),
        ("w3", content(("cat", 1, 1, 5, 5))),
        ("", content(("car", 1, 1, 5, 5))),
    )
    rows = [*PAYLOAD, bad, "not an object", {"annotations": []}]
    payload.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = run("--format", "json", "consolidate", str(payload), "--out", str(tmp_path / "o.manifest"),
                 "--labels", str(labels_file))  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    repairs = summary["repairs"]
    assert repairs["bad_json"] == 1 and repairs["missing_worker_id"] == 1 and repairs["unknown_label"] == 1
    assert repairs["not_an_object"] == 1 and repairs["missing_object_id"] == 1
    assert summary["objects"] == 2 and summary["unanswered"] == 1  # object 2 lost every answer
    assert "answer problem(s) repaired or dropped" in result.stderr


def gt_job_folder(root, labels=("car", "dog")) -> None:
    """A small Ground Truth output folder: output manifest (with GT's own labels) and worker responses."""
    manifest = root / "manifests/output/output.manifest"
    manifest.parent.mkdir(parents=True)
    gt_meta = {
        "objects": [],
        "class-map": {},
        "type": "groundtruth/object-detection",
        "human-annotated": "yes",
        "creation-date": "2026-01-01T00:00:00.000000",
        "job-name": "labeling-job/gt-job",
    }
    lines = [
        {"source-ref": f"s3://bucket/images/{i}.jpg", "split": "train",
         "box": {"image_size": [{"width": 640, "height": 480, "depth": 3}], "annotations": []},
         "box-metadata": gt_meta}
        for i in range(3)
    ]  # fmt: skip
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    for entry in PAYLOAD:
        folder = root / "annotations/worker-response/iteration-1" / entry["datasetObjectId"]
        folder.mkdir(parents=True)
        answers = [
            {"workerId": a["workerId"], "answerContent": json.loads(a["annotationData"]["content"]),
             "submissionTime": "2026-01-01T00:00:10.000Z", "timeSpentInSeconds": 10.0}
            for a in entry["annotations"]
        ]  # fmt: skip
        (folder / "2026-01-01_00:00:10.json").write_text(json.dumps({"answers": answers}))


def test_consolidate_a_ground_truth_output_folder(tmp_path, labels_file):
    job = tmp_path / "gt-job"
    gt_job_folder(job)
    out = tmp_path / "ours.manifest"
    result = run("--format", "json", "consolidate", str(job), "--out", str(out), "--labels", str(labels_file),
                 "--workers-report", str(tmp_path / "w.csv"))  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["objects"], summary["boxes"], summary["unanswered"]) == (2, 3, 1)
    raw = [json.loads(line) for line in out.read_text().splitlines()]
    assert list(raw[0]) == ["source-ref", "split", "box", "box-metadata"]  # GT's attr is re-consolidated
    assert raw[0]["box-metadata"]["job-name"] == "labeling-job/gt-job"
    assert len(raw[0]["box"]["annotations"]) == 2
    assert (tmp_path / "w.csv").exists()


def test_consolidate_a_folder_with_an_input_manifest(tmp_path, labels_file):
    job = tmp_path / "gt-job"
    gt_job_folder(job)
    (job / "manifests/output/output.manifest").unlink()
    args = ["consolidate", str(job), "--out", str(tmp_path / "o.manifest"), "--labels", str(labels_file)]
    missing = run(*args)
    assert missing.exit_code == 1 and "--input-manifest" in missing.stderr
    (tmp_path / "not-a-job").mkdir()
    empty = run(
        "consolidate", str(tmp_path / "not-a-job"), "--out", "o.manifest", "--labels", str(labels_file)
    )
    assert empty.exit_code == 1 and "no worker responses" in empty.stderr
    manifest = tmp_path / "input.manifest"
    manifest.write_text(
        "".join(json.dumps({"source-ref": f"s3://other-bucket/{i}.png", "k": i}) + "\n" for i in range(2))
    )
    result = run("--format", "json", *args, "--input-manifest", str(manifest), "--attr", "bbox")
    assert result.exit_code == 0, result.output
    raw = [json.loads(line) for line in (tmp_path / "o.manifest").read_text().splitlines()]
    assert [(r["source-ref"], r["k"]) for r in raw] == [
        ("s3://other-bucket/0.png", 0),
        ("s3://other-bucket/1.png", 1),
    ]


def test_missing_labels_file_is_a_one_line_error(tmp_path):
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(PAYLOAD))
    result = run("consolidate", str(payload), "--out", str(tmp_path / "o.manifest"), "--labels", "nope.json")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "nope.json" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_bad_labels_and_bad_options(tmp_path):
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(PAYLOAD))
    (tmp_path / "labels.json").write_text('["car", "car"]')
    args = ["consolidate", str(payload), "--out", str(tmp_path / "o.manifest"), "--labels"]
    dup = run(*args, str(tmp_path / "labels.json"))
    assert dup.exit_code == 1 and "duplicate labels: car" in dup.stderr
    (tmp_path / "labels.json").write_text('["car", "dog"]')  # a plain list is accepted too
    bad = run(*args, str(tmp_path / "labels.json"), "--coordinates", "mode")
    assert bad.exit_code == 2 and "--coordinates" in bad.stderr


@pytest.fixture
def consolidated(tmp_path, labels_file):
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(PAYLOAD))
    out = tmp_path / "output.manifest"
    result = run("consolidate", str(payload), "--out", str(out), "--labels", str(labels_file))
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize(
    ("fmt", "files"),
    [
        ("coco", ["annotations.json"]),
        ("voc", ["Annotations/0.xml", "Annotations/1.xml"]),
        ("yolo", ["labels/0.txt", "labels/1.txt", "classes.txt", "data.yaml", "images.csv"]),
        ("csv", ["annotations.csv"]),
    ],
)
def test_export_every_format(tmp_path, consolidated, fmt, files):
    out = tmp_path / f"export-{fmt}"
    result = run("--format", "json", "export", str(consolidated), "--format", fmt, "--out", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["format"], summary["images"], summary["boxes"], summary["skipped_lines"]) == (
        fmt,
        2,
        3,
        0,
    )
    assert summary["categories"] == ["car", "dog"]
    assert all((out / name).is_file() for name in files)


def test_export_with_label_map_min_confidence_and_bad_lines(tmp_path, consolidated):
    with consolidated.open("a") as fh:
        fh.write("{broken\n")
    label_map = tmp_path / "map.csv"
    label_map.write_text("from,to\ndog,animal\n")
    out = str(tmp_path / "e")
    result = run("--format", "json", "export", str(consolidated), "--format", "csv", "--out", out,
                 "--label-map", str(label_map), "--min-confidence", "0.5")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["categories"] == ["car", "animal"] and summary["skipped_lines"] == 1
    assert "output.manifest:3: not valid JSON" in result.stderr
    rows = list(csv.DictReader((tmp_path / "e/annotations.csv").open()))
    assert {r["label"] for r in rows} <= {"car", "animal"}
    assert all(float(r["confidence"]) >= 0.5 for r in rows)

    label_map.write_text("dog\n")
    bad_map = run("export", str(consolidated), "--format", "csv", "--out", str(tmp_path / "e"),
                  "--label-map", str(label_map))  # fmt: skip
    assert bad_map.exit_code == 1 and "map.csv:1: expected two columns" in bad_map.stderr


def test_export_rejects_unknown_formats_and_empty_manifests(tmp_path, consolidated):
    assert run("export", str(consolidated), "--format", "kitti", "--out", str(tmp_path)).exit_code == 2
    empty = tmp_path / "empty.manifest"
    empty.write_text('{"source-ref": "s3://b/x.jpg"}\n')
    result = run("export", str(empty), "--format", "coco", "--out", str(tmp_path / "e"))
    assert result.exit_code == 1 and "no valid bounding-box line" in result.stderr


def test_finish_path_writes_the_ground_truth_layout(tmp_path):
    store = LocalStore(tmp_path / "out/job-1")
    report = AnswerReport()
    objects = parse_consolidation_payload(json.dumps(PAYLOAD), ["car", "dog"], report)
    source_lines = {str(i): {"source-ref": f"s3://bucket/images/{i}.jpg", "n": i} for i in range(3)}
    outputs = consolidate_and_write(
        objects, source_lines, ["car", "dog"], attr="bbox", job_name="job-1",
        targets=OutputTargets.job(store, write_worker_responses=True), report=report,
        created=datetime(2026, 11, 23, 12),
    )  # fmt: skip
    assert set(outputs.paths) == {"worker_responses", "manifest", "workers_report", "consolidation_response"}
    root = tmp_path / "out/job-1"
    assert (root / "manifests/output/output.manifest").is_file()
    assert (root / "reports/workers.csv").is_file()
    assert sorted(
        p.relative_to(root).as_posix() for p in (root / "annotations/worker-response").rglob("*.json")
    ) == [
        "annotations/worker-response/iteration-1/0/2026-11-23_12:00:00.json",
        "annotations/worker-response/iteration-1/1/2026-11-23_12:00:00.json",
    ]
    folder = root / "annotations/consolidated-annotation/consolidation-response/iteration-1"
    response = json.loads((folder / "2026-11-23_12:00:00.json").read_text())
    assert [r["datasetObjectId"] for r in response] == ["0", "1"]
    assert set(response[0]["consolidatedAnnotation"]["content"]) == {"bbox", "bbox-metadata"}
    assert outputs.summary["unanswered"] == 1 and outputs.summary["objects"] == 2
    lines = (root / "manifests/output/output.manifest").read_text().splitlines()
    assert [json.loads(line)["n"] for line in lines] == [0, 1]


def test_consolidate_and_export_on_s3(s3):
    client = s3.client("s3")
    client.create_bucket(Bucket="jobs-bucket")
    client.put_object(Bucket="jobs-bucket", Key="in/payload.json", Body=json.dumps(PAYLOAD).encode())
    client.put_object(Bucket="jobs-bucket", Key="in/labels.json", Body=json.dumps(LABELS_DOC).encode())
    bucket = "s3://jobs-bucket"
    result = run("--format", "json", "consolidate", f"{bucket}/in/payload.json",
                 "--out", f"{bucket}/out/output.manifest",
                 "--labels", f"{bucket}/in/labels.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["manifest_uri"] == "s3://jobs-bucket/out/output.manifest"
    result = run(
        "export", "s3://jobs-bucket/out/output.manifest", "--format", "yolo", "--out", "s3://jobs-bucket/yolo"
    )
    assert result.exit_code == 0, result.output
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="jobs-bucket", Prefix="yolo/")["Contents"]}
    assert {"yolo/labels/0.txt", "yolo/classes.txt", "yolo/data.yaml"} <= keys


# ----------------------------------------------------------------------------- adaptive overlap


def needs_more_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_needs_more_refuses_bad_worker_bounds(tmp_path, labels_file):
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(PAYLOAD))
    args = ["consolidate", str(payload), "--out", str(tmp_path / "o.manifest"), "--labels", str(labels_file)]
    bad = run(*args, "--needs-more", str(tmp_path / "more.jsonl"), "--min-workers", "3", "--max-workers", "2")
    assert bad.exit_code == 2 and "--max-workers" in bad.stderr
    assert not (tmp_path / "o.manifest").exists() and not (tmp_path / "more.jsonl").exists()


def test_needs_more_lists_unsettled_and_unanswered_objects_only(tmp_path, labels_file):
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps([*PAYLOAD, item("2", ("w1", content(("car", 5, 5, 50, 50))))]))
    manifest = tmp_path / "input.manifest"
    manifest.write_text(
        "".join(json.dumps({"source-ref": f"s3://bucket/images/{i}.jpg"}) + "\n" for i in range(4))
    )
    out, more = tmp_path / "o.manifest", tmp_path / "more.jsonl"
    result = run(
        "--format", "json", "consolidate", str(payload), "--out", str(out), "--labels", str(labels_file),
        "--input-manifest", str(manifest), "--needs-more", str(more),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # Object 0: its dog has two boxes at IoU 0.86 (0.14 > 0.12 allowed for two members); 1: two of
    # three drew the same dog (settled); 2 has one answer and 3 none. The consolidated output covers
    # the answered objects as usual.
    assert needs_more_rows(more) == [
        {"datasetObjectId": "0", "answers": 3, "reason": "loose_edges"},
        {"datasetObjectId": "2", "answers": 1, "reason": "min_workers"},
        {"datasetObjectId": "3", "answers": 0, "reason": "min_workers"},
    ]
    summary = json.loads(result.stdout)
    assert (summary["objects"], summary["settled"], summary["needs_more"], summary["answers"]) == (3, 1, 3, 7)
    assert summary["needs_more_uri"].endswith("more.jsonl") and out.exists()
    tight = run(
        "consolidate", str(payload), "--out", str(out), "--labels", str(labels_file),
        "--needs-more", str(more), "--edge-tolerance", "0.0", "--max-workers", "4",
    )  # fmt: skip
    assert tight.exit_code == 0, tight.output
    assert [(r["datasetObjectId"], r["reason"]) for r in needs_more_rows(more)] == [
        ("0", "loose_edges"),
        ("1", "loose_edges"),
        ("2", "min_workers"),
    ]


def test_replaying_needs_more_from_the_command_line_matches_the_benchmark(tmp_path):
    from benchmarks.adaptive import real_pools, replay
    from benchmarks.consolidation import REAL_DATA, load_real
    from orchestrator.consolidation import StoppingRule

    rows, _ = load_real(REAL_DATA)
    pools = real_pools(rows, seed=0)
    expected = {
        obj.dataset_object_id: len(obj.answers) for obj in replay(pools, StoppingRule(), ["pedestrian"])
    }
    labels = tmp_path / "labels.json"
    labels.write_text('["pedestrian"]')
    counts = {pool.dataset_object_id: 2 for pool in pools}
    more = tmp_path / "more.jsonl"
    for _ in range(7):
        payload = [
            item(
                pool.dataset_object_id,
                *(
                    (
                        a.worker_id,
                        content(
                            *(("pedestrian", b.left, b.top, b.width, b.height) for b in a.boxes),
                            size=(a.image_width, a.image_height),
                        ),
                    )
                    for a in pool.answers[: counts[pool.dataset_object_id]]
                ),
            )
            for pool in pools
        ]
        (tmp_path / "payload.json").write_text(json.dumps(payload))
        result = run(
            "consolidate", str(tmp_path / "payload.json"), "--out", str(tmp_path / "o.manifest"),
            "--labels", str(labels), "--needs-more", str(more),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        asked = [row["datasetObjectId"] for row in needs_more_rows(more)]
        if not asked:
            break
        for object_id in asked:
            counts[object_id] += 1
    assert counts == expected
    assert 2 < sum(counts.values()) / len(counts) < 5

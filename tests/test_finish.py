"""The finish step every backend shares: outputs of an ended job, and what is left to label."""

from __future__ import annotations

import json

from orchestrator.consolidation import Box, ObjectAnswers, WorkerAnswer
from orchestrator.jobs import JobStore, finish_job, job_output_prefix, new_record
from orchestrator.outputs import read_augmented_manifest, write_worker_responses
from orchestrator.spec import parse_spec
from orchestrator.storage import LocalStore, open_object, open_store

REFS = [f"file:///data/img{i}.jpg" for i in range(3)]


def _setup(tmp_path, status: str):
    manifest = tmp_path / "in.manifest"
    manifest.write_text("".join(json.dumps({"source-ref": ref, "split": "train"}) + "\n" for ref in REFS))
    spec = parse_spec(
        {
            "name": "finish-test",
            "labels": ["car", "sign"],
            "input_manifest": str(manifest),
            "output": str(tmp_path / "out"),
        }
    )
    jobs = JobStore(LocalStore(tmp_path / "workspace"))
    record = new_record(spec, len(REFS))
    record.status = status
    return spec, record, jobs


def _answer(worker: str, left: float) -> WorkerAnswer:
    box = Box(label="car", left=left, top=10, width=50, height=40)
    return WorkerAnswer(worker_id=worker, boxes=[box], image_width=200, image_height=100)


def test_a_stopped_job_nobody_answered_leaves_everything_to_relaunch(tmp_path):
    spec, record, jobs = _setup(tmp_path, "stopped")
    paths = finish_job(spec, record, jobs)
    store, key = open_object(paths["remaining_manifest"])
    remaining = [json.loads(line) for line in store.get(key).decode().splitlines()]
    assert [line["source-ref"] for line in remaining] == REFS
    assert remaining[0]["split"] == "train"  # input keys pass through, ready to launch again


def test_a_partly_answered_job_writes_outputs_and_the_rest(tmp_path):
    spec, record, jobs = _setup(tmp_path, "completed")
    answers = [
        ObjectAnswers(
            dataset_object_id=str(i),
            source_ref=REFS[i],
            answers=[_answer("w1", 20), _answer("w2", 22), _answer("w3", 21)],
        )
        for i in (0, 2)
    ]
    write_worker_responses(open_store(job_output_prefix(spec)), answers)
    paths = finish_job(spec, record, jobs)

    store, key = open_object(paths["manifest"])
    lines = [line for _, line in read_augmented_manifest(store, key, "bbox")]
    assert [line.source_ref for line in lines] == [REFS[0], REFS[2]]
    annotation = lines[0].label.annotations[0]
    assert (annotation.left, annotation.width, lines[0].class_name(annotation.class_id)) == (21, 50, "car")
    assert lines[0].other == {"split": "train"}
    assert open_object(paths["workspace_manifest"])[0].exists("output.manifest")
    coco = json.loads(open_store(paths["coco"]).get("annotations.json"))
    assert len(coco["annotations"]) == 2
    # Class ids are the job's label list, even for a label no box uses.
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "car"), (2, "sign")]
    assert [(i["file_name"], i["source_ref"]) for i in coco["images"]] == [
        ("img0.jpg", REFS[0]),
        ("img2.jpg", REFS[2]),
    ]
    remaining_store, remaining_key = open_object(paths["remaining_manifest"])
    assert json.loads(remaining_store.get(remaining_key))["source-ref"] == REFS[1]
    workers_csv = open_object(paths["workers_report"])
    assert b"w1" in workers_csv[0].get(workers_csv[1])

"""The augmented manifest in Ground Truth's format, the workers report and the output layout."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.consolidation import (
    AnswerReport,
    Box,
    ConsolidatedBox,
    ObjectAnswers,
    ObjectResult,
    WorkerAnswer,
    WorkerQuality,
)
from orchestrator.errors import InputError
from orchestrator.outputs import (
    AugmentedLine,
    augmented_line,
    augmented_line_text,
    creation_date,
    detect_attr,
    dump_lines,
    read_augmented_manifest,
    read_worker_responses,
    worker_response_key,
    workers_report_csv,
    workers_report_rows,
    write_augmented_manifest,
    write_consolidation_response,
    write_worker_responses,
)
from orchestrator.storage import LocalStore, open_store

LABELS = ["car", "dog", "bone"]
CREATED = datetime(2026, 11, 23, 12, 0, 0)

# The output manifest line of the Ground Truth docs (docs/groundtruth.md, "Limits"), plus the keys a
# real job adds: a job name without `labeling-job/` and `adjustment-status`.
GT_LINE = {
    "source-ref": "s3://AWSDOC-EXAMPLE-BUCKET/example_image.png",
    "bbox": {
        "image_size": [{"width": 500, "height": 400, "depth": 3}],
        "annotations": [
            {"class_id": 0, "left": 111, "top": 134, "width": 61, "height": 128},
            {"class_id": 5, "left": 161, "top": 250, "width": 30, "height": 30},
        ],
    },
    "bbox-metadata": {
        "objects": [{"confidence": 0.8}, {"confidence": 0.9}],
        "class-map": {"0": "dog", "5": "bone"},
        "type": "groundtruth/object-detection",
        "human-annotated": "yes",
        "creation-date": "2018-10-18T22:18:13.527256",
        "job-name": "identify-dogs-and-toys",
        "adjustment-status": "unadjusted",
    },
}


def cbox(label: str, left: float, top: float, width: float, height: float, confidence: float = 0.8):
    return ConsolidatedBox(label, left, top, width, height, confidence, 1.0, 3, 0.9, ("w1", "w2", "w3"))


def result(boxes, object_id: str = "0", size=(640, 480)) -> ObjectResult:
    return ObjectResult(object_id, "s3://b/img0.jpg", size[0], size[1], boxes, n_workers=3)


def test_augmented_line_is_ground_truth_format_exactly():
    source = {"source-ref": "s3://b/img0.jpg", "split": "train"}
    boxes = [cbox("dog", 10.4, 20.6, 30.2, 40.0, 0.8333), cbox("car", 0, 0, 5, 5, 0.5)]
    line = augmented_line(source, result(boxes), LABELS, "bbox", "my-job", CREATED)
    assert line == {
        "source-ref": "s3://b/img0.jpg",
        "split": "train",
        "bbox": {
            "image_size": [{"width": 640, "height": 480, "depth": 3}],
            "annotations": [
                # Edges are rounded: left 10, right round(40.6) = 41.
                {"class_id": 1, "left": 10, "top": 21, "width": 31, "height": 40},
                {"class_id": 0, "left": 0, "top": 0, "width": 5, "height": 5},
            ],
        },
        "bbox-metadata": {
            "objects": [{"confidence": 0.83}, {"confidence": 0.5}],
            "class-map": {"0": "car", "1": "dog"},
            "type": "groundtruth/object-detection",
            "human-annotated": "yes",
            "creation-date": "2026-11-23T12:00:00.000000",
            "job-name": "labeling-job/my-job",
        },
    }
    assert list(line) == ["source-ref", "split", "bbox", "bbox-metadata"]
    assert all(isinstance(v, int) for a in line["bbox"]["annotations"] for v in a.values())


def test_augmented_line_replaces_an_old_label_and_keeps_other_keys_in_order():
    source = {"a": 1, "source-ref": "s3://b/x.jpg", "bbox": {"old": True}, "bbox-metadata": {}, "z": [1]}
    line = augmented_line(source, result([]), LABELS, "bbox", "labeling-job/j", CREATED)
    assert list(line) == ["source-ref", "a", "z", "bbox", "bbox-metadata"]
    assert line["bbox"]["annotations"] == [] and line["bbox-metadata"]["class-map"] == {}
    assert line["bbox-metadata"]["job-name"] == "labeling-job/j"


def test_augmented_line_without_input_line_uses_the_result_source_ref():
    line = augmented_line({}, result([]), LABELS, "bbox", "j", CREATED)
    assert line["source-ref"] == "s3://b/img0.jpg"


def test_unknown_image_size_and_foreign_label():
    line = augmented_line({}, result([], size=(None, None)), LABELS, "bbox", "j", CREATED)
    assert line["bbox"]["image_size"] == []
    with pytest.raises(ValueError, match="'cat' is not in the label list"):
        augmented_line({}, result([cbox("cat", 0, 0, 1, 1)]), LABELS, "bbox", "j", CREATED)


def test_creation_date_has_no_timezone():
    aware = datetime(2026, 11, 23, 13, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    assert creation_date(aware) == "2026-11-23T12:00:00.000005"


def test_round_trip_through_a_store(tmp_path):
    store = LocalStore(tmp_path)
    lines = [
        augmented_line(
            {"source-ref": f"s3://b/{i}.jpg"},
            result([cbox("bone", i, i, 9, 9)], str(i)),
            LABELS,
            "bb",
            "j",
            CREATED,
        )
        for i in range(3)
    ]
    uri = write_augmented_manifest(store, "out/output.manifest", lines)
    assert uri.endswith("out/output.manifest")
    raw = (tmp_path / "out/output.manifest").read_text()
    assert raw.count("\n") == 3 and "\n\n" not in raw
    read = list(read_augmented_manifest(store, "out/output.manifest"))
    assert [n for n, _ in read] == [1, 2, 3]
    assert [line.to_json() for _, line in read] == lines
    assert read[0][1].attr == "bb" and read[0][1].metadata.job == "j"


def test_reads_a_real_ground_truth_line(tmp_path):
    (tmp_path / "output.manifest").write_text(json.dumps(GT_LINE) + "\n")
    [(line_no, line)] = read_augmented_manifest(LocalStore(tmp_path), "output.manifest")
    assert line_no == 1 and line.attr == "bbox"
    assert line.metadata.job == "identify-dogs-and-toys"
    assert [line.class_name(a.class_id) for a in line.label.annotations] == ["dog", "bone"]
    assert line.to_json() == GT_LINE  # extra metadata keys survive a round trip
    assert detect_attr(GT_LINE) == "bbox"


def test_bad_lines_are_named_by_file_and_line(tmp_path):
    mismatch = json.loads(json.dumps(GT_LINE))
    mismatch["bbox-metadata"]["objects"].pop()
    unknown_class = json.loads(json.dumps(GT_LINE))
    unknown_class["bbox-metadata"]["class-map"] = {"0": "dog"}
    extra_key = json.loads(json.dumps(GT_LINE))
    extra_key["bbox"]["annotations"][0]["score"] = 1
    rows = [
        json.dumps(GT_LINE),
        "{not json",
        "",
        json.dumps(mismatch),
        json.dumps(unknown_class),
        "[1]",
        json.dumps({"source-ref": "s3://b/x.jpg"}),
        json.dumps(extra_key),
    ]
    (tmp_path / "m.manifest").write_text("\n".join(rows) + "\n")
    store = LocalStore(tmp_path)
    errors: list[InputError] = []
    good = list(read_augmented_manifest(store, "m.manifest", errors=errors))
    assert [n for n, _ in good] == [1]
    messages = [e.message for e in errors]
    assert [m.split(": ")[0].rsplit(":", 1)[1] for m in messages] == ["2", "4", "5", "6", "7", "8"]
    assert all(m.startswith(store.uri("m.manifest") + ":") for m in messages)
    assert "not valid JSON" in messages[0]
    assert "2 annotations but 1 objects" in messages[1]
    assert "class_id 5 is not in the class-map" in messages[2]
    assert "score" in messages[5]
    with pytest.raises(InputError, match=r"m\.manifest:2: not valid JSON"):
        list(read_augmented_manifest(store, "m.manifest"))


def test_workers_report_rows_and_csv():
    workers = {
        "w2": WorkerQuality("w2", 3, 5, 4, 0.8, 0.8, 0.81234567, 0.9, False),
        "w1": WorkerQuality("w1", 3, 1, 0, 0.0, 0.0, 0.0, 0.01, True),
    }
    rows = workers_report_rows(workers)
    assert [r["worker_id"] for r in rows] == ["w1", "w2"]
    assert rows[1]["mean_iou"] == 0.8123
    text = workers_report_csv(rows).decode()
    assert (
        text.splitlines()[0] == "worker_id,answers,boxes,matched,recall,precision,mean_iou,weight,low_quality"
    )
    assert text.splitlines()[1] == "w1,3,1,0,0.0,0.0,0.0,0.01,True"


def answers(object_id: str = "0") -> ObjectAnswers:
    return ObjectAnswers(
        dataset_object_id=object_id,
        source_ref=f"s3://b/{object_id}.jpg",
        answers=[
            WorkerAnswer(
                worker_id="w1",
                boxes=[Box(label="car", left=1, top=2, width=3, height=4.5)],
                image_width=640,
                image_height=480,
                submitted_at="2026-11-23T12:00:05.123Z",
                time_spent_seconds=12.5,
            ),
            WorkerAnswer(worker_id="w2", boxes=[], submitted_at="2026-11-23T12:00:09Z"),
        ],
    )


def test_worker_responses_in_ground_truth_layout(tmp_path):
    store = LocalStore(tmp_path)
    keys = write_worker_responses(store, [answers("0"), answers("1")])
    assert keys == [
        "annotations/worker-response/iteration-1/0/2026-11-23_12:00:09.json",
        "annotations/worker-response/iteration-1/1/2026-11-23_12:00:09.json",
    ]
    doc = json.loads(store.get(keys[0]))
    # Ground Truth's documented fields, in its order; acceptance is submission less the time spent.
    assert list(doc["answers"][0].items()) == [
        ("acceptanceTime", "2026-11-23T11:59:52.623Z"),
        (
            "answerContent",
            {
                "annotatedResult": {
                    "boundingBoxes": [{"height": 4.5, "label": "car", "left": 1, "top": 2, "width": 3}],
                    "inputImageProperties": {"height": 480, "width": 640},
                }
            },
        ),
        ("submissionTime", "2026-11-23T12:00:05.123Z"),
        ("timeSpentInSeconds", 12.5),
        ("workerId", "w1"),
        ("workerMetadata", None),
    ]
    assert doc["answers"][1]["submissionTime"] == "2026-11-23T12:00:09.000Z"
    assert doc["answers"][1]["acceptanceTime"] is None
    # The same answers again write nothing; a new worker's answer is merged into the file.
    assert write_worker_responses(store, [answers("0")]) == []
    late = ObjectAnswers(
        dataset_object_id="0",
        source_ref="s3://b/0.jpg",
        answers=[WorkerAnswer(worker_id="w3", boxes=[], submitted_at="2026-11-23T12:00:09Z")],
    )
    assert write_worker_responses(store, [late]) == keys[:1]
    assert [a["workerId"] for a in json.loads(store.get(keys[0]))["answers"]] == ["w1", "w2", "w3"]

    report = AnswerReport()
    read = read_worker_responses(store, {"0": "s3://b/0.jpg", "1": "s3://b/1.jpg"}, ["car"], report)
    assert [o.dataset_object_id for o in read] == ["0", "1"]
    assert [a.worker_id for a in read[0].answers] == ["w1", "w2", "w3"]
    assert read[0].answers[0].boxes == answers().answers[0].boxes
    assert read[0].answers[0].submitted_at == "2026-11-23T12:00:05.123Z"
    (tmp_path / "annotations/worker-response/iteration-1/1/2026-11-23_13:00:00.json").write_text("{torn")
    report = AnswerReport()
    read = read_worker_responses(store, {"0": "s3://b/0.jpg", "1": "s3://b/1.jpg"}, ["car"], report)
    assert len(read[1].answers) == 2 and report.counts["bad_json"] == 1
    with pytest.raises(InputError, match="object 1 has worker responses but no line"):
        read_worker_responses(store, {"0": "s3://b/0.jpg"}, ["car"], AnswerReport())


IDENTITY = {
    "identityData": {
        "identityProviderType": "Cognito",
        "issuer": "https://cognito-idp.us-west-2.amazonaws.com/us-west-2_111111",
        "sub": "c6aa8eb7-9944-42e9-a6b9-111111111111",
    }
}


def test_worker_responses_of_both_layouts_are_read_and_rewritten_in_ground_truth_format(tmp_path):
    store = LocalStore(tmp_path)
    folder = tmp_path / "annotations/worker-response/iteration-1/0"
    folder.mkdir(parents=True)
    box = {"boundingBoxes": [{"height": 4, "label": "car", "left": 1, "top": 2, "width": 3}]}
    # What labeljob wrote before: Python's ISO times, no acceptanceTime, no workerMetadata.
    old = {
        "submissionTime": "2026-11-23T12:00:05.123000+00:00",
        "timeSpentInSeconds": 12.5,
        "workerId": "w1",
        "answerContent": {"annotatedResult": box},
    }
    # What Ground Truth writes for a private team.
    new = {
        "acceptanceTime": "2026-11-23T11:59:58.000Z",
        "answerContent": {"boundingBox": box},
        "submissionTime": "2026-11-23T12:00:09.250Z",
        "timeSpentInSeconds": 11.25,
        "workerId": "private.us-west-2.abc",
        "workerMetadata": IDENTITY,
    }
    (folder / "2026-11-23_12:00:05.json").write_text(json.dumps({"answers": [old]}))
    (folder / "2026-11-23_12:00:09.json").write_text(json.dumps({"answers": [new]}))
    report = AnswerReport()
    [obj] = read_worker_responses(store, {"0": "s3://b/0.jpg"}, ["car"], report)
    first, second = obj.answers
    assert (first.submitted_at, first.accepted_at, first.worker_metadata) == (
        old["submissionTime"],
        None,
        None,
    )
    assert (second.submitted_at, second.accepted_at, second.worker_metadata) == (
        "2026-11-23T12:00:09.250Z",
        "2026-11-23T11:59:58.000Z",
        IDENTITY,
    )
    assert report.problems == 0

    out = LocalStore(tmp_path / "out")
    [key] = write_worker_responses(out, [obj])
    assert key.endswith("/0/2026-11-23_12:00:09.json")
    written = json.loads(out.get(key))["answers"]
    assert written[0]["acceptanceTime"] == "2026-11-23T11:59:52.623Z"
    assert written[0]["submissionTime"] == "2026-11-23T12:00:05.123Z"
    assert written[1] == {**new, "answerContent": {"annotatedResult": box}}


def test_worker_response_time_falls_back_to_now_and_ids_are_checked(tmp_path):
    store = LocalStore(tmp_path)
    obj = ObjectAnswers(
        dataset_object_id="7", source_ref="x", answers=[WorkerAnswer(worker_id="w", boxes=[])]
    )
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert write_worker_responses(store, [obj], now=now) == [worker_response_key("7", now)]
    with pytest.raises(ValueError):
        worker_response_key("../x", now)


def test_consolidation_response_file(tmp_path):
    write_consolidation_response(LocalStore(tmp_path), [{"datasetObjectId": "0"}], CREATED)
    folder = tmp_path / "annotations/consolidated-annotation/consolidation-response/iteration-1"
    assert json.loads((folder / "2026-11-23_12:00:00.json").read_text()) == [{"datasetObjectId": "0"}]


def test_manifest_on_s3(s3):
    store = open_store("s3://out-bucket/jobs", s3)
    store.client.create_bucket(Bucket="out-bucket")
    line = augmented_line(
        {"source-ref": "s3://b/a.jpg"}, result([cbox("car", 1, 1, 2, 2)]), LABELS, "bbox", "j", CREATED
    )
    assert write_augmented_manifest(store, "o.manifest", [line]) == "s3://out-bucket/jobs/o.manifest"
    [(_, read)] = read_augmented_manifest(store, "o.manifest")
    assert isinstance(read, AugmentedLine) and read.to_json() == line


def test_a_job_folder_reads_into_columns_as_its_files_read_one_by_one(tmp_path):
    """Several files per object, a worker twice in one file and again in a later file, a torn file, a
    file of an earlier iteration: the columns hold what `parse_worker_response`, file by file with a
    later file's answer in the earlier one's place, gives."""
    from orchestrator.consolidation import parse_worker_response
    from orchestrator.outputs import read_worker_response_columns

    def entry(worker: str, left: float, label: str = "car") -> dict:
        box = {"label": label, "left": left, "top": 2, "width": 30, "height": 20}
        size = {"width": 640, "height": 480}
        content = {"b": {"boundingBoxes": [box], "inputImageProperties": size}}
        return {"workerId": worker, "answerContent": content}

    first, later = "2026-11-23_12:00:00.json", "2026-11-23_12:00:05.json"
    files = {
        f"iteration-1/0/{first}": {"answers": [entry("w9", 1)]},  # an earlier round, replaced
        f"iteration-2/0/{first}": {"answers": [entry("w1", 1), entry("w2", 5), entry("w1", 9)]},
        f"iteration-2/0/{later}": {"answers": [entry("w3", 4), entry("w2", 7), entry("w5", 1, "x")]},
        f"iteration-1/1/{first}": {"answers": [entry("w1", 3), {"workerId": ""}]},
        f"iteration-1/1/{later}": "{torn",
        f"iteration-1/10/{first}": {"answers": [entry("w4", 3, "dog")]},
    }
    for key, doc in files.items():
        path = tmp_path / "annotations/worker-response" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    refs = {str(i): f"s3://b/{i}.jpg" for i in range(11)}

    expected, expected_report = [], AnswerReport()
    for object_id, keys in [("0", list(files)[1:3]), ("1", list(files)[3:5]), ("10", list(files)[5:])]:
        chosen: dict = {}
        for key in keys:
            raw = (tmp_path / "annotations/worker-response" / key).read_text()
            try:
                parsed = parse_worker_response(raw, object_id, refs[object_id], ["car"], expected_report)
            except InputError:
                expected_report.add("bad_json", "torn")
                continue
            chosen.update((a.worker_id, a) for a in parsed.answers)
        expected.append((object_id, [a.model_dump() for a in chosen.values()]))

    report = AnswerReport()
    columns = read_worker_response_columns(LocalStore(tmp_path), refs, ["car"], report)
    got = [(o.dataset_object_id, [a.model_dump() for a in o.answers]) for o in columns.objects()]
    assert got == expected
    assert report.counts == expected_report.counts
    # In the first file w1's second answer is the last word; the later file's w2 takes w2's place.
    assert [(a["worker_id"], a["boxes"][0]["left"]) for a in got[0][1]] == [("w2", 7), ("w1", 9), ("w3", 4)]
    assert report.counts["duplicate_worker_answer"] == 1 and report.counts["bad_json"] == 1
    assert report.counts["all_boxes_dropped"] == 2  # w5 and w4: labels not in the job


TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | TEXT,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXT, kids, max_size=3),
    max_leaves=6,
)


@st.composite
def output_case(draw):
    labels = draw(st.lists(TEXT, min_size=1, max_size=4, unique=True))
    boxes = [
        ConsolidatedBox(
            draw(st.sampled_from(labels)),
            draw(st.floats(-1e6, 1e6)),
            draw(st.floats(-1e6, 1e6)),
            draw(st.floats(0.001, 1e5)),
            draw(st.floats(0.001, 1e5)),
            draw(st.floats(0, 1)),
            1.0,
            3,
            0.9,
            ("w1",),
        )
        for _ in range(draw(st.integers(0, 4)))
    ]
    size = draw(st.sampled_from([(640, 480), (None, None), (1, 10**6)]))
    source = draw(st.dictionaries(TEXT, JSON_VALUE, max_size=3))
    if draw(st.booleans()):
        source = {"source-ref": draw(TEXT), **source}
    return source, result(boxes, size=size), labels, draw(TEXT), draw(TEXT), draw(TEXT)


@settings(max_examples=300, deadline=None)
@given(output_case())
def test_a_line_written_as_text_is_the_encoded_line_to_the_byte(case):
    """The manifest is written from `augmented_line_text`; the dicts of `augmented_line` are what every
    reader and the consolidation response see: the two must be one format."""
    source, res, labels, attr, job, stamp = case
    line = augmented_line(source, res, labels, attr, job, stamp)
    assert augmented_line_text(source, res, labels, attr, job, stamp).encode() == dump_lines([line])


def test_text_lines_of_hand_built_results_encode_as_their_dicts():
    """Results built outside IoUVote may carry numpy floats or a NaN confidence, or name the label
    attribute source-ref: the text is still the encoder's."""
    import numpy as np

    boxes = [cbox("dog", 1.5, 2.5, 3.0, 4.0, np.float64(0.8333)), cbox("car", 0, 0, 5, 5, float("nan"))]
    for attr in ("bbox", "source-ref"):
        args = ({"source-ref": "s3://b/x.jpg", "k": [1.0, None]}, result(boxes), LABELS, attr, "j", "2026")
        assert augmented_line_text(*args).encode() == dump_lines([augmented_line(*args)])

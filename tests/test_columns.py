"""The column parser (payloads and worker-response files, boxes validated in bulk by
`consolidation.columns`) against the one-answer pydantic path (`parse_element_answer`, box by box):
the same answers, boxes to the bit, and the same counted repairs."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.consolidation import (
    AnswerColumns,
    AnswerReport,
    IoUVote,
    ObjectAnswers,
    labels_in_answers,
    parse_consolidation_columns,
    parse_consolidation_payload,
    parse_element_answer,
    parse_worker_response,
)
from tests.test_fuzz import FEW, FUZZ, LABELS, crowd, element_answer, to_text

PEDESTRIANS = Path(__file__).resolve().parent / "data" / "pedestrians-dev.jsonl"
# Boxes near and past a 640 x 480 image's edges, drawn backwards, flat, and drawn twice.
EDGE = st.one_of(
    st.integers(-60, 700), st.floats(-60, 700), st.sampled_from([0, -0.0, 640, 480, 1e6, -1e6, 1e6 + 1])
)
SIDE = st.one_of(st.integers(-100, 300), st.floats(-100, 300), st.sampled_from([0, -0.0, 1e-300]))


@st.composite
def drawn_answer(draw) -> dict:
    boxes: list[dict] = []
    for _ in range(draw(st.integers(0, 8))):
        if boxes and draw(st.booleans()):  # the same object drawn again, a pixel or so off
            again = dict(draw(st.sampled_from(boxes)))
            again["left"] += draw(st.floats(-2, 2))
            boxes.append(again)
            continue
        label = draw(st.sampled_from([*LABELS, "bus"]))
        boxes.append(
            {"label": label, "left": draw(EDGE), "top": draw(EDGE), "width": draw(SIDE), "height": draw(SIDE)}
        )
    size = draw(st.sampled_from([{"width": 640, "height": 480}, {}, {"width": 0, "height": 480}]))
    return {"boundingBox": {"boundingBoxes": boxes, "inputImageProperties": size}}


def one_by_one(contents: list, labels: list[str] | None) -> tuple[list, AnswerReport]:
    report = AnswerReport()
    answers = [parse_element_answer(c, f"w{i}", labels, report) for i, c in enumerate(contents)]
    return [a for a in answers if a is not None], report


def exact(answers: list) -> str:
    """Answers as text that tells -0.0 from 0.0 and every float bit from its neighbours."""
    return repr([a.model_dump() for a in answers])


def payload(contents: list) -> bytes:
    annotations = [{"workerId": f"w{i}", "annotationData": {"content": c}} for i, c in enumerate(contents)]
    return to_text(
        [{"datasetObjectId": "0", "dataObject": {"s3Uri": "s3://b/0.jpg"}, "annotations": annotations}]
    )


def assert_same(contents: list, labels: list[str] | None) -> None:
    expected, expected_report = one_by_one(contents, labels)
    report = AnswerReport()
    document = {"answers": [{"workerId": f"w{i}", "answerContent": c} for i, c in enumerate(contents)]}
    from_file = parse_worker_response(document, "0", "s3://b/0.jpg", labels, report)
    assert exact(from_file.answers) == exact(expected)
    assert report.counts == expected_report.counts
    texts = [to_text(c) for c in contents]  # a payload's content is a JSON string
    expected, expected_report = one_by_one(texts, labels)
    report = AnswerReport()
    [obj] = parse_consolidation_payload(payload(texts), labels, report)
    assert exact(obj.answers) == exact(expected)
    assert report.counts == expected_report.counts


@FUZZ
@given(st.lists(element_answer(), max_size=6), st.sampled_from([LABELS, None]))
def test_the_fuzz_corpus_parses_the_same_in_columns(contents, labels):
    assert_same(contents, labels)


@FUZZ
@given(st.lists(drawn_answer(), max_size=6), st.sampled_from([LABELS, None]))
def test_boxes_near_the_edges_and_drawn_twice_parse_the_same_in_columns(contents, labels):
    assert_same(contents, labels)


def test_the_pedestrian_payloads_parse_the_same_in_columns():
    rows = [json.loads(line) for line in PEDESTRIANS.read_text().splitlines() if line.strip()]
    contents = [
        {
            "boundingBox": {
                "boundingBoxes": worker["boxes"],
                "inputImageProperties": {"width": row["width"], "height": row["height"]},
            }
        }
        for row in rows
        for worker in row["workers"]
    ]
    assert sum(len(c["boundingBox"]["boundingBoxes"]) for c in contents) > 3_000
    for labels in (["pedestrian"], None):
        assert_same(contents, labels)


def test_the_pedestrian_payload_votes_the_same_from_columns_as_from_the_answer_models():
    rows = [json.loads(line) for line in PEDESTRIANS.read_text().splitlines() if line.strip()]
    items, objects = [], []
    for n, row in enumerate(rows):
        size = {"width": row["width"], "height": row["height"]}
        contents = [
            to_text({"boundingBoxes": w["boxes"], "inputImageProperties": size}) for w in row["workers"]
        ]
        answers = [
            parse_element_answer(c, w["worker"], None, AnswerReport())
            for c, w in zip(contents, row["workers"], strict=True)
        ]
        objects.append(ObjectAnswers(dataset_object_id=str(n), source_ref=row["image"], answers=answers))
        annotations = [
            {"workerId": w["worker"], "annotationData": {"content": c}}
            for c, w in zip(contents, row["workers"], strict=True)
        ]
        items.append(
            {"datasetObjectId": str(n), "dataObject": {"s3Uri": row["image"]}, "annotations": annotations}
        )
    columns = parse_consolidation_columns(to_text(items), None, AnswerReport())
    assert exact(columns.objects()) == exact(objects)
    for labels in (["pedestrian"], None):
        assert repr(IoUVote().fit_predict(columns, labels)) == repr(IoUVote().fit_predict(objects, labels))


@FEW
@given(crowd())
def test_answer_models_survive_the_trip_through_columns(objects):
    columns = AnswerColumns.from_objects(objects)
    assert exact(columns.objects()) == exact(objects)
    assert labels_in_answers(columns) == labels_in_answers(objects)
    answered = columns.answered()
    assert exact(answered.objects()) == exact([obj for obj in objects if obj.answers])
    assert repr(IoUVote().fit_predict(answered, LABELS)) == repr(
        IoUVote().fit_predict([obj for obj in objects if obj.answers], LABELS)
    )


def test_a_payload_read_a_few_answers_at_a_time_gives_the_same_columns(monkeypatch):
    """Chunks end inside objects, a worker's second answer to an object and an object listed twice
    fall in later chunks than the first: the same answers, boxes and counts as one chunk."""
    import orchestrator.consolidation.answers as answers_module

    rows = [json.loads(line) for line in PEDESTRIANS.read_text().splitlines() if line.strip()][:40]
    items = []
    for n, row in enumerate(rows):
        annotations = [
            {
                "workerId": worker["worker_id"] if "worker_id" in worker else f"w{k}",
                "annotationData": {
                    "content": json.dumps(
                        {
                            "boundingBox": {
                                "boundingBoxes": worker["boxes"],
                                "inputImageProperties": {"width": row["width"], "height": row["height"]},
                            }
                        }
                    )
                },
            }
            for k, worker in enumerate(row["workers"])
        ]
        annotations.append({**annotations[0], "annotationData": {"content": '{"x": {"boundingBoxes": []}}'}})
        item = {"datasetObjectId": str(n % 30), "dataObject": {"s3Uri": f"s3://b/{n}.jpg"}}
        items.append({**item, "annotations": annotations})
    data = json.dumps(items)

    def read() -> tuple[str, dict]:
        report = AnswerReport()
        answers = parse_consolidation_columns(data, ["pedestrian"], report)
        return exact([a for obj in answers.objects() for a in obj.answers]), dict(report.counts)

    whole = read()
    monkeypatch.setattr(answers_module, "CHUNK_ANSWERS", 3)
    assert read() == whole
    assert whole[1]["duplicate_object"] == 10 and whole[1]["duplicate_worker_answer"] > 40


def test_a_payloads_columns_pickle_and_own_their_answer_fields():
    import copy
    import pickle

    texts = [to_text({"b": {"boundingBoxes": [], "inputImageProperties": {"width": 9, "height": 9}}})] * 2
    answers = parse_consolidation_columns(payload(texts), LABELS, AnswerReport())
    assert pickle.loads(pickle.dumps(answers)).answer_fields == answers.answer_fields
    copy.deepcopy(answers).answer_fields[0]["submitted_at"] = "changed"
    answers.answer_fields[0]["submitted_at"] = "mine"
    assert answers.answer_fields[1]["submitted_at"] is None


def test_a_payload_read_from_bytes_item_by_item_is_the_payload_read_from_text():
    """`labeljob consolidate` reads a payload's bytes as an array of items, each parsed when it is read;
    the same payload as text is parsed whole."""
    items = [
        {"datasetObjectId": "0", "dataObject": {"s3Uri": "s3://b/0.jpg"}, "annotations": [
            {"workerId": "w1", "annotationData": {"content": to_text(drawn)}}
            for drawn in ({"b": {"boundingBoxes": [{"label": "car", "left": 1e400, "top": 0, "width": 5,
                                                    "height": 5}]}},
                          {"b": {"boundingBoxes": [{"label": "car", "left": 10**30, "top": 0, "width": 5,
                                                    "height": 5}]}})
        ]},
        "not an item",
        {"datasetObjectId": 7, "annotations": [{"workerId": "é", "annotationData": {"content": {"x": {}}}}]},
    ]  # fmt: skip
    text = json.dumps(items, ensure_ascii=False).replace('"left": 1e400', '"left": Infinity')

    def read(data) -> tuple[str, dict]:
        report = AnswerReport()
        answers = parse_consolidation_columns(data, LABELS, report)
        return exact([a for obj in answers.objects() for a in obj.answers]), dict(report.counts)

    assert read(text.encode()) == read(text)
    assert read(text.encode())[1]["not_an_object"] == 1


def test_a_payload_array_with_a_string_that_is_not_utf8_is_refused_as_before():
    import pytest

    from orchestrator.errors import InputError

    data = b'[{"datasetObjectId": "0", "annotations": [{"workerId": "\xff", "annotationData": {}}]}]'
    refused = r"consolidation payload is not UTF-8 text: .* position 56: invalid start byte"
    with pytest.raises(InputError, match=refused):
        parse_consolidation_columns(data, LABELS, AnswerReport())

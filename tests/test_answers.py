"""Worker-answer parsing: each repair or drop is counted under its reason code, never a crash.

Unhappy paths first, one per reason code, then the happy shapes of each source. Generated garbage is
tests/test_fuzz.py's job; the properties here pin what a repair does to a box.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.consolidation import (
    MAX_XML_CHARS,
    AnswerReport,
    parse_consolidation_payload,
    parse_element_answer,
    parse_mturk_answer,
    parse_worker_response,
)
from orchestrator.errors import InputError

LABELS = ["car", "sign"]
MTURK_NS = (
    "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"
)
PROPERTIES = settings(max_examples=200, deadline=None, derandomize=True, database=None)


def box(label: str = "car", left: float = 10, top: float = 20, width: float = 30, height: float = 40) -> dict:
    return {"label": label, "left": left, "top": top, "width": width, "height": height}


def content(*boxes: dict, width: int = 640, height: int = 480) -> str:
    """An answer as Ground Truth stores it in `annotationData.content`."""
    return json.dumps(
        {
            "annotatedResult": {
                "boundingBoxes": list(boxes),
                "inputImageProperties": {"width": width, "height": height},
            }
        }
    )


def parse_one(*boxes: dict, width: int = 640, height: int = 480) -> tuple[list[tuple], AnswerReport]:
    report = AnswerReport()
    answer = parse_element_answer(content(*boxes, width=width, height=height), "w1", LABELS, report)
    assert answer is not None
    return [(b.label, b.left, b.top, b.width, b.height) for b in answer.boxes], report


def annotation(worker: str, text: str) -> dict:
    return {"workerId": worker, "annotationData": {"content": text}}


def payload_item(object_id: str, *annotations: dict) -> dict:
    return {
        "datasetObjectId": object_id,
        "dataObject": {"s3Uri": f"s3://b/{object_id}.jpg"},
        "annotations": list(annotations),
    }


def mturk_xml(free_text: str) -> str:
    return (
        f'<QuestionFormAnswers xmlns="{MTURK_NS}"><Answer><QuestionIdentifier>taskAnswers'
        f"</QuestionIdentifier><FreeText>{free_text}</FreeText></Answer></QuestionFormAnswers>"
    )


# ------------------------------------------------------------------------------ one box at a time


def test_bad_json_in_content_drops_the_answer():
    report = AnswerReport()
    assert parse_element_answer('{"annotatedResult": {"boundingBoxes": [', "w1", LABELS, report) is None
    assert report.counts == {"bad_json": 1}


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinite_coordinates_drop_the_box(value):
    text = content(box(), box(left=0)).replace('"left": 0', f'"left": {value}')
    report = AnswerReport()
    answer = parse_element_answer(text, "w1", LABELS, report)
    assert [b.left for b in answer.boxes] == [10]
    assert report.counts == {"nan_or_infinite": 1}


def test_a_right_edge_that_overflows_to_infinity_drops_the_box():
    boxes, report = parse_one(box(), box(left=1e308, width=1e308))
    assert len(boxes) == 1
    assert report.counts == {"nan_or_infinite": 1}


def test_negative_width_is_flipped():
    boxes, report = parse_one(box(left=50, width=-30))
    assert boxes == [("car", 20, 20, 30, 40)]
    assert report.counts == {"negative_size_fixed": 1}


def test_both_sizes_negative_are_swapped_corners():
    boxes, report = parse_one(box(left=50, top=70, width=-30, height=-40))
    assert boxes == [("car", 20, 30, 30, 40)]
    assert report.counts == {"swapped_corners_fixed": 1}


@pytest.mark.parametrize("side", ["width", "height"])
def test_zero_area_drops_the_box(side):
    boxes, report = parse_one(box(), box(**{side: 0}))
    assert len(boxes) == 1
    assert report.counts == {"zero_area": 1}


def test_unknown_labels_drop_the_box_exact_match_only():
    boxes, report = parse_one(box(), box(label="Car"), box(label="truck"))
    assert [b[0] for b in boxes] == ["car"]
    assert report.counts == {"unknown_label": 2}


def test_labels_none_accepts_any_label():
    report = AnswerReport()
    answer = parse_element_answer(content(box(label="truck")), "w1", None, report)
    assert [b.label for b in answer.boxes] == ["truck"]
    assert not report.counts


def test_boxes_past_the_edge_are_clipped_and_boxes_outside_dropped():
    boxes, report = parse_one(
        box(left=-10, top=-5, width=30, height=25),  # over the top-left corner
        box(left=620, top=460, width=50, height=50),  # over the bottom-right corner
        box(left=700, top=10),  # wholly right of a 640 px image
        box(left=10, top=-100, height=100),  # ends exactly at the top edge: no area inside
    )
    assert boxes == [("car", 0, 0, 20, 20), ("car", 620, 460, 20, 20)]
    assert report.counts == {"clipped_to_image": 2, "outside_image_dropped": 2}


def test_without_an_image_size_nothing_is_clipped():
    report = AnswerReport()
    text = json.dumps({"annotatedResult": {"boundingBoxes": [box(left=-10)]}})
    answer = parse_element_answer(text, "w1", LABELS, report)
    assert answer.boxes[0].left == -10
    assert answer.image_width is None
    assert not report.counts


def test_a_bad_image_size_is_ignored_and_the_callers_size_used():
    report = AnswerReport()
    text = content(box(left=620, width=40)).replace('"width": 640', '"width": "640"')
    answer = parse_element_answer(text, "w1", LABELS, report, image_width=630, image_height=480)
    assert (answer.image_width, answer.boxes[0].width) == (630, 10)
    assert report.counts == {"bad_image_size": 1, "clipped_to_image": 1}


def test_coordinates_beyond_any_image_are_dropped_when_the_size_is_unknown():
    report = AnswerReport()
    text = json.dumps({"annotatedResult": {"boundingBoxes": [box(), box(left=1e7)]}})
    answer = parse_element_answer(text, "w1", LABELS, report)
    assert len(answer.boxes) == 1
    assert report.counts == {"coordinate_out_of_range": 1}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ({"label": "car", "left": 1, "top": 2, "width": 3}, "missing_field"),
        (box(left="10"), "wrong_type"),
        (box(width=True), "wrong_type"),
        (box(label=7), "wrong_type"),
        (["car", 1, 2, 3, 4], "not_an_object"),
    ],
)
def test_malformed_boxes_are_dropped_with_their_reason(raw, code):
    boxes, report = parse_one(box(), raw)
    assert len(boxes) == 1
    assert report.counts == {code: 1}


def test_an_answer_that_lost_every_box_is_not_an_empty_vote():
    report = AnswerReport()
    assert parse_element_answer(content(box(label="truck")), "w1", LABELS, report) is None
    assert report.counts == {"unknown_label": 1, "all_boxes_dropped": 1}


def test_a_workers_own_near_duplicates_collapse_to_one_per_label():
    boxes, report = parse_one(box(), box(left=10.5), box(label="sign"), box(left=200))
    assert sorted(boxes) == [("car", 10, 20, 30, 40), ("car", 200, 20, 30, 40), ("sign", 10, 20, 30, 40)]
    assert report.counts == {"near_duplicate_collapsed": 1}


def test_empty_answers_are_kept_as_votes():
    for text, codes in (
        (content(), {"empty_answer": 1}),
        (
            json.dumps({"annotatedResult": {"inputImageProperties": {"width": 640, "height": 480}}}),
            {"missing_boxes_key": 1, "empty_answer": 1},
        ),
    ):
        report = AnswerReport()
        answer = parse_element_answer(text, "w1", LABELS, report)
        assert answer is not None and answer.boxes == []
        assert report.counts == codes
        assert report.problems == sum(codes.values()) - 1  # an empty answer is not a problem


def test_boxes_not_a_list_drops_the_answer():
    report = AnswerReport()
    assert parse_element_answer({"boundingBoxes": {"0": box()}}, "w1", LABELS, report) is None
    assert report.counts == {"boxes_not_a_list": 1}


def test_the_element_is_found_under_any_name():
    report = AnswerReport()
    answer = parse_element_answer(
        {"boundingBox": {"boundingBoxes": [box()]}, "other": 1}, "w1", LABELS, report
    )
    assert len(answer.boxes) == 1


# --------------------------------------------------------------------------------- Ground Truth


def test_a_payload_array_and_json_lines_parse_alike():
    items = [
        payload_item("0", annotation("w1", content(box())), annotation("w2", content())),
        payload_item("1", annotation("w1", content(box(left=100)))),
    ]
    array = json.dumps(items).encode()
    lines = "\n".join(json.dumps(item) for item in items).encode()
    parsed = []
    for data in (array, lines):
        report = AnswerReport()
        objects = parse_consolidation_payload(data, LABELS, report)
        parsed.append([obj.model_dump() for obj in objects])
        assert [obj.dataset_object_id for obj in objects] == ["0", "1"]
        assert [len(obj.answers) for obj in objects] == [2, 1]
        assert objects[0].source_ref == "s3://b/0.jpg"
        assert report.counts == {"empty_answer": 1}
    assert parsed[0] == parsed[1]


def test_a_bad_json_line_is_named():
    data = (json.dumps(payload_item("0")) + "\n\n" + '{"datasetObjectId": "1",\n').encode()
    with pytest.raises(InputError, match="line 3"):
        parse_consolidation_payload(data, LABELS, AnswerReport())


def test_a_payload_that_is_a_json_scalar_is_an_input_error():
    with pytest.raises(InputError, match="not an array"):
        parse_consolidation_payload(b'"hello"', LABELS, AnswerReport())


def test_bad_content_in_a_payload_drops_only_that_answer():
    item = payload_item(
        "0",
        annotation("w1", "{not json"),
        annotation("w2", content(box())),
        {"workerId": "w3", "annotationData": {}},
        {"annotationData": {"content": content(box())}},
    )
    report = AnswerReport()
    (obj,) = parse_consolidation_payload(json.dumps([item]), LABELS, report)
    assert [a.worker_id for a in obj.answers] == ["w2"]
    assert report.counts == {"bad_json": 1, "missing_content": 1, "missing_worker_id": 1}


def test_a_worker_answering_twice_keeps_the_last_answer():
    item = payload_item(
        "0",
        annotation("w1", content(box(left=1))),
        annotation("w2", content(box(left=2))),
        annotation("w1", content(box(left=3))),
    )
    report = AnswerReport()
    (obj,) = parse_consolidation_payload(json.dumps([item]), LABELS, report)
    assert {a.worker_id: a.boxes[0].left for a in obj.answers} == {"w1": 3, "w2": 2}
    assert report.counts == {"duplicate_worker_answer": 1}


def test_an_object_listed_twice_merges_its_annotations():
    items = [
        payload_item("0", annotation("w1", content(box()))),
        payload_item("0", annotation("w2", content(box()))),
        {"dataObject": {}},
        {"datasetObjectId": "1", "annotations": []},
    ]
    report = AnswerReport()
    objects = parse_consolidation_payload(json.dumps(items), LABELS, report)
    assert [(o.dataset_object_id, len(o.answers), o.source_ref) for o in objects] == [
        ("0", 2, "s3://b/0.jpg"),
        ("1", 0, ""),
    ]
    assert report.counts == {"duplicate_object": 1, "missing_object_id": 1, "missing_source_ref": 1}


def test_content_by_reference_is_fetched_when_a_reader_is_given():
    item = payload_item("0", {"workerId": "w1", "annotationData": {"s3Uri": "s3://b/answer.json"}})
    report = AnswerReport()
    (obj,) = parse_consolidation_payload(json.dumps([item]), LABELS, report)
    assert obj.answers == [] and report.counts == {"content_by_reference": 1}
    (obj,) = parse_consolidation_payload(
        json.dumps([item]), LABELS, AnswerReport(), fetch=lambda uri: content(box())
    )
    assert len(obj.answers[0].boxes) == 1


def test_a_worker_response_file():
    document = {
        "answers": [
            {
                "workerId": "private.us-east-1.abc",
                "answerContent": json.loads(content(box(), box(left=630, width=30))),
                "submissionTime": "2026-01-02T03:04:05Z",
                "timeSpentInSeconds": 12.5,
            },
            {"workerId": "private.us-east-1.def", "answerContent": json.loads(content())},
            {"answerContent": json.loads(content(box()))},
            "not an answer",
        ]
    }
    report = AnswerReport()
    obj = parse_worker_response(json.dumps(document), "3", "s3://b/3.jpg", LABELS, report)
    first, second = obj.answers
    assert (obj.dataset_object_id, obj.source_ref) == ("3", "s3://b/3.jpg")
    assert (first.worker_id, len(first.boxes), first.boxes[1].width) == ("private.us-east-1.abc", 2, 10)
    assert (first.submitted_at, first.time_spent_seconds, first.image_width) == (
        "2026-01-02T03:04:05Z",
        12.5,
        640,
    )
    assert second.boxes == []
    assert report.counts == {
        "clipped_to_image": 1,
        "empty_answer": 1,
        "missing_worker_id": 1,
        "not_an_object": 1,
    }


def test_a_worker_response_file_that_is_not_json_is_an_input_error():
    with pytest.raises(InputError, match="object 3"):
        parse_worker_response(b"{oops", "3", "s3://b/3.jpg", LABELS, AnswerReport())


# ------------------------------------------------------------------------------------- MTurk


def test_mturk_question_form_answers():
    free_text = json.dumps([json.loads(content(box(), box(label="truck")))])
    report = AnswerReport()
    answer = parse_mturk_answer(
        mturk_xml(free_text.replace("&", "&amp;").replace("<", "&lt;")), "AW1", LABELS, report
    )
    assert (answer.worker_id, len(answer.boxes), answer.image_width) == ("AW1", 1, 640)
    assert report.counts == {"unknown_label": 1}


@pytest.mark.parametrize(
    ("xml", "code"),
    [
        ("<QuestionFormAnswers><Answer>", "bad_xml"),
        ("", "bad_xml"),
        (mturk_xml("[]"), "not_an_object"),
        (mturk_xml("{not json"), "bad_json"),
        (mturk_xml("x").replace("taskAnswers", "other"), "missing_task_answers"),
        ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]>' + mturk_xml("&e;"), "bad_xml"),
        (mturk_xml("[" + " " * MAX_XML_CHARS + "]"), "answer_too_large"),
    ],
)
def test_unreadable_mturk_answers_are_dropped_with_their_reason(xml, code):
    report = AnswerReport()
    assert parse_mturk_answer(xml, "AW1", LABELS, report) is None
    assert report.counts == {code: 1}


def test_mturk_answers_use_the_callers_image_size_when_the_answer_has_none():
    free_text = json.dumps([{"annotatedResult": {"boundingBoxes": [box(left=620, width=40)]}}])
    report = AnswerReport()
    answer = parse_mturk_answer(
        mturk_xml(free_text), "AW1", LABELS, report, image_width=640, image_height=480
    )
    assert answer.boxes[0].width == 20
    assert report.counts == {"clipped_to_image": 1}


# -------------------------------------------------------------------------------- properties

FINITE = st.floats(min_value=-2000, max_value=2000, allow_nan=False)


@PROPERTIES
@given(
    st.lists(st.tuples(FINITE, FINITE, FINITE, FINITE), max_size=8),
    st.integers(1, 1500),
    st.integers(1, 1500),
)
def test_a_repaired_box_lies_inside_both_the_drawn_box_and_the_image(raw, width, height):
    report = AnswerReport()
    answer = parse_element_answer(
        content(*(box("car", *r) for r in raw), width=width, height=height), "w1", LABELS, report
    )
    if answer is None:
        assert report.counts["all_boxes_dropped"] == 1
        return
    for b in answer.boxes:
        assert any(
            min(x, x + w) - 1e-9 <= b.left
            and b.left + b.width <= max(x, x + w) + 1e-9
            and min(y, y + h) - 1e-9 <= b.top
            and b.top + b.height <= max(y, y + h) + 1e-9
            for x, y, w, h in raw
        )
        assert 0 <= b.left and b.left + b.width <= width + 1e-9
        assert 0 <= b.top and b.top + b.height <= height + 1e-9
    assert len(answer.boxes) + sum(
        report.counts[c] for c in ("zero_area", "outside_image_dropped", "near_duplicate_collapsed")
    ) == len(raw)


@PROPERTIES
@given(st.lists(st.tuples(FINITE, FINITE, FINITE, FINITE), min_size=1, max_size=8))
def test_parsing_a_parsed_answer_again_changes_nothing(raw):
    first = parse_element_answer(content(*(box("car", *r) for r in raw)), "w1", LABELS, AnswerReport())
    if first is None:
        return
    again = AnswerReport()
    second = parse_element_answer(
        content(*(b.model_dump() for b in first.boxes), width=first.image_width, height=first.image_height),
        "w1",
        LABELS,
        again,
    )
    assert second == first
    assert again.problems == 0
    assert all(math.isfinite(b.left) for b in second.boxes)

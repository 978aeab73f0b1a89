"""Bad input, generated: every parser ends in a value or a clear error, never a traceback or a hang.

Hypothesis runs a bounded, derandomized number of examples per property, so the file takes well
under a minute and fails the same way every time. What the example-based tests already pin down
(each repair code, BOM/CRLF handling, each spec key's message) is not repeated here; these
properties cover the combinations nobody writes by hand.
"""

from __future__ import annotations

import json
import math
import time
import tomllib
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.backends import get_backend
from orchestrator.consolidation import (
    MAX_BOXES_PER_ANSWER,
    AnswerReport,
    Box,
    IoUVote,
    ObjectAnswers,
    WorkerAnswer,
    parse_consolidation_payload,
    parse_element_answer,
    parse_mturk_answer,
    parse_worker_response,
)
from orchestrator.errors import InputError, SpecError
from orchestrator.manifest import jsonl as manifest_jsonl
from orchestrator.manifest import read_manifest
from orchestrator.outputs import OutputTargets, consolidate_and_write, read_augmented_manifest
from orchestrator.spec import JobSpec, load_spec, parse_spec
from orchestrator.storage import LocalStore

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FEW = settings(FUZZ, max_examples=40)
MTURK_NS = (
    "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/QuestionFormAnswers.xsd"
)

# ----------------------------------------------------------------------------- strategies

NASTY_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, 2**63, -(2**63), 1e16 + 1, 0.1]),
    st.integers(min_value=-50, max_value=2000),
    st.floats(min_value=-100, max_value=2000, allow_nan=False),
)
NASTY_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "car",
            "<img src=x onerror=alert(1)>",
            "</script><script>alert(1)</script>",
            "{{ 7*7 }}",
            "a\u2028b",
            "\ufeffcar",
            "\u202ecar",
            "car\x00",
            "🚗",
            "",
            " ",
        ]
    ),
)
# Image sizes: integers beyond float range have a test of their own below.
SIZE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**300), max_value=10**300),
    st.sampled_from([0, 1, 640, 480.0, 480.5, "640", True, None]),
)
LABELS = ["car", "<img src=x onerror=alert(1)>", "🚗"]
ANY_VALUE = st.one_of(st.none(), st.booleans(), NASTY_NUMBERS, NASTY_TEXT)
JSON_LIKE = st.recursive(
    ANY_VALUE,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NASTY_TEXT, inner, max_size=4),
    max_leaves=15,
)


@st.composite
def raw_box(draw) -> object:
    """A box as a worker's browser (or a broken one) might send it."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_LIKE)
    keys = draw(st.sets(st.sampled_from(["label", "left", "top", "width", "height"]), min_size=3))
    box = {}
    for key in keys:
        if key == "label":
            box[key] = draw(st.sampled_from(LABELS) | NASTY_TEXT | ANY_VALUE)
        else:
            box[key] = draw(NASTY_NUMBERS | ANY_VALUE)
    return box


@st.composite
def element_answer(draw) -> object:
    """An element's answer: usually wrapped in its name, sometimes bare, sometimes not an answer at all."""
    boxes = draw(st.lists(raw_box(), max_size=12) | ANY_VALUE)
    props = draw(st.fixed_dictionaries({"width": SIZE, "height": SIZE}) | JSON_LIKE)
    value = {"boundingBoxes": boxes, "inputImageProperties": props}
    shape = draw(st.integers(0, 4))
    if shape == 0:
        return value
    if shape == 1:
        return draw(JSON_LIKE)
    return {draw(st.sampled_from(["annotatedResult", "boundingBox", "x"])): value}


def to_text(value: object) -> str:
    """JSON text as a sloppy producer writes it: NaN and Infinity included."""
    return json.dumps(value, allow_nan=True, ensure_ascii=False)


def check_answer(answer: WorkerAnswer | None, labels: list[str] | None) -> None:
    """What every parsed answer guarantees, whatever went in."""
    if answer is None:
        return
    assert len(answer.boxes) <= MAX_BOXES_PER_ANSWER
    for box in answer.boxes:
        assert all(math.isfinite(v) for v in (box.left, box.top, box.width, box.height))
        assert box.width > 0 and box.height > 0
        assert labels is None or box.label in labels
        if answer.image_width and answer.image_height:
            assert 0 <= box.left and box.left + box.width <= answer.image_width + 1e-6
            assert 0 <= box.top and box.top + box.height <= answer.image_height + 1e-6


# --------------------------------------------------------------------------- answer parsers


@FUZZ
@given(element_answer(), st.booleans())
def test_element_answers_parse_or_are_counted(content, as_text):
    report = AnswerReport()
    answer = parse_element_answer(to_text(content) if as_text else content, "w1", LABELS, report)
    check_answer(answer, LABELS)
    if answer is None:
        assert report.problems > 0  # dropped, and the reason counted


@pytest.mark.parametrize("size", [10**400, -(10**400)])
def test_an_image_size_beyond_float_range_is_a_counted_repair(size):
    content = {
        "boundingBoxes": [{"label": "car", "left": 1, "top": 1, "width": 2, "height": 2}],
        "inputImageProperties": {"width": size, "height": 480},
    }
    report = AnswerReport()
    check_answer(parse_element_answer(content, "w1", LABELS, report), LABELS)
    assert report.problems > 0


@FUZZ
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "datasetObjectId": st.sampled_from(["0", "1", 2]) | ANY_VALUE,
                "dataObject": st.fixed_dictionaries({"s3Uri": NASTY_TEXT}) | ANY_VALUE,
                "annotations": st.lists(
                    st.fixed_dictionaries(
                        {
                            "workerId": st.sampled_from(["w1", "w2", 3]) | ANY_VALUE,
                            "annotationData": st.fixed_dictionaries(
                                {"content": element_answer().map(to_text) | element_answer()}
                            )
                            | ANY_VALUE,
                        }
                    )
                    | ANY_VALUE,
                    max_size=4,
                )
                | ANY_VALUE,
            }
        )
        | JSON_LIKE,
        max_size=5,
    ),
    st.sampled_from(["array", "lines", "crlf-bom"]),
)
def test_ground_truth_payloads_parse_or_raise_input_error(items, layout):
    if layout == "array":
        data = to_text(items).encode()
    else:
        end = "\r\n" if layout == "crlf-bom" else "\n"
        data = ("\ufeff" if layout == "crlf-bom" else "") + end.join(to_text(item) for item in items)
        data = data.encode()
    report = AnswerReport()
    try:
        objects = parse_consolidation_payload(data, LABELS, report)
    except InputError:
        return
    ids = [obj.dataset_object_id for obj in objects]
    assert len(ids) == len(set(ids))
    for obj in objects:
        assert len({a.worker_id for a in obj.answers}) == len(obj.answers)
        for answer in obj.answers:
            check_answer(answer, LABELS)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_as_a_payload_or_worker_response(data):
    for parse in (
        lambda: parse_consolidation_payload(data, LABELS, AnswerReport()),
        lambda: parse_worker_response(data, "0", "s3://b/0.jpg", LABELS, AnswerReport()),
    ):
        try:
            parse()
        except InputError:
            pass


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "answers": st.lists(
                st.fixed_dictionaries(
                    {
                        "workerId": st.sampled_from(["w1", "w2"]) | ANY_VALUE,
                        "answerContent": element_answer(),
                        "submissionTime": ANY_VALUE,
                        "timeSpentInSeconds": NASTY_NUMBERS | ANY_VALUE,
                    }
                )
                | ANY_VALUE,
                max_size=4,
            )
            | ANY_VALUE
        }
    )
    | JSON_LIKE
)
def test_worker_response_files_parse_or_are_counted(document):
    report = AnswerReport()
    obj = parse_worker_response(to_text(document), "7", "s3://b/7.jpg", LABELS, report)
    assert obj.dataset_object_id == "7"
    for answer in obj.answers:
        check_answer(answer, LABELS)
        assert answer.time_spent_seconds is None or math.isfinite(answer.time_spent_seconds)


@FUZZ
@given(
    st.one_of(
        element_answer().map(lambda v: to_text([v])),
        element_answer().map(to_text),
        NASTY_TEXT,
    ),
    st.sampled_from(["form", "raw", "cdata", "truncated"]),
)
def test_mturk_answer_xml_parses_or_is_counted(free_text, wrapping):
    form = (
        f'<QuestionFormAnswers xmlns="{MTURK_NS}"><Answer><QuestionIdentifier>taskAnswers'
        f"</QuestionIdentifier><FreeText>{escape(free_text)}</FreeText></Answer></QuestionFormAnswers>"
    )
    xml = {
        "form": form,
        "raw": free_text,
        "cdata": form.replace(escape(free_text), f"<![CDATA[{free_text}]]>"),
        "truncated": form[: len(form) // 2],
    }[wrapping]
    report = AnswerReport()
    answer = parse_mturk_answer(xml, "AW1", LABELS, report, image_width=640, image_height=480)
    check_answer(answer, LABELS)
    if answer is None:
        assert report.problems > 0


def test_mturk_answer_entity_bombs_and_huge_answers_are_refused_quickly():
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{"&lol{};".format(i - 1 if i > 1 else "") * 10}">' for i in range(1, 10))
        + "]><QuestionFormAnswers><Answer><FreeText>&lol9;</FreeText></Answer></QuestionFormAnswers>"
    )
    deep = "<a>" * 100_000 + "</a>" * 100_000
    for xml in (laughs, deep, "x" * 3_000_000, "[" * 100_000):
        report = AnswerReport()
        started = time.perf_counter()
        assert parse_mturk_answer(xml, "AW1", LABELS, report) is None
        assert report.problems == 1
        assert time.perf_counter() - started < 5  # generous: refusals take milliseconds


def test_deeply_nested_json_is_a_counted_repair_not_a_recursion_error():
    deep = "[" * 100_000
    report = AnswerReport()
    assert parse_element_answer(deep, "w", LABELS, report) is None
    assert report.counts["bad_json"] == 1
    with pytest.raises(InputError):
        parse_consolidation_payload(deep.encode(), LABELS, AnswerReport())
    with pytest.raises(InputError):
        parse_worker_response(deep, "0", "s3://b/0.jpg", LABELS, AnswerReport())


# ---------------------------------------------------------------------------- consolidation

SANE = st.floats(min_value=-50, max_value=700, allow_nan=False)


@st.composite
def crowd(draw) -> list[ObjectAnswers]:
    """A small job: a few objects, each answered by a few workers, boxes through the real parser."""
    objects = []
    for object_id in range(draw(st.integers(1, 4))):
        answers = []
        for worker in draw(
            st.lists(st.sampled_from(["w1", "w2", "w3", "w4", "w5"]), max_size=5, unique=True)
        ):
            boxes = draw(
                st.lists(
                    st.fixed_dictionaries(
                        {
                            "label": st.sampled_from(LABELS) | NASTY_TEXT,
                            "left": SANE | NASTY_NUMBERS,
                            "top": SANE | NASTY_NUMBERS,
                            "width": SANE | NASTY_NUMBERS,
                            "height": SANE | NASTY_NUMBERS,
                        }
                    ),
                    max_size=6,
                )
            )
            size = draw(st.sampled_from([(640, 480), (1, 1), (100_000, 3), None]))
            content = {"annotatedResult": {"boundingBoxes": boxes}}
            if size:
                content["annotatedResult"]["inputImageProperties"] = {"width": size[0], "height": size[1]}
            parsed = parse_element_answer(content, worker, LABELS, AnswerReport())
            if parsed is not None:
                answers.append(parsed)
        objects.append(ObjectAnswers(dataset_object_id=str(object_id), source_ref=f"s3://b/{object_id}.jpg",
                                     answers=answers))  # fmt: skip
    return objects


@FUZZ
@given(
    crowd(),
    st.sampled_from(["none", "agreement"]),
    st.sampled_from(["median", "mean"]),
    st.floats(0.05, 1.0),
    st.floats(0.0, 1.0),
)
def test_consolidation_of_any_crowd_returns_finite_boxes(objects, weighting, coordinates, iou, support):
    results = IoUVote(iou, support, coordinates, weighting).fit_predict(objects, labels=LABELS)
    assert [r.dataset_object_id for r in results] == [o.dataset_object_id for o in objects]
    for result in results:
        for box in result.boxes:
            assert box.label in LABELS
            values = (box.left, box.top, box.width, box.height, box.confidence)
            assert all(math.isfinite(v) for v in values), box
            assert box.width > 0 and box.height > 0 and 0 <= box.confidence <= 1


@FEW
@given(crowd())
def test_consolidated_outputs_round_trip_through_the_augmented_manifest(tmp_path, objects):
    """Whatever the labels and source-refs hold (U+2028 included), the written manifest reads back."""
    store = LocalStore(tmp_path / "out")
    lines = {o.dataset_object_id: {"source-ref": f"s3://b/{o.dataset_object_id}\u2028.jpg"} for o in objects}
    outputs = consolidate_and_write(
        objects, lines, LABELS, attr="bbox", job_name="fuzz", targets=OutputTargets.job(store)
    )
    read = list(read_augmented_manifest(store, "manifests/output/output.manifest", "bbox"))
    answered = [o for o in objects if o.answers]  # an object nobody answered gets no line
    assert len(read) == len(answered) == len(outputs.results)
    assert [line.source_ref for _, line in read] == [
        lines[o.dataset_object_id]["source-ref"] for o in answered
    ]


def many_boxes(worker: str, count: int, shift: float) -> WorkerAnswer:
    boxes = [
        Box(label=LABELS[i % 3], left=(i % 50) * 20 + shift, top=(i // 50) * 20 + shift, width=15, height=15)
        for i in range(count)
    ]
    return WorkerAnswer(worker_id=worker, boxes=boxes, image_width=1100, image_height=1100)


def test_thousands_of_boxes_from_one_worker_are_capped_and_consolidated():
    """One worker sends 5,000 boxes: the parser keeps 1,000; with four more workers at the cap, the
    object still consolidates (the time is measured by the reliability sweep, not asserted here)."""
    flood = {"annotatedResult": {"boundingBoxes": [
        {"label": "car", "left": i % 1000, "top": i // 1000, "width": 3, "height": 3} for i in range(5000)
    ]}}  # fmt: skip
    report = AnswerReport()
    parsed = parse_element_answer(flood, "flooder", LABELS, report)
    assert len(parsed.boxes) <= MAX_BOXES_PER_ANSWER and report.counts["too_many_boxes"] == 1
    answers = [many_boxes(f"w{i}", MAX_BOXES_PER_ANSWER, shift=i * 0.5) for i in range(5)]
    (result,) = IoUVote().fit_predict([ObjectAnswers(dataset_object_id="0", source_ref="s3://b/0.jpg",
                                                     answers=answers)], labels=LABELS)  # fmt: skip
    assert len(result.boxes) == MAX_BOXES_PER_ANSWER


# -------------------------------------------------------------------------------- manifests

GOOD_LINE = st.builds(
    lambda key, extra: json.dumps({"source-ref": f"s3://bucket-a/{key}.jpg", **extra}, ensure_ascii=False),
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r"), min_size=1, max_size=20),
    st.dictionaries(st.text(max_size=5), JSON_LIKE, max_size=2).filter(lambda d: "source-ref" not in d),
)
BAD_LINE = st.one_of(
    st.sampled_from(
        [
            "[]",
            '"s3://bucket-a/x.jpg"',
            '{"source_ref": "s3://bucket-a/x.jpg"}',
            '{"source-ref": "s3://bucket-a/x.jpg"',
            '{"source-ref": NaN}',
            '{"source-ref": 7}',
            "{'source-ref': 's3://bucket-a/x.jpg'}",
            "null",
        ]
    ),
    st.text(min_size=1, max_size=40).filter(lambda t: t.strip() and "\n" not in t and "\r" not in t),
)


@FUZZ
@given(
    st.lists(st.tuples(st.booleans(), GOOD_LINE, BAD_LINE), min_size=1, max_size=12),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
    st.integers(1, 64),
)
def test_manifest_lines_are_read_or_named(tmp_path, lines, end, bom, chunk):
    """Each good line is read, each bad one named by its number, whatever the line ends and chunking."""
    texts, good_numbers = [], []
    for number, (good, good_line, bad_line) in enumerate(lines, start=1):
        is_good = good or _is_manifest_line(bad_line)
        texts.append(good_line if good else bad_line)
        if is_good:
            good_numbers.append(number)
    data = (("\ufeff" if bom else "") + end.join(texts)).encode()
    (tmp_path / "m.manifest").write_bytes(data)
    store = LocalStore(tmp_path)
    original = manifest_jsonl._READ_CHUNK
    manifest_jsonl._READ_CHUNK = chunk  # lines and CRLF pairs split across reads
    try:
        errors: list[InputError] = []
        read = [number for number, _ in read_manifest(store, "m.manifest", errors=errors)]
    finally:
        manifest_jsonl._READ_CHUNK = original
    assert read == good_numbers
    assert len(errors) == len(lines) - len(good_numbers)
    assert all(":" in e.message for e in errors)


def _is_manifest_line(text: str) -> bool:
    from orchestrator.manifest import parse_line

    try:
        return parse_line(text.encode()) is not None
    except ValueError:
        return False


def test_very_long_lines_and_non_object_lines(tmp_path):
    long_ok = json.dumps({"source-ref": "s3://bucket-a/x.jpg", "pad": "x" * 3_000_000})
    text = "\n".join([long_ok, "[" + "1," * 500_000 + "1]", '{"no": "ref"}', "", long_ok]) + "\n"
    (tmp_path / "m.manifest").write_text(text)
    errors: list[InputError] = []
    rows = list(read_manifest(LocalStore(tmp_path), "m.manifest", errors=errors))
    assert [number for number, _ in rows] == [1, 5]
    assert [e.message.split(":")[-2:][0][-1] for e in errors] == ["2", "3"]


def test_a_deeply_nested_manifest_line_is_named_not_a_recursion_error(tmp_path):
    (tmp_path / "m.manifest").write_text('{"source-ref": "s3://bucket-a/x.jpg"}\n' + "[" * 100_000 + "\n")
    errors: list[InputError] = []
    assert len(list(read_manifest(LocalStore(tmp_path), "m.manifest", errors=errors))) == 1
    assert len(errors) == 1
    assert errors[0].message.endswith("/m.manifest:2: JSON nested too deeply")


def test_augmented_manifest_reading_survives_deep_nesting_and_line_separators(tmp_path):
    line = {
        "source-ref": "s3://b/a\u2028b\x85c.jpg",
        "bbox": {"image_size": [{"width": 10, "height": 10, "depth": 3}], "annotations": []},
        "bbox-metadata": {
            "objects": [],
            "class-map": {},
            "type": "groundtruth/object-detection",
            "human-annotated": "yes",
            "creation-date": "2026-01-01T00:00:00.000000",
            "job-name": "labeling-job/x",
        },
    }
    text = json.dumps(line, ensure_ascii=False) + "\n" + "[" * 100_000 + "\n"
    (tmp_path / "o.manifest").write_text(text, encoding="utf-8")
    errors: list[InputError] = []
    read = list(read_augmented_manifest(LocalStore(tmp_path), "o.manifest", "bbox", errors))
    assert [line.source_ref for _, line in read] == [line["source-ref"]]
    assert len(errors) == 1 and ":2:" in errors[0].message


# ------------------------------------------------------------------------------------ specs

SPEC_KEYS = {
    "name": st.sampled_from(["job-1", "Job", "a" * 64, "bad_name", "-x", ""]) | ANY_VALUE,
    "backend": st.sampled_from(["portal", "mturk", "groundtruth", "cvat"]) | ANY_VALUE,
    "labels": st.lists(NASTY_TEXT, max_size=12) | ANY_VALUE,
    "label_attribute": st.sampled_from(["bbox", "x-metadata", "source-ref"]) | NASTY_TEXT,
    "input_manifest": st.sampled_from(["s3://b/in.manifest", "in.manifest", "https://x"]) | ANY_VALUE,
    "output": st.sampled_from(["s3://b/out/", "out/"]) | ANY_VALUE,
    "task": st.dictionaries(
        st.sampled_from(["title", "workers_per_object", "time_limit", "lifetime", "max_concurrent", "bogus"]),
        NASTY_NUMBERS | NASTY_TEXT | st.sampled_from(["5m", "2d", "-1h", "1e400s", "0"]) | ANY_VALUE,
        max_size=4,
    )
    | ANY_VALUE,
    "workforce": st.dictionaries(
        st.sampled_from(["type", "team", "price_usd"]),
        st.sampled_from(["private", "public", "vendor", "crew", 0.036]) | ANY_VALUE,
        max_size=3,
    ),
    "groundtruth": st.dictionaries(
        st.sampled_from(["role_arn", "consolidation", "region", "chain", "chain_attribute"]),
        st.sampled_from(["arn:aws:iam::123456789012:role/R", "aws", "labeljob", "us-east-1", "adjust"])
        | ANY_VALUE,
        max_size=4,
    )
    | ANY_VALUE,
    "mturk": st.dictionaries(
        st.sampled_from(
            ["sandbox", "reward_usd", "auto_approve_after", "question", "external_url", "locales"]
        ),
        st.sampled_from([True, "0.10", "1d", "external", "https://p.example/", ["US"]]) | ANY_VALUE,
        max_size=4,
    )
    | ANY_VALUE,
    "consolidation": st.dictionaries(
        st.sampled_from(["iou_threshold", "min_support", "coordinates", "weighting"]),
        NASTY_NUMBERS | st.sampled_from(["median", "agreement"]) | ANY_VALUE,
        max_size=4,
    ),
    "portal": st.dictionaries(st.sampled_from(["public_url"]), NASTY_TEXT | ANY_VALUE),
    "extra_key": ANY_VALUE,
}


@st.composite
def spec_dict(draw) -> dict:
    keys = draw(st.sets(st.sampled_from(sorted(SPEC_KEYS)), max_size=len(SPEC_KEYS)))
    required = {"name": "fuzz-job", "labels": ["car"], "input_manifest": "in.manifest", "output": "out/"}
    data = {k: v for k, v in required.items() if draw(st.integers(0, 5))}
    data.update({key: draw(SPEC_KEYS[key]) for key in keys})
    return data


@FUZZ
@given(spec_dict())
def test_any_spec_is_a_job_spec_or_a_spec_error_and_backends_validate_it(data):
    try:
        spec = parse_spec(data)
    except SpecError as exc:
        assert exc.problems and all(isinstance(key, str) and message for key, message in exc.problems)
        return
    assert isinstance(spec, JobSpec)
    problems = get_backend(spec.backend).validate(spec)
    assert all(isinstance(key, str) and isinstance(message, str) for key, message in problems)


@pytest.mark.parametrize("key", ["task.time_limit", "task.lifetime", "mturk.auto_approve_after"])
@pytest.mark.parametrize("value", [99999999999999999999999, 10**400, float("inf"), float("nan"), "3651d", 0])
def test_a_duration_out_of_range_is_a_spec_error_naming_its_key(key, value):
    table, name = key.split(".")
    data = {"name": "j", "labels": ["car"], "input_manifest": "m", "output": "o", table: {name: value}}
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    assert caught.value.problems == [(key, "must be more than 0 s and at most 3650 days")]


def test_a_huge_duration_in_a_spec_file_is_a_spec_error(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text('name = "j"\nlabels = ["car"]\ninput_manifest = "m"\noutput = "o"\n'
                    "[task]\ntime_limit = 99999999999999999999999\n")  # fmt: skip
    with pytest.raises(SpecError, match=r"task\.time_limit: must be more than 0 s and at most 3650 days"):
        load_spec(path)


@FEW
@given(
    st.text(max_size=200)
    | spec_dict().map(lambda d: "\n".join(f"{k} = {json.dumps(v)}" for k, v in d.items()))
)
def test_any_spec_file_loads_or_is_a_spec_error(tmp_path, text):
    path = tmp_path / "job.toml"
    path.write_text(text, encoding="utf-8")
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        with pytest.raises(SpecError, match="not valid TOML"):
            load_spec(path)
        return
    try:
        load_spec(path)
    except SpecError:
        pass

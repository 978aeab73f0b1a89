"""`fastjson.loads` returns what `json.loads` returns and raises what it raises, on generated JSON and on
text near JSON: the edge cases where msgspec and the standard library part ways come first."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.fastjson import loads, loads_utf8


def outcome(text):
    """The value (with its exact types and float bits) or the exception type and message."""
    try:
        return "value", repr(json.loads(text))
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        return type(exc).__name__, str(exc)


def fast_outcome(text):
    try:
        return "value", repr(loads(text))
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__, str(exc)


# Where msgspec alone would differ: it refuses NaN and Infinity, numbers beyond a float, lone surrogates
# and a BOM in bytes, which the standard library reads; and -0, big integers, duplicate keys and deep
# nesting, which both read but could read differently.
EDGES = [
    "NaN",
    "[Infinity, -Infinity]",
    "1e400",
    "-1e400",
    "4.9e-325",
    "1" + "0" * 400,
    "-0",
    "-0.0",
    '"\\ud800"',
    '"\\udc80x"',
    '{"a": 1, "b": 2, "a": 3}',
    "[" * 5000 + "]" * 5000,
    "[" * 900 + "]" * 900,
    '"a\x01"',
    "\ufeff1",
    b"\xef\xbb\xbf[1]",
    b'"\xff"',
    "[1, 2",
    "1 2",
    "",
    " 1 ",
    "12345678901234567891",
    "1.7976931348623157e308",
    "0.1e-999",
    '{"b": {"boundingBoxes": [{"label": "a", "left": 1.5e2, "top": -0, "width": 2, "height": 1e0}]}}',
]


@pytest.mark.parametrize("text", EDGES, ids=range(len(EDGES)))
def test_the_edges_where_msgspec_parts_ways_read_as_the_standard_library_reads_them(text):
    assert fast_outcome(text) == outcome(text)


def test_a_value_msgspec_reads_keeps_json_types_and_float_bits():
    value = loads('{"i": -0, "f": -0.0, "big": 123456789012345678901234567890, "x": 0.1}')
    assert value == {"i": 0, "f": -0.0, "big": 123456789012345678901234567890, "x": 0.1}
    assert type(value["i"]) is int and math.copysign(1.0, value["f"]) == -1.0


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids, max_size=4),
    max_leaves=12,
)
TOKENS = st.sampled_from(
    ['{', '}', '[', ']', ',', ':', '"', '\\', '"a"', '1', '-', '0', '.', 'e', '+', ' ', '\n', '\t', 'true',
     'null', 'NaN', 'Infinity', '\\u', 'd800', '\ud800', '\x00', '\ufeff', '1e309', '9' * 25]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES, st.booleans())
def test_any_json_value_reads_the_same(value, as_bytes):
    text = json.dumps(value)
    assert fast_outcome(text.encode() if as_bytes else text) == outcome(text.encode() if as_bytes else text)


@settings(max_examples=600, deadline=None)
@given(st.lists(TOKENS, max_size=14).map("".join))
def test_text_near_json_reads_or_fails_the_same(text):
    assert fast_outcome(text) == outcome(text)


@pytest.mark.parametrize("text", EDGES, ids=range(len(EDGES)))
def test_loads_utf8_reads_as_the_standard_library_or_refuses(text):
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    try:
        value = loads_utf8(data)
    except ValueError:
        return  # the caller reads it the slow way
    assert ("value", repr(value)) == outcome(data.decode("utf-8"))


def test_loads_utf8_refuses_what_only_the_standard_library_reads():
    for data in (b"NaN", b"1e400", b'"\\ud800"', b"\xef\xbb\xbf[1]", b'"\xff"'):
        with pytest.raises(ValueError):
            loads_utf8(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(JSON_VALUES, max_size=5))
def test_an_arrays_elements_read_one_by_one_are_its_elements(values):
    from orchestrator.fastjson import array_items

    data = json.dumps(values).encode()
    elements = array_items(data)
    if elements is None:  # only NaN and Infinity, which are not JSON, keep msgspec from splitting it
        assert b"NaN" in data or b"Infinity" in data
        return
    assert repr([loads(element) for element in elements]) == repr(json.loads(data))


def test_only_an_array_is_split():
    from orchestrator.fastjson import array_items

    for data in (b'{"a": [1]}', b"1", b"[1, 2", b"[NaN]", b"[1]\n[2]"):
        assert array_items(data) is None

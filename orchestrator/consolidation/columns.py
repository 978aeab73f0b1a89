"""Raw answer boxes of many answers validated and repaired at once, as columns.

`validate_boxes` applies, with numpy over every box of a payload, exactly the checks and repairs that
`answers._parse_box` applies to one box (same order, same reason codes, the same float arithmetic),
so a payload of 10^5 boxes costs a few calls per column instead of a Python function per box.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np

MAX_COORDINATE = 1e6  # pixels; far beyond any image, and small enough that areas and sums stay finite
BOX_KEYS = ("label", "left", "top", "width", "height")
_KEY_SET = frozenset(BOX_KEYS)
_EDGES = BOX_KEYS[1:]
# Reason codes by the step that records them; a box gets at most one code per step.
EARLY_DROPS = (
    "",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "unknown_label",
    "nan_or_infinite",
    "coordinate_out_of_range",
    "zero_area",
)
FIXES = ("", "negative_size_fixed", "swapped_corners_fixed")
LATE_DROPS = ("", "outside_image_dropped", "zero_area")


class TypedBox(msgspec.Struct, gc=False):
    """A box of a typical answer as msgspec reads it: every field present and of its JSON type."""

    label: str
    left: float
    top: float
    width: float
    height: float


class _TypedSize(msgspec.Struct, gc=False):
    width: int
    height: int


class _TypedElement(msgspec.Struct):
    boundingBoxes: list[TypedBox]  # noqa: N815 - the element's own key
    inputImageProperties: _TypedSize  # noqa: N815


_read_typical = msgspec.json.Decoder(dict[str, _TypedElement]).decode


def read_typical_answer(content: str | bytes) -> tuple[list[TypedBox], int, int] | None:
    """The boxes and image size of an answer in the form nearly every answer has, read without a dict
    per box: `{"<element>": {"boundingBoxes": [<box with its five fields typed>], "inputImageProperties":
    {"width": <int>, "height": <int>}}}`, one element, a size in (0, MAX_COORDINATE]. None for anything
    else (a wrong type, NaN, a missing key, text that is not JSON), which the general reader then reads,
    counting what it repairs: this reader decides nothing, it only finds the answers with nothing to say.
    """
    try:
        answer = _read_typical(content)
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return None
    if len(answer) != 1:
        return None
    [(name, element)] = answer.items()
    size = element.inputImageProperties
    if name in ("boundingBoxes", "inputImageProperties") or not (
        0 < size.width <= MAX_COORDINATE and 0 < size.height <= MAX_COORDINATE
    ):
        return None
    return element.boundingBoxes, size.width, size.height


@dataclass
class BoxColumns:
    """Every raw box, in input order: whether it is kept, its repaired corners and its label."""

    keep: np.ndarray  # (N,) bool
    xyxy: np.ndarray  # (N, 4) x1, y1, x2, y2 where kept
    label: list[Any]  # (N,) the label where kept
    early: np.ndarray  # (N,) index into EARLY_DROPS
    fix: np.ndarray  # (N,) index into FIXES
    clipped: np.ndarray  # (N,) bool
    late: np.ndarray  # (N,) index into LATE_DROPS

    def events(self, raw: list[Any]) -> list[tuple[int, str, str]]:
        """(box index, reason code, detail) of every repair and drop, in box order then step order."""
        out = []
        flagged = (self.early > 0) | (self.fix > 0) | self.clipped | (self.late > 0)
        for i in np.flatnonzero(flagged).tolist():
            if self.early[i]:
                code = EARLY_DROPS[self.early[i]]
                out.append((i, code, _detail(code, raw[i])))
                continue
            if self.fix[i]:
                out.append((i, FIXES[self.fix[i]], ""))
            if self.clipped[i]:
                out.append((i, "clipped_to_image", ""))
            if self.late[i]:
                out.append((i, LATE_DROPS[self.late[i]], ""))
        return out


def _detail(code: str, item: Any) -> str:
    if isinstance(item, TypedBox):
        item = msgspec.structs.asdict(item)
    if code == "not_an_object":
        return f"box is {type(item).__name__}"
    if code == "missing_field":
        return f"no {', '.join(k for k in BOX_KEYS if k not in item)}"
    if code == "wrong_type":
        return str({k: item[k] for k in BOX_KEYS})[:80]
    if code == "unknown_label":
        return repr(item["label"])[:40]
    return ""


def _flags(values: Any, n: int) -> np.ndarray:
    return np.fromiter(values, dtype=bool, count=n)


def _of_type(column: list[Any], kind: Any, exact: tuple[type, ...]) -> np.ndarray:
    """Where a value is an instance of `kind` but not a bool; one pass over the types when every value
    is exactly of the `exact` types, as JSON's are."""
    if set(map(type, column)) <= set(exact):
        return np.ones(len(column), dtype=bool)
    return _flags(map(isinstance, column, repeat(kind)), len(column)) & ~_flags(
        map(isinstance, column, repeat(bool)), len(column)
    )


def _floats(column: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """`float()` of each number, and where it overflowed (an integer too large for a float)."""
    try:
        return np.fromiter(map(float, column), dtype=np.float64, count=len(column)), np.zeros(
            len(column), bool
        )
    except OverflowError:
        values, overflow = np.zeros(len(column)), np.zeros(len(column), bool)
        for k, value in enumerate(column):
            try:
                values[k] = float(value)
            except OverflowError:
                overflow[k] = True
        return values, overflow


def validate_boxes(raw: list[Any], size: np.ndarray, allowed: set[str] | None) -> BoxColumns:
    """Validate `raw` boxes (answer JSON values, or `TypedBox`es); `size` (N, 2) is each box's image
    width and height, NaN where unknown (then nothing is clipped); `allowed` the job's labels, None for
    any."""
    n = len(raw)
    early = np.zeros(n, dtype=np.int8)
    kinds = set(map(type, raw))
    if kinds == {TypedBox}:
        # Every field is present and of its JSON type: `_typed`'s checks would pass them all.
        rows = np.arange(n)
        labels = list(map(attrgetter("label"), raw))
        # One pass over the boxes, each read once: they lie all over memory, and four passes cost four.
        edges = np.fromiter(chain.from_iterable(map(attrgetter(*_EDGES), raw)), np.float64, 4 * n)
        edges = edges.reshape(n, 4).T
        overflow = np.zeros(n, dtype=bool)
    else:
        if TypedBox in kinds:
            raw = [msgspec.structs.asdict(item) if type(item) is TypedBox else item for item in raw]
        rows, labels, columns = _typed(raw, early)
        converted = [_floats(column) for column in columns]
        edges = np.array([c[0] for c in converted]).reshape(4, -1)
        overflow = np.any([c[1] for c in converted], axis=0)
    if allowed is not None and not set(labels) <= allowed:
        known = _flags(map(allowed.__contains__, labels), len(labels))
        early[rows[~known]] = EARLY_DROPS.index("unknown_label")
        rows, labels = rows[known], list(compress(labels, known))
        edges, overflow = edges[:, known], overflow[known]
    return _checked(n, rows, labels, edges, overflow, size, early)


def _typed(raw: list[Any], early: np.ndarray) -> tuple[np.ndarray, list[Any], list[list[Any]]]:
    """Rows of the boxes that are objects with every field of its JSON type, their labels and edge
    columns; the others get their early reason code."""
    n = len(raw)
    is_dict = _flags(map(isinstance, raw, repeat(dict)), n)
    early[~is_dict] = EARLY_DROPS.index("not_an_object")
    rows = np.flatnonzero(is_dict)
    boxes = list(compress(raw, is_dict))
    complete = _flags(map(operator.ge, map(dict.keys, boxes), repeat(_KEY_SET)), len(boxes))
    early[rows[~complete]] = EARLY_DROPS.index("missing_field")
    rows, boxes = rows[complete], list(compress(boxes, complete))

    labels = list(map(dict.__getitem__, boxes, repeat("label")))
    columns = [list(map(dict.__getitem__, boxes, repeat(key))) for key in _EDGES]
    typed = _of_type(labels, str, (str,))
    for column in columns:
        typed &= _of_type(column, int | float, (int, float))
    early[rows[~typed]] = EARLY_DROPS.index("wrong_type")
    return rows[typed], list(compress(labels, typed)), [list(compress(column, typed)) for column in columns]


def _checked(
    n: int,
    rows: np.ndarray,
    labels: list[Any],
    edges: np.ndarray,
    overflow: np.ndarray,
    size: np.ndarray,
    early: np.ndarray,
) -> BoxColumns:
    """The numeric checks and repairs of the `n` boxes, of which those at `rows` passed the type and
    label checks (`labels`; `edges` (4, rows): left, top, width, height as floats; `overflow` where an
    integer was too large for a float) and the others have their `early` code."""
    fix = np.zeros(n, dtype=np.int8)
    late = np.zeros(n, dtype=np.int8)
    clipped = np.zeros(n, dtype=bool)
    xyxy = np.zeros((n, 4))
    left, top, width, height = edges
    x1, y1, x2, y2 = left, top, left + width, top + height
    with np.errstate(invalid="ignore", over="ignore"):
        finite = ~overflow & np.all(np.isfinite([x1, y1, x2, y2, width, height]), axis=0)
        in_range = np.max(np.abs([x1, y1, x2, y2]), axis=0, initial=0.0) <= MAX_COORDINATE
    area = (width != 0) & (height != 0)
    codes = np.select(
        [~finite, ~in_range, ~area],
        [EARLY_DROPS.index(c) for c in ("nan_or_infinite", "coordinate_out_of_range", "zero_area")],
        0,
    ).astype(np.int8)
    early[rows] = codes
    valid = codes == 0
    rows, labels = rows[valid], list(compress(labels, valid))
    x1, y1, x2, y2, width, height = (a[valid] for a in (x1, y1, x2, y2, width, height))

    fix[rows] = np.where((width < 0) & (height < 0), 2, np.where((width < 0) | (height < 0), 1, 0))
    # Python's min(a, b) is b only when b < a, max(a, b) b only when b > a: np.where keeps that choice,
    # so a -0.0 edge stays what the one-box parser makes of it.
    x1, x2 = np.where(x2 < x1, x2, x1), np.where(x2 > x1, x2, x1)
    y1, y2 = np.where(y2 < y1, y2, y1), np.where(y2 > y1, y2, y1)
    w_px, h_px = size[rows, 0], size[rows, 1]
    sized = ~np.isnan(w_px)
    cx1, cy1 = np.where(0.0 > x1, 0.0, x1), np.where(0.0 > y1, 0.0, y1)
    cx2, cy2 = np.where(w_px < x2, w_px, x2), np.where(h_px < y2, h_px, y2)
    outside = sized & ((cx2 <= cx1) | (cy2 <= cy1))
    changed = sized & ~outside & ((cx1 != x1) | (cy1 != y1) | (cx2 != x2) | (cy2 != y2))
    clipped[rows] = changed
    x1, y1 = np.where(changed, cx1, x1), np.where(changed, cy1, y1)
    x2, y2 = np.where(changed, cx2, x2), np.where(changed, cy2, y2)
    # A positive size lost to float rounding at a huge offset.
    flat = ~outside & ((x2 - x1 <= 0) | (y2 - y1 <= 0))
    late[rows] = np.where(outside, 1, np.where(flat, 2, 0))

    keep = np.zeros(n, dtype=bool)
    keep[rows] = ~outside & ~flat
    xyxy[rows] = np.stack([x1, y1, x2, y2], axis=1)
    if len(rows) == n:
        label = labels
    else:
        placed = np.full(n, None, dtype=object)
        placed[rows] = np.array(labels, dtype=object).reshape(-1)
        label = placed.tolist()
    return BoxColumns(keep=keep, xyxy=xyxy, label=label, early=early, fix=fix, clipped=clipped, late=late)

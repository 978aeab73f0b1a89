"""`json.loads`, several times faster on the text people send: msgspec reads it, and anything msgspec
refuses (NaN, integers beyond a float, lone surrogates, text that is not JSON) goes to the standard
library, so every value and every error is the standard library's.

`tests/test_fastjson.py` holds the two to the same results on generated text.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

__all__ = ["loads", "loads_utf8"]

_decode = msgspec.json.Decoder().decode


def loads(text: str | bytes) -> Any:
    """`json.loads(text)`: the same value, or the same exception."""
    try:
        return _decode(text)
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return json.loads(text)


def loads_utf8(data: bytes) -> Any:
    """msgspec's reading of UTF-8 `data`, with no fallback: the value `json.loads` gives for the same
    text, or ValueError where msgspec refuses it (and the standard library may still read it)."""
    try:
        return _decode(data)
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise ValueError(str(exc)) from None

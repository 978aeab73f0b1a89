"""`json.loads`, several times faster on the text people send: msgspec reads it, and anything msgspec
refuses (NaN, integers beyond a float, lone surrogates, text that is not JSON) goes to the standard
library, so every value and every error is the standard library's.

`tests/test_fastjson.py` holds the two to the same results on generated text.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

__all__ = ["array_items", "loads", "loads_utf8"]

_decode = msgspec.json.Decoder().decode
_split_array = msgspec.json.Decoder(list[msgspec.Raw]).decode


def loads(text: str | bytes | msgspec.Raw) -> Any:
    """`json.loads(text)`: the same value, or the same exception. `text` may be an element of
    `array_items`."""
    try:
        return _decode(text)
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return json.loads(bytes(text) if isinstance(text, msgspec.Raw) else text)


def loads_utf8(data: bytes) -> Any:
    """msgspec's reading of UTF-8 `data`, with no fallback: the value `json.loads` gives for the same
    text, or ValueError where msgspec refuses it (and the standard library may still read it)."""
    try:
        return _decode(data)
    except (msgspec.MsgspecError, RecursionError) as exc:
        raise ValueError(str(exc)) from None


def array_items(data: bytes) -> list[msgspec.Raw] | None:
    """The elements of the JSON array in UTF-8 `data`, each left as its text for `loads` to read when
    it is wanted, so a large array is never held parsed whole; None when `data` is not a JSON array
    msgspec can split (read it whole then). The split checks the JSON's syntax but not that its
    strings are UTF-8: reading an element may raise UnicodeDecodeError."""
    try:
        return _split_array(data)
    except (msgspec.MsgspecError, RecursionError):
        return None

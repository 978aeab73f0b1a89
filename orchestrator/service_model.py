"""Check a request against botocore's service model, including what botocore skips before sending.

botocore validates required members, types and `min`, but not `max`, `pattern` or `enum`; Ground
Truth and MTurk reject those server-side with a `ValidationException`. Both the backends (before
any call) and the test fakes (on every request) use this check.
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=8)
def _service_model(service: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern | None:
    try:
        return re.compile(pattern)
    except re.error:  # a Java-only construct; botocore's own docs are the authority then
        return None


def operation_names(service: str) -> list[str]:
    return list(_service_model(service).operation_names)


def validate_request(service: str, operation: str, params: dict) -> list[str]:
    """Every violation of the operation's input shape, as `Path.To.Member: problem`; empty if valid."""
    operation_model = _service_model(service).operation_model(operation)
    problems: list[str] = []
    if operation_model.input_shape is not None:
        _check(operation_model.input_shape, params, operation_model.input_shape.name, problems)
    return problems


def _check(shape, value, path: str, problems: list[str]) -> None:
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a structure, got {type(value).__name__}")
            return
        for name in shape.required_members:
            if name not in value:
                problems.append(f"{path}.{name}: required")
        for name, member_value in value.items():
            if name not in shape.members:
                problems.append(f"{path}.{name}: unknown member")
                continue
            _check(shape.members[name], member_value, f"{path}.{name}", problems)
        return
    if kind == "list":
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        _check_length(meta, len(value), path, "items", problems)
        for i, item in enumerate(value):
            _check(shape.member, item, f"{path}[{i}]", problems)
        return
    if kind == "map":
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        _check_length(meta, len(value), path, "entries", problems)
        for key, item in value.items():
            _check(shape.key, key, f"{path}.<key {key!r}>", problems)
            _check(shape.value, item, f"{path}.{key}", problems)
        return
    if kind == "string":
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {type(value).__name__}")
            return
        _check_length(meta, len(value), path, "characters", problems)
        pattern = meta.get("pattern")
        compiled = _compiled(pattern) if pattern else None
        if compiled is not None and not compiled.fullmatch(value):
            problems.append(f"{path}: {value!r} does not match {pattern}")
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} is not one of {', '.join(shape.enum)}")
        return
    if kind in ("integer", "long", "double", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{path}: expected a number, got {type(value).__name__}")
            return
        if kind in ("integer", "long") and not isinstance(value, int):
            problems.append(f"{path}: expected a whole number, got {value!r}")
        if "min" in meta and value < meta["min"]:
            problems.append(f"{path}: {value} is below the minimum {meta['min']}")
        if "max" in meta and value > meta["max"]:
            problems.append(f"{path}: {value} is above the maximum {meta['max']}")
        return
    if kind == "boolean" and not isinstance(value, bool):
        problems.append(f"{path}: expected true or false, got {type(value).__name__}")


def _check_length(meta: dict, length: int, path: str, unit: str, problems: list[str]) -> None:
    if "min" in meta and length < meta["min"]:
        problems.append(f"{path}: {length} {unit}, at least {meta['min']} required")
    if "max" in meta and length > meta["max"]:
        problems.append(f"{path}: {length} {unit}, at most {meta['max']} allowed")

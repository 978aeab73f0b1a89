"""Chained jobs: an adjustment (or verification) job on an earlier job's output manifest.

The new job reads the earlier output, writes its labels under a new attribute, and must not see
classes that its label list no longer has: Ground Truth's consolidation fails on them. So the
earlier annotations are filtered first, and their `class_id`s renumbered to the new label list.
"""

from __future__ import annotations

import json
from typing import Literal

from orchestrator.errors import InputError, SpecError
from orchestrator.jobs import JobRecord
from orchestrator.spec import JobSpec, parse_spec

ChainMode = Literal["adjust", "verify"]


def chain_spec(spec: JobSpec, previous: JobRecord, mode: ChainMode) -> JobSpec:
    """`spec` turned into a job on `previous`'s output: input, chain keys and the earlier attribute."""
    flag = f"--{mode}-from"
    problems = []
    if spec.backend != "groundtruth" or spec.groundtruth is None:
        problems.append(("backend", f"{flag} needs backend = 'groundtruth' and a [groundtruth] table"))
    if not previous.terminal:
        problems.append((flag, f"job {previous.name} is still {previous.status}; chain it once it has ended"))
    earlier = previous.job_spec.label_attribute
    if spec.label_attribute == earlier:
        problems.append(
            (
                "label_attribute",
                f"must differ from {previous.name}'s {earlier!r}: a chained job writes its labels under a "
                "new attribute",
            )
        )
    if problems:
        raise SpecError(problems, source=f"job spec {spec.name}")
    data = spec.model_dump(mode="json")
    data["input_manifest"] = previous.output_manifest()
    data["groundtruth"].update(chain=mode, chain_from=previous.name, chain_attribute=earlier)
    return parse_spec(data, source=f"job spec {spec.name}")


def filter_line(line: dict, attribute: str, labels: list[str]) -> dict:
    """The line with only the boxes whose class is in `labels`, renumbered; unlabeled lines as they are."""
    label, meta = line.get(attribute), line.get(f"{attribute}-metadata")
    if not isinstance(label, dict) or not isinstance(meta, dict) or "annotations" not in label:
        return line
    class_map = meta.get("class-map", {})
    objects = meta.get("objects", [])
    aligned = len(objects) == len(label["annotations"])
    annotations, kept_objects = [], []
    for i, box in enumerate(label["annotations"]):
        name = class_map.get(str(box.get("class_id")))
        if name not in labels:
            continue
        annotations.append({**box, "class_id": labels.index(name)})
        if aligned:
            kept_objects.append(objects[i])
    used = sorted({box["class_id"] for box in annotations})
    new_meta = {**meta, "class-map": {str(i): labels[i] for i in used}}
    if "objects" in meta:
        new_meta["objects"] = kept_objects if aligned else [{"confidence": 0.0} for _ in annotations]
    return {**line, attribute: {**label, "annotations": annotations}, f"{attribute}-metadata": new_meta}


def filter_manifest(data: bytes, attribute: str, labels: list[str]) -> bytes:
    """A chained job's input: the earlier output, every line kept (object ids stay line indexes)."""
    out, labeled = [], 0
    for number, text in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"output manifest line {number}: not JSON: {exc.msg}") from None
        labeled += isinstance(line.get(attribute), dict)
        out.append(
            json.dumps(filter_line(line, attribute, labels), ensure_ascii=False, separators=(",", ":"))
        )
    if not labeled:
        raise InputError(
            f"the earlier output has no line labeled under {attribute!r}", hint="check the job it came from"
        )
    return ("\n".join(out) + "\n").encode()

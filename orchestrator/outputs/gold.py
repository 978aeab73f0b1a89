"""The gold manifest a job spec's `[quality] gold` names: images with known boxes, read at launch by
the backends that mix gold tasks in (docs/portal.md, "Gold tasks"; docs/mturk.md, "Gold tasks")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.outputs.augmented_manifest import read_augmented_manifest
from orchestrator.storage import open_object

if TYPE_CHECKING:
    from orchestrator.spec import JobSpec

# Gold tasks' object ids: never a manifest line index, so they never meet a job object's.
GOLD_ID_PREFIX = "gold-"


@dataclass(frozen=True)
class GoldItem:
    """One gold image: its source-ref and known boxes (label, left, top, width, height)."""

    source_ref: str
    boxes: list[dict]


def read_gold(spec: JobSpec, boto3_session=None) -> list[GoldItem]:
    """The gold manifest of `spec` (an augmented manifest; InputError names a bad line), or []."""
    if spec.quality is None or spec.quality.gold is None:
        return []
    lines = read_augmented_manifest(*open_object(spec.quality.gold, boto3_session))
    keys = ("label", "left", "top", "width", "height")
    return [GoldItem(line.source_ref, [{k: b[k] for k in keys} for b in line.boxes()]) for _, line in lines]

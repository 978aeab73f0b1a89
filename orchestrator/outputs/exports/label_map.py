"""Label maps: a CSV of `from,to` rows that renames or merges classes on export.

    from,to
    automobile,car        # rename
    truck,car             # merge into car
    bicycle,              # empty `to`: drop the class

The header row is optional; blank lines and lines starting with `#` are ignored. A class the map
does not name is kept as it is. Errors name the file and the line.
"""

from __future__ import annotations

import csv
import io

from orchestrator.errors import InputError
from orchestrator.storage import ObjectStore

LabelMap = dict[str, str | None]


def parse_label_map(text: str, source: str) -> LabelMap:
    """The map from class name to new name, or None to drop the class."""
    mapping: LabelMap = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        row = [cell.strip() for cell in next(csv.reader(io.StringIO(line)))]
        if [cell.lower() for cell in row] == ["from", "to"] and not mapping:
            continue
        if len(row) != 2:
            raise InputError(
                f"{source}:{line_no}: expected two columns `from,to`, got {len(row)}",
                hint="leave `to` empty (`bicycle,`) to drop a class",
            )
        old, new = row
        if not old:
            raise InputError(f"{source}:{line_no}: the `from` column is empty")
        target = new or None
        if old in mapping and mapping[old] != target:
            raise InputError(
                f"{source}:{line_no}: {old!r} is mapped twice, to {mapping[old]!r} and {target!r}"
            )
        mapping[old] = target
    return mapping


def load_label_map(store: ObjectStore, key: str) -> LabelMap:
    data = store.get(key)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{store.uri(key)}: the label map is not UTF-8 text") from None
    return parse_label_map(text, store.uri(key))

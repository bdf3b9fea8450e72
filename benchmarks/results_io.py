"""Writing benchmark results as they come: one JSON line printed per row, the whole file rewritten."""

from __future__ import annotations

import json


def emit(result: dict, out: str, row: dict) -> None:
    """Append ``row`` to ``result['rows']``, print it, and rewrite ``out`` (a long run keeps what it measured)."""
    result["rows"].append(row)
    print(json.dumps(row), flush=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)

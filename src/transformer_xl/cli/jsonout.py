"""JSON for the `--json` lines of the commands: strict JSON, with non-finite numbers as ``null``.

Python's json module writes ``NaN`` and ``Infinity``, which are not JSON: a strict parser (jq, JavaScript's
JSON.parse, most other languages) rejects the whole line. A loss that is not finite is reported as null.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["finite_or_none", "json_line"]


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf) replaced by None, in nested dicts, lists, tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def json_line(value: Any) -> str:
    """One line of strict JSON (``allow_nan=False``: a non-finite number left anywhere would raise)."""
    return json.dumps(finite_or_none(value), allow_nan=False)

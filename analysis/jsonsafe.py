"""JSON of what the stages compute: numpy scalars as Python numbers, NaN and infinities as
null (they are not JSON, and other tools reading fit.json, design.json or compare.json choke
on them), tuples as lists, keys as strings. The one copy: fit, design and compare use it."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """``value`` with every part JSON can hold as itself, recursively."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.generic):  # any other numpy scalar (np.str_, ...)
        return value.item()
    return value


def dumps(value: Any) -> str:
    """The file's text: ``json_safe(value)`` indented by 2, with a final newline."""
    return json.dumps(json_safe(value), indent=2) + "\n"

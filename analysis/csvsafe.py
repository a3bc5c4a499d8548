"""The CSVs flame writes for people to open (results.csv, selection.csv, routing.csv,
compare.csv, a release's CSVs), safe in a spreadsheet.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read by
Excel, LibreOffice and Google Sheets as a formula (OWASP, "CSV Injection"), and member names,
failure reasons and error tails are text flame does not choose. Such a cell is written with a
leading single quote, which spreadsheets show as text; a number (``-1.5``, ``-inf``, ``1e-3``)
is left as it is, and so is every cell that does not start with one of these characters, so a
normal study's CSVs are byte for byte what ``DataFrame.to_csv`` writes.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from sweep.io import atomic_write_text

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """``value`` with a leading ``'`` when it is text a spreadsheet would run as a formula."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value  # a number written as text ("-1.5"): a spreadsheet reads it as the number


def csv_text(frame: pd.DataFrame) -> str:
    """``frame.to_csv(index=False)`` with every text cell (and header) neutralised."""
    safe = frame.copy()
    for col in safe.columns:
        if pd.api.types.is_object_dtype(safe[col]) or pd.api.types.is_string_dtype(safe[col]):
            safe[col] = safe[col].map(neutralise)
    safe.columns = [neutralise(c) for c in safe.columns]
    return safe.to_csv(index=False)


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """``frame`` to ``path`` as a spreadsheet-safe CSV (``csv_text``), written atomically."""
    atomic_write_text(path, csv_text(frame))

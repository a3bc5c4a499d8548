"""The report's building blocks: cells, tables, figures and sections as the template renders
them, built from DataFrames, mappings, JSON records and matplotlib's SVG files."""

from __future__ import annotations

import base64
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pandas as pd

from sweep.errors import ConfigError
from sweep.io import FIGURES_DIR

# Rows of the all-runs table: beyond this the page would be megabytes; results.csv has them all.
MAX_RUN_ROWS = 5000


@dataclass(frozen=True)
class Cell:
    """One table cell."""

    text: str
    """What the page shows (numbers to 4 significant digits)."""
    sort: str
    """What the column sorts by (the full-precision number, or the text)."""
    title: str = ""
    """Tooltip: the value exactly as the source file has it, when ``text`` rounds it."""
    numeric: bool = False
    """A number (right-aligned)."""


@dataclass(frozen=True)
class Table:
    """A sortable table and the file its numbers came from."""

    id: str
    """HTML id (tests and links find it by this)."""
    caption: str
    """One line over the table."""
    columns: list[str]
    """Column headers."""
    rows: list[list[Cell]]
    """Cells, row by row."""
    source: str
    """The file(s) the numbers came from, relative to the sweep directory."""
    note: str = ""
    """A line under the table (e.g. rows left out)."""
    kind: str = "table"


@dataclass(frozen=True)
class Figure:
    """A matplotlib SVG embedded as a data URI."""

    id: str
    """HTML id."""
    caption: str
    """One line under the figure."""
    uri: str
    """``data:image/svg+xml;base64,...``."""
    source: str
    """The SVG file, relative to the sweep directory."""
    kind: str = "figure"


@dataclass
class Section:
    """One section of the page: paragraphs, then tables and figures in order."""

    id: str
    """HTML id (the table of contents links to it)."""
    title: str
    """Heading."""
    notes: list[str] = field(default_factory=list)
    """Paragraphs (what is missing and why, warnings)."""
    items: list[Table | Figure] = field(default_factory=list)
    """Tables and figures."""
    layout: str = "column"
    """column (one item under the other) or grid (small tables side by side)."""


def cell(value: Any) -> Cell:
    """A cell: numbers to 4 significant digits (sorting by the full value), blanks as '-'."""
    if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
        return Cell("-", "")  # None, NaN, pandas' NA
    if isinstance(value, bool):
        return Cell("yes" if value else "no", str(int(value)))
    if isinstance(value, int):
        return Cell(str(value), str(value), numeric=True)
    if isinstance(value, float):
        text = f"{value:.4g}"
        return Cell(text, repr(value), "" if text == repr(value) else repr(value), True)
    if isinstance(value, (list, tuple)):
        return Cell(", ".join(cell(v).text for v in value), json.dumps(value, default=str),
                    json.dumps(value, default=str))
    if isinstance(value, dict):
        text = json.dumps(value, default=str)
        return Cell(text, text)
    return Cell(str(value), str(value))


def _plain(value: Any) -> Any:
    """numpy/pandas scalars as Python ones (pandas gives numpy types)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict)) \
        else value


def frame_table(id: str, caption: str, frame: pd.DataFrame, source: str,
                note: str = "") -> Table:
    """A table of every column of ``frame``."""
    rows = [[cell(_plain(v)) for v in record] for record in frame.itertuples(index=False)]
    return Table(id, caption, [str(c) for c in frame.columns], rows, source, note)


def records_table(id: str, caption: str, records: list[dict], source: str) -> Table:
    """A table of a list of dicts, nested keys flattened to ``a.b`` columns."""
    return frame_table(id, caption, pd.json_normalize(records, sep="."), source)


def mapping_table(id: str, caption: str, mapping: dict, source: str) -> Table:
    """A key/value table of a (nested) mapping: nested keys as ``a.b``."""
    flat = pd.json_normalize([mapping], sep=".").iloc[0].to_dict() if mapping else {}
    return Table(id, caption, ["key", "value"],
                 [[cell(k), cell(_plain(v))] for k, v in flat.items()], source)


def figure(sweep_dir: Path, name: str, caption: str, id: str | None = None) -> Figure | None:
    """``figures/<name>.svg`` as a data URI, or None when it was not written."""
    path = sweep_dir / FIGURES_DIR / f"{name}.svg"
    return svg_figure(path, caption, f"{FIGURES_DIR}/{name}.svg", id or f"fig-{name}")


def svg_figure(path: Path, caption: str, source: str, id: str) -> Figure | None:
    """``path`` as a Figure; None when it is not there, or (with a warning line on stderr
    naming it and the command that re-draws it) when it is not a whole SVG: a figure cut short
    by a killed writer or a full disk is left out, never embedded as a broken image."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    if (problem := svg_problem(data)) is not None:
        redo = ("`flame compare` again" if source.startswith("compare/")
                else f"`flame fit sweep_dir={path.parent.parent}`")
        print(f"warning: {path} {problem}; left out of the report; re-draw it with {redo}",
              file=sys.stderr)
        return None
    uri = "data:image/svg+xml;base64," + base64.b64encode(data).decode("ascii")
    return Figure(id, caption, uri, source)


def svg_problem(data: bytes) -> str | None:
    """Why ``data`` is not a whole SVG document (None when it is): it must parse as XML to
    its last tag (a truncated file does not) and its root must be ``<svg>``."""
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as err:
        return f"is not a whole SVG (truncated or corrupt: {err})"
    if not root.tag.endswith("svg"):
        return f"is not an SVG (its root is <{root.tag}>)"
    return None


def read_csv_file(path: Path) -> pd.DataFrame | None:
    """A CSV the sweep holds (run ids as text), or None when it is not there yet."""
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype={"run_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not a readable CSV ({err}); re-create it with the command "
                          "that writes it") from None


def read_json_file(path: Path) -> Any:
    """A JSON file the sweep holds, or None when it is not there yet."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not readable JSON ({err}); re-create it with the command "
                          "that writes it") from None


def records_of(document: Any) -> list[dict]:
    """The rows a JSON document holds: a list of objects, or the first such list among its
    values, or an object of objects (name -> fields, the name as a ``name`` column)."""
    if isinstance(document, list):
        return [r for r in document if isinstance(r, dict)]
    if not isinstance(document, dict):
        return []
    for value in document.values():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return value
    objects = {k: v for k, v in document.items() if isinstance(v, dict)}
    if objects and len(objects) == len(document):
        return [{"name": k, **v} for k, v in objects.items()]
    for value in objects.values():
        if (rows := records_of(value)):
            return rows
    return []


def cut_note(rows: int, what: str = "the runs") -> str:
    """The note under a table cut to MAX_RUN_ROWS rows ("" when it is not)."""
    return (f"the first {MAX_RUN_ROWS:,} of {rows:,} rows; the source file has all of {what}"
            if rows > MAX_RUN_ROWS else "")

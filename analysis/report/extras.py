"""The report's optional sections, present when their files are: routing health (results.csv's
``routing_*`` columns, figures/routing.svg), the sweep design (design.json, figures/design.svg),
comparisons with other studies (compare/<other>/compare.json, compare.svg), and any figure no
other section shows. Their tables come from whatever columns or keys the files have, so a
producer may add fields without breaking the page."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from analysis.report.fit import FIT_FIGURES
from analysis.report.page import (
    MAX_RUN_ROWS,
    Section,
    cut_note,
    figure,
    frame_table,
    mapping_table,
    read_json_file,
    records_of,
    records_table,
    svg_figure,
)
from sweep.io import FIGURES_DIR, RESULTS_CSV

DESIGN_JSON = "design.json"
COMPARE_DIR = "compare"
ROUTING_PREFIX = "routing_"
ROUTING_UNKNOWN = "unknown"  # analysis/routing.py's status of a run with no routing data

def optional_sections(sweep_dir: Path, results: pd.DataFrame | None) -> list[Section]:
    found = [routing_section(sweep_dir, results), design_section(sweep_dir),
             *comparison_sections(sweep_dir), other_figures(sweep_dir)]
    return [s for s in found if s is not None]


def other_figures(sweep_dir: Path) -> Section | None:
    """SVGs of figures/ that no section above shows (a figure added by a newer stage)."""
    shown = {*FIT_FIGURES, "routing", "design"}
    extra = [p for p in sorted((sweep_dir / FIGURES_DIR).glob("*.svg")) if p.stem not in shown]
    figures = [svg_figure(p, p.stem.replace("_", " "), f"{FIGURES_DIR}/{p.name}",
                          f"fig-{p.stem}") for p in extra]
    figures = [f for f in figures if f is not None]  # None: not a whole SVG (said on stderr)
    return Section("other-figures", "Other figures", items=figures) if figures else None


def routing_section(sweep_dir: Path, results: pd.DataFrame | None) -> Section | None:
    """Present when some run has routing data: collect writes the routing_* columns for every
    run, ``unknown`` where nothing was measured (the simulated trainer, a dense model)."""
    status = None if results is None else results.get(f"{ROUTING_PREFIX}status")
    if status is None or status.fillna(ROUTING_UNKNOWN).eq(ROUTING_UNKNOWN).all():
        return None
    columns = [c for c in results.columns if c.startswith(ROUTING_PREFIX)]
    section = Section("routing", "Routing health")
    counts = status.fillna(ROUTING_UNKNOWN).value_counts()  # how many are not healthy
    section.notes.append("routing_status: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    keys = [c for c in ("run_id", "member", "budget") if c in results.columns]
    section.items.append(frame_table("routing-table", "Router statistics per run",
                                     results[keys + columns].head(MAX_RUN_ROWS),
                                     f"{RESULTS_CSV} {ROUTING_PREFIX}*", cut_note(len(results))))
    if (f := figure(sweep_dir, "routing", "Routing health")) is not None:
        section.items.append(f)
    return section


def design_section(sweep_dir: Path) -> Section | None:
    design = read_json_file(sweep_dir / DESIGN_JSON)
    if design is None:
        return None
    section = Section("design", "Sweep design")
    records = records_of(design)
    if records:
        section.items.append(records_table("design-table", "Candidate designs", records,
                                           DESIGN_JSON))
    scalars = {k: v for k, v in design.items() if not isinstance(v, (list, dict))} \
        if isinstance(design, dict) else {}  # a bare list of designs: only the table
    if scalars:
        section.items.append(mapping_table("design-settings", "Design settings", scalars,
                                           DESIGN_JSON))
    if (f := figure(sweep_dir, "design", "Design: precision vs cost")) is not None:
        section.items.append(f)
    return section


def comparison_sections(sweep_dir: Path) -> Iterable[Section]:
    for path in sorted((sweep_dir / COMPARE_DIR).glob("*/compare.json")):
        other, source = path.parent.name, f"{COMPARE_DIR}/{path.parent.name}"
        document = read_json_file(path) or {}
        if not isinstance(document, dict):  # a bare list of rows (or a scalar): one table
            document = {"rows": records_of(document)}
        section = Section(f"compare-{other}", f"Comparison with {other}")
        for key, value in document.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                section.items.append(records_table(f"compare-{other}-{key}", key, value,
                                                   f"{source}/compare.json {key}"))
        rest = {k: v for k, v in document.items()
                if not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))}
        if rest:
            section.items.append(mapping_table(f"compare-{other}-values", "Values", rest,
                                               f"{source}/compare.json"))
        if (f := svg_figure(path.parent / "compare.svg", f"{other} vs this study",
                            f"{source}/compare.svg", f"fig-compare-{other}")) is not None:
            section.items.append(f)
        yield section

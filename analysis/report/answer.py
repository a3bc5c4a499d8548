"""The report's first screen: the answer. What to train at each target budget (the picks), the
law that chose them with its interval and which approach it is, whether the trained picks
landed inside the law's prediction interval (the release), and the downstream accuracies
when an evaluation wrote them; the evidence (runs, fits, configuration) follows below it.

A release sweep (``flame release``'s ``<source>/release/``) gets the same first screen: its
picks and law are the source's, read through ``release.json``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.fit.prediction import APPROACHES, stored_prediction
from analysis.fit.release_check import (
    PREDICTION_CSV,
    ReleaseLink,
    check_table,
    find_release,
    read_link,
)
from analysis.fit.result import FitResult, read_fit
from analysis.report.page import (
    Section,
    cell,
    frame_table,
    read_csv_file,
    read_json_file,
    records_of,
    records_table,
)
from analysis.report.states import RunStates
from sweep.io import FIT_JSON, RESULTS_CSV, SELECTION_CSV

APPROACH_NAMES = {"approach2": "Approach 2 (isoFLOP parabolas, power laws in C)",
                  "approach3": "Approach 3 (parametric L(N, D))"}
PICK_COLUMNS = ("budget", "member", "member_n", "member_tokens", "member_iterations", "n_opt",
                "log10_n_ratio", "loss_opt", "extrapolation_decades", "warning")
DOWNSTREAM_JSON = "downstream.json"
ACC_PREFIX = "acc_"


def law_line(fit: FitResult) -> str:
    """The exponent of N_opt(C) the selection uses, with its interval and approach; the other
    approach's beside it."""
    settings = fit.settings or {}
    level = f"{float(settings.get('confidence', 0.95)):.0%}"
    used = fit.selection.get("approach") or ("approach3" if fit.approach3.a is not None
                                             else "approach2")
    parts = []
    for approach in (used, *(a for a in APPROACHES if a != used)):
        a, ci = exponent(fit, approach)
        if a is None:
            continue
        span = f" [{ci[0]:.3f}, {ci[1]:.3f}] ({level})" if ci else " (no interval)"
        label = APPROACH_NAMES[approach]
        parts.append(f"N_opt ∝ C^a, a = {a:.3f}{span}, {label}"
                     + (": the law the selection uses" if approach == used else ""))
    return "; ".join(parts) or "no law fitted"


def exponent(fit: FitResult, approach: str) -> tuple[float | None, list[float] | None]:
    """``a`` and its interval by one approach."""
    if approach == "approach3":
        return fit.approach3.a, fit.approach3.ci.get("a")
    return fit.approach2.a, fit.approach2.a_ci


def headline_exponent(fit: FitResult) -> str:
    """``N_opt ∝ C^0.516 [0.430, 0.655] (Approach 3)``: the selection's law, named."""
    used = fit.selection.get("approach") or ("approach3" if fit.approach3.a is not None
                                             else "approach2")
    a, ci = exponent(fit, used)
    if a is None:
        return ""
    span = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    return f"N_opt ∝ C^{a:.3f}{span} ({'Approach 3' if used == 'approach3' else 'Approach 2'})"


def release_headline(status: RunStates, link: ReleaseLink) -> str:
    """A release's headline: its runs, and whose picks they are."""
    return (f"{status.total} release runs: {status.summary()}; the picks of {link.source} "
            f"({link.approach or 'its law'})")


def answer_sections(sweep_dir: Path, fit: FitResult | None) -> list[Section]:
    """The answer, first: the picks and the law, the prediction check, downstream."""
    sweep_dir = Path(sweep_dir)
    release = find_release(sweep_dir)
    source = Path(read_link(release).source) if release == sweep_dir else sweep_dir
    if fit is None and source != sweep_dir and (source / FIT_JSON).is_file():
        fit = read_fit(source)
    sections = [picks_section(sweep_dir, source, fit, release),
                prediction_section(sweep_dir, release), downstream_section(sweep_dir, release)]
    return [s for s in sections if s is not None]


def picks_section(sweep_dir: Path, source: Path, fit: FitResult | None,
                  release: Path | None) -> Section | None:
    """What to train at each target budget, and the law that chose it."""
    if fit is None:
        return None
    section = Section("answer", "The answer: what to train at each target budget")
    section.notes.append(law_line(fit))
    selection = read_csv_file(source / SELECTION_CSV)
    if selection is None:
        section.notes.append(f"no {SELECTION_CSV}: {fit.selection.get('reason') or 'no law'}")
        return section
    shown = selection[[c for c in PICK_COLUMNS if c in selection.columns]]
    where = "" if release is None else f"; the release of these picks is in {release}"
    section.items.append(frame_table(
        "answer-picks", f"The family member nearest the law's optimum at each target budget"
        f" ({fit.selection.get('approach', '')}){where}", shown,
        _rel(source / SELECTION_CSV, sweep_dir)))
    section.notes += [f"warning: {w}" for w in fit.selection.get("warnings") or []]
    return section


def prediction_section(sweep_dir: Path, release: Path | None) -> Section | None:
    """Each release run's achieved loss against both approaches' prediction intervals."""
    if release is None:
        return None
    table = check_table(release)
    section = Section("prediction", "The prediction check: the released picks against the law")
    link = read_link(release)
    finished = int(table["achieved"].notna().sum())
    section.notes.append(f"{finished} of {len(table)} release runs finished ({release}). Each "
                         "prediction was registered in prediction.csv before the run trained, "
                         f"from the bootstrap of the fit that picked it ({link.source}/"
                         f"{FIT_JSON}): the law's spread over the resamples and the fit's own "
                         "run-to-run scatter.")
    rows = []
    for row in table.to_dict(orient="records"):
        out = {"budget": row["budget"], "member": row["member"], "run_id": row["run_id"],
               "how": row.get("how", ""), "achieved": row["achieved"]}
        for approach in APPROACHES:
            p = stored_prediction(row, approach)
            short = approach.replace("approach", "A")
            out[f"{short} predicted"] = p.loss
            out[f"{short} interval"] = [p.low, p.high] if p.low is not None else None
            out[f"{short} inside"] = _verdict(row.get(f"inside_{approach}"))
        out["best of neighbours"] = _verdict(row.get("best_of_neighbours"))
        out["neighbours"] = row.get("neighbours") or ""
        rows.append(out)
    section.items.append(frame_table(
        "prediction-table", "Predicted (both approaches, with the prediction interval) vs "
        "achieved final validation loss", pd.DataFrame(rows),
        f"{_rel(release / PREDICTION_CSV, sweep_dir)}, {_rel(release / RESULTS_CSV, sweep_dir)}"))
    inside = {a: table[f"inside_{a}"].dropna() for a in APPROACHES}
    for approach, values in inside.items():
        if len(values):
            section.notes.append(f"{APPROACH_NAMES[approach]}: {int(values.astype(bool).sum())} "
                                 f"of {len(values)} achieved losses inside the interval")
    if not (table["neighbours"].fillna("") != "").any():
        section.notes.append("neighbours: no other member was trained at a release budget, so "
                             "whether each pick beat its neighbours is not known; name them "
                             "with `flame release --member FLOPS:MEMBER`")
    return section


def _rel(path: Path, sweep_dir: Path) -> str:
    """``path`` as the report names its sources: relative to the sweep directory."""
    return os.path.relpath(path, sweep_dir)


def _verdict(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return "yes" if bool(value) else "NO"


def downstream_section(sweep_dir: Path, release: Path | None) -> Section | None:
    """Accuracies ``flame eval`` wrote: results.csv's ``acc_<task>`` columns (the sweep's and
    the release's) and ``downstream.json``; absent when there are none."""
    section = Section("downstream", "Downstream: accuracy against loss")
    for where in dict.fromkeys([Path(sweep_dir), *([release] if release else [])]):
        results = read_csv_file(where / RESULTS_CSV)
        accuracy = [c for c in (results.columns if results is not None else [])
                    if c.startswith(ACC_PREFIX)]
        if accuracy:
            keep = [c for c in ("run_id", "budget", "member", "final_val_loss")
                    if c in results.columns] + accuracy
            section.items.append(frame_table(
                f"downstream-acc-{where.name}", f"Accuracy by run ({where.name})",
                results[keep], _rel(where / RESULTS_CSV, sweep_dir)))
        document = read_json_file(where / DOWNSTREAM_JSON)
        if document is not None:
            rows = records_of(document)
            for row in rows:  # a sentence reads as a note, not as a table cell
                if row.get("reason"):
                    section.notes.append(f"{row.get('task', '')}: sigmoid {row['reason']}")
            rows = [{k: v for k, v in row.items() if k != "reason"} for row in rows]
            summary = {k: v for k, v in document.items() if not isinstance(v, (list, dict))} \
                if isinstance(document, dict) else {}
            if summary:
                section.notes.append("; ".join(f"{k}: {cell(v).text}" for k, v in
                                               summary.items()))
            if rows:
                section.items.append(records_table(
                    f"downstream-json-{where.name}", f"{DOWNSTREAM_JSON} ({where.name})", rows,
                    _rel(where / DOWNSTREAM_JSON, sweep_dir)))
    return section if section.items or section.notes else None

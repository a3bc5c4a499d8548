"""The report's sections about the fit: isoFLOP curves, both approaches with their intervals
(fit.json), the figures plots.py wrote, the extrapolation check and the selection."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.fit.result import FitResult
from analysis.fit.summary import branch_line, noise_lines
from analysis.report.page import Section, cell, figure, frame_table, read_csv_file
from sweep.io import FIT_JSON, SELECTION_CSV

# The fit's own figures, in the order the page shows them (plots.py writes them).
FIT_FIGURES = {"isoflop": "isoFLOP curves", "scaling_laws": "N_opt and D_opt vs compute",
               "loss_frontier": "Loss frontier", "residuals": "Approach 3 residuals"}


def fit_sections(sweep_dir: Path, fit: FitResult | None) -> list[Section]:
    if fit is None:
        return [Section("fit", "Fit", [f"no {FIT_JSON} yet: `flame fit` (or the end of "
                                       "`flame run`) writes it; this page shows the study so "
                                       "far"])]
    return [fit_overview(sweep_dir, fit), approach2_section(sweep_dir, fit),
            approach3_section(sweep_dir, fit), extrapolation_section(fit)]


def fit_overview(sweep_dir: Path, fit: FitResult) -> Section:
    section = Section("fit", "Fit: isoFLOP curves")
    section.notes.append(f"{fit.n_used} runs fitted, {fit.n_excluded} excluded "
                         f"({_counts(fit.excluded)}); N = {fit.input.n_column}  ({FIT_JSON})")
    section.notes += [line for line in [branch_line(fit)] if line]
    section.notes += [f"warning [{w.code}]: {w.message}" for w in fit.warnings]
    section.items += [f for f in (figure(sweep_dir, "isoflop", FIT_FIGURES["isoflop"]),) if f]
    return section


def _counts(counts: dict | None) -> str:
    return ", ".join(f"{k}: {v}" for k, v in (counts or {}).items()) or "none"


def approach2_section(sweep_dir: Path, fit: FitResult) -> Section:
    a2 = fit.approach2
    section = Section("approach2", "Approach 2: isoFLOP minima and N_opt / D_opt power laws")
    budgets = pd.DataFrame([vars(b) for b in a2.budgets])
    if not budgets.empty:
        section.items.append(frame_table(
            "approach2-budgets", "Each budget's parabola: used, or the reason it is not",
            budgets, f"{FIT_JSON} approach2.budgets"))
    if a2.a is None:
        section.notes.append(f"power laws: not fitted ({a2.reason})")
    else:
        loss_law = a2.loss_law or {}
        laws = pd.DataFrame([
            {"law": "N_opt = k C^a", "exponent": a2.a, "interval": a2.a_ci,
             "k": a2.k, "k interval": a2.k_ci},
            {"law": "D_opt = k_d C^b", "exponent": a2.b, "interval": a2.b_ci,
             "k": a2.k_d, "k interval": None},
            {"law": "L_opt = k C^e", "exponent": loss_law.get("exponent"),
             "interval": None, "k": loss_law.get("k"), "k interval": None}])
        section.items.append(frame_table(
            "approach2-laws", f"Power laws ({a2.bootstrap} {a2.bootstrap_kind or ''}"
            " bootstrap resamples for the intervals)", laws, f"{FIT_JSON} approach2"))
    for key in ("note", "interval_reason"):
        if getattr(a2, key):
            section.notes.append(f"{key.replace('_', ' ')}: {getattr(a2, key)}")
    for name in ("scaling_laws", "loss_frontier"):
        if (f := figure(sweep_dir, name, FIT_FIGURES[name])) is not None:
            section.items.append(f)
    return section


def approach3_section(sweep_dir: Path, fit: FitResult) -> Section:
    a3 = fit.approach3
    section = Section("approach3", "Approach 3: L(N, D) = E + A/N^alpha + B/D^beta")
    if not a3.fitted:
        section.notes.append(f"not fitted: {a3.reason}")
        return section
    ci, se = a3.ci, a3.se
    params = pd.DataFrame([{"parameter": name, "estimate": getattr(a3, name),
                            "interval low": (ci.get(name) or [None, None])[0],
                            "interval high": (ci.get(name) or [None, None])[1],
                            "std. error": se.get(name)}
                           for name in ("E", "A", "B", "alpha", "beta", "a", "b")])
    section.items.append(frame_table(
        "approach3-params", f"Parameters ({a3.n_points} points, summed Huber objective "
        f"{cell(a3.objective).text}; {a3.bootstrap} bootstrap resamples: "
        f"{a3.bootstrap_method or 'none'})", params, f"{FIT_JSON} approach3"))
    if a3.interval_reason:
        section.notes.append(f"no interval: {a3.interval_reason}")
    section.notes.extend(noise_lines(fit))  # variance components (seed, shape misfit)
    if (f := figure(sweep_dir, "residuals", FIT_FIGURES["residuals"])) is not None:
        section.items.append(f)
    return section


def extrapolation_section(fit: FitResult) -> Section:
    ex = fit.extrapolation
    section = Section("extrapolation", "Extrapolation check: refit without the largest budget")
    if "reason" in ex:
        section.notes.append(f"not applicable: {ex['reason']}")
        return section
    obs = ex.get("observed") or {}
    section.notes.append(f"held out {cell(ex.get('held_out_budget')).text} FLOPs "
                         f"({ex.get('n_held_out_points')} runs; fitted on "
                         f"{ex.get('n_train_points')}); observed from the {obs.get('source')}")
    rows = []
    for name in ("approach2", "approach3"):
        e = ex.get(name) or {}
        rows.append({"approach": name, "predicted N_opt": e.get("n_opt_pred"),
                     "observed N_opt": obs.get("n_opt"),
                     "log10 error": e.get("n_opt_log10_error"),
                     "predicted loss": e.get("loss_opt_pred"),
                     "observed loss": obs.get("loss_opt"),
                     "relative loss error": e.get("loss_opt_rel_error"),
                     "not applicable": e.get("reason", "")})
    section.items.append(frame_table("extrapolation-table", "Predicted vs observed at the "
                                     "held-out budget", pd.DataFrame(rows),
                                     f"{FIT_JSON} extrapolation"))
    return section


def selection_section(sweep_dir: Path, fit: FitResult | None) -> Section | None:
    if fit is None:
        return None
    sel = fit.selection
    section = Section("selection", "Selection: configurations for the target budgets")
    table = read_csv_file(sweep_dir / SELECTION_CSV)
    if table is None:
        section.notes.append(f"no {SELECTION_CSV}: {sel.get('reason') or 'no fitted law'}")
        return section
    section.notes.append(f"law: {sel.get('approach')}" +
                         (f"; members: not applicable ({sel['reason']})"
                          if sel.get("reason") else ""))
    section.notes += [f"warning: {w}" for w in sel.get("warnings") or []]
    section.items.append(frame_table("selection-table", "Every column of selection.csv",
                                     table, SELECTION_CSV))
    return section

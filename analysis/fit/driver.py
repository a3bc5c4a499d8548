"""``flame fit`` as a function: points -> both approaches, extrapolation, selection, figures.

Writes ``fit.json`` (the contract other tools read: ``analysis.fit.result.FitResult``),
``selection.csv`` and ``figures/`` into the sweep directory, and returns the ``FitResult``.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from analysis.collect.routing import routing_figure
from analysis.config import read_config
from analysis.csvsafe import write_csv
from analysis.fit.degenerate import (
    FitWarning,
    approach2_interval_reason,
    approach3_interval_reason,
    duplicate_warnings,
    e_at_zero_warnings,
    extrapolation_decades,
    far_pick_warnings,
    off_centre_warnings,
    parametric_unidentified,
    unbracketed_warnings,
    zero_width,
)
from analysis.fit.extrapolation import extrapolation_check
from analysis.fit.isoflop import IsoflopFit, budget_groups, interval
from analysis.fit.parametric import (
    PARAM_NAMES,
    ParametricFit,
    bootstrap_parametric,
    fit_parametric,
)
from analysis.fit.points import branch_summary, load_bare_csv, load_sweep_results, used_points
from analysis.fit.porian import fit_approach2
from analysis.fit.release import beside_released
from analysis.fit.result import (
    Approach2Result,
    Approach3Result,
    BudgetEntry,
    FitInput,
    FitResult,
    write_fit,
)
from analysis.fit.selection import family_from_config, select
from analysis.fit.structure import (
    NoiseStructure,
    bootstrap_parametric_structured,
    law_structure,
    shape_index,
    t_widened,
)
from analysis.settings import FitSettings
from sweep.errors import ConfigError
from sweep.io import RESULTS_CSV, SELECTION_CSV

MIN_PARAMETRIC_POINTS = 6  # five parameters need more points than that to mean anything


def fit_sweep(sweep_dir: Path, cfg: DictConfig, results_csv: Path | None = None,
              csv_family: bool = True) -> FitResult:
    """Fit ``results_csv`` (default ``<sweep_dir>/results.csv``); write fit.json, figures and
    selection.csv into ``sweep_dir``; return fit.json's ``FitResult``."""
    sweep_dir = Path(sweep_dir)
    settings = FitSettings.from_mapping(_plain(cfg.get("fit")) if cfg is not None else None)
    bare = results_csv is not None
    path = Path(results_csv) if bare else sweep_dir / RESULTS_CSV
    points = load_bare_csv(path, settings) if bare else load_sweep_results(path, settings)
    used = used_points(points)
    if used.empty:
        raise ConfigError(f"results: none of the {len(points)} rows of {path} is usable "
                          f"(fit.include_flags={list(settings.include_flags)}); see the flag "
                          "and reason columns, or include more flags")
    # A plain CSV has no config.yaml: its family (for selection) is the composed config's.
    config = (_plain(cfg) if cfg is not None else None) if bare else read_config(sweep_dir)
    if bare and config and not csv_family:  # the default experiment's family is not the CSV's
        config = {k: v for k, v in config.items() if k != "family"}
    # The law first: its residuals give the noise structure both bootstraps resample.
    param, thetas, param_reason, param_interval_reason, noise = \
        parametric_with_bootstrap(used, settings)
    structured = noise if settings.bootstrap_structure == "shapes" else None
    iso = fit_approach2(used, settings, structured)  # the parabola, or Porian et al.'s
    warnings = duplicate_warnings(points)
    result = FitResult(
        input=FitInput(results=str(path), kind="csv" if bare else "sweep",
                       n_column="n" if bare else settings.n_column),
        approach2=approach2_result(iso, settings, warnings),
        approach3=approach3_result(param, thetas, settings, param_reason, warnings,
                                   param_interval_reason, structured),
        extrapolation=extrapolation_check(used, settings),
        n_used=int(len(used)), n_excluded=int(len(points) - len(used)),
        excluded=_exclusions(points), branches=branch_summary(points),
        settings={k: (list(v) if isinstance(v, tuple) else v)
                  for k, v in settings.__dict__.items()},
        variance_components=noise.components.as_json() if noise is not None else None)
    if param is not None:
        warnings.extend(e_at_zero_warnings(param.E, float(used["loss"].min())))
    law = result.approach3 if param is not None else result.approach2
    selection = _selection(iso, param, settings, config, bare, used["budget"].to_numpy(float),
                           law.interval_reason, warnings)
    result.selection = selection["summary"]
    result.warnings = list(warnings)
    if settings.figures:
        from analysis.fit.plots import write_figures  # matplotlib only when figures are made
        result.figures = [str(p.relative_to(sweep_dir)) for p in
                          write_figures(sweep_dir, used, iso, param, thetas, selection["table"],
                                        settings) + routing_figure(sweep_dir, points, settings)]
    result = result.normalised()
    write_fit(sweep_dir, result)
    if selection["table"] is not None:
        write_csv(sweep_dir / SELECTION_CSV, selection["table"])
    return result


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def parametric_with_bootstrap(used: pd.DataFrame, settings: FitSettings
                              ) -> tuple[ParametricFit | None, np.ndarray | None, str, str,
                           NoiseStructure | None]:
    """The law, its bootstrap thetas, why it was not fitted, why it has no interval, and
    the noise structure its residuals show (None: no law, or no shape with two runs)."""
    if len(used) < MIN_PARAMETRIC_POINTS:
        return None, None, f"only {len(used)} points; the law has 5 parameters", "", None
    n, d, loss = (used[c].to_numpy(float) for c in ("n", "tokens", "loss"))
    budgets, note = budget_groups(used["budget"].to_numpy(float), settings.bucket_decades)
    unidentified = parametric_unidentified(loss, np.unique(budgets).size,
                                           settings.flat_loss_rel_range)
    if unidentified:
        return None, None, unidentified, "", None
    fit = fit_parametric(n, d, loss, settings.huber_delta)
    noise = law_structure(fit, n, d, loss, shape_index(used), budgets)
    no_interval = approach3_interval_reason(np.unique(budgets).size,
                                            settings.min_interval_budgets)
    if settings.bootstrap == 0 or no_interval:
        return fit, None, "", no_interval, noise
    if noise is not None and settings.bootstrap_structure == "shapes":
        thetas = bootstrap_parametric_structured(fit, n, d, noise, settings.bootstrap,
                                                 settings.seed, settings.huber_delta,
                                                 one_step_min_points=settings
                                                 .one_step_min_points)
        return fit, thetas, "", "", noise
    # Discrete budgets: resample runs within each budget (the design stays an isoFLOP grid);
    # continuous FLOPs (e.g. Chinchilla's points): resample all points, as Besiroglu et al.
    groups = None if note else np.unique(budgets, return_inverse=True)[1]
    thetas = bootstrap_parametric(fit, n, d, loss, groups, settings.bootstrap, settings.seed,
                                  settings.huber_delta,
                                  one_step_min_points=settings.one_step_min_points)
    return fit, thetas, "", "", noise


def approach2_result(iso: IsoflopFit, settings: FitSettings,
                     warnings: list[FitWarning] | None = None) -> Approach2Result:
    """fit.json's ``approach2`` entry; intervals that would be falsely precise are withheld,
    with ``interval_reason`` and a warning appended to ``warnings``."""
    s = iso.samples
    out = Approach2Result(
        budgets=[BudgetEntry(**b.as_dict()) for b in iso.budgets], reason=iso.reason,
        note=iso.note, bootstrap=settings.bootstrap, estimator=settings.approach2_estimator,
        bootstrap_kind=iso.bootstrap_kind,
        bootstrap_usable_fraction=float(s["ok_fraction"][0]) if s else None)
    flat = sum(b.reason.startswith("flat") for b in iso.budgets)
    if flat and warnings is not None:
        warnings.append(FitWarning("flat_losses", f"Approach 2: {flat} of {len(iso.budgets)} "
                                   "budget(s) have flat losses; their N_opt is not identified "
                                   "and they are not used"))
    if warnings is not None:
        warnings.extend(unbracketed_warnings(iso.budgets))
    if warnings is not None and settings.approach2_estimator == "parabola":
        warnings.extend(off_centre_warnings(iso.budgets))
    if iso.n_law is None:
        return out
    out.a, out.k, out.b, out.k_d = iso.n_law.exponent, iso.n_law.k, iso.d_law.exponent, \
        iso.d_law.k
    out.loss_law = {"k": iso.loss_law.k, "exponent": iso.loss_law.exponent}
    code, reason = "few_budgets", approach2_interval_reason(sum(b.used for b in iso.budgets),
                                                            settings.min_interval_budgets)
    if not reason and iso.interval_reason:
        code, reason = "biased", iso.interval_reason
    if not s and not reason:
        return out
    k_ci = interval(s.get("ln_kn"), settings) if s else None
    cis = {"a_ci": interval(s.get("exp_n"), settings) if s else None,
           "b_ci": interval(s.get("exp_d"), settings) if s else None,
           "k_ci": [math.exp(v) for v in k_ci] if k_ci else None}
    if not reason and any(zero_width(ci) for ci in cis.values()):
        code, reason = "zero_width", "the bootstrap resamples did not vary (zero-width interval)"
    if reason:
        if warnings is not None:
            warnings.append(FitWarning(code, f"Approach 2: no interval reported: {reason}"))
        out.interval_reason = reason
        return out
    out.a_ci, out.b_ci, out.k_ci = cis["a_ci"], cis["b_ci"], cis["k_ci"]
    return out


def parameter_samples(thetas: np.ndarray) -> dict[str, np.ndarray]:
    """Bootstrap thetas as named quantities: E, A, B, alpha, beta, a, b."""
    a_, b_, e_, alpha, beta = thetas.T
    return {"E": np.exp(e_), "A": np.exp(a_), "B": np.exp(b_), "alpha": alpha, "beta": beta,
            "a": beta / (alpha + beta), "b": alpha / (alpha + beta)}


def exponent_interval(samples: np.ndarray, estimate: float, noise: NoiseStructure | None,
                      settings: FitSettings) -> list[float] | None:
    """Approach 3's interval of a (or b = 1 - a) from bootstrap ``samples``: the percentile
    interval, t-widened by the degrees of freedom of a's variance where the structured
    bootstrap drew the samples (``noise``; ``analysis.fit.structure.t_widened``)."""
    ci = interval(samples, settings)
    return t_widened(ci, estimate, noise.a_df, settings.confidence) if noise else ci


def _widening(noise: NoiseStructure) -> str:
    """fit.json's note on the t-widening of a's interval ("" where there is none)."""
    if noise.a_df is None:
        return ""
    return f"; a, b: percentile interval t-widened ({noise.a_df:.3g} df)"


def approach3_result(fit: ParametricFit | None, thetas: np.ndarray | None,
                     settings: FitSettings, reason: str,
                     warnings: list[FitWarning] | None = None, interval_reason: str = "",
                     noise: NoiseStructure | None = None) -> Approach3Result:
    """fit.json's ``approach3`` entry: estimates, objective, percentile CIs and std errors.

    ``reason``: why there is no fit; ``interval_reason``: why there are no intervals. Both,
    and zero-width intervals (withheld), add a warning to ``warnings``."""
    if fit is None:
        if warnings is not None and reason:
            code = "flat_losses" if reason.startswith("flat") else \
                "few_budgets" if "budget" in reason else "few_points"
            warnings.append(FitWarning(code, f"Approach 3: not fitted: {reason}"))
        return Approach3Result(reason=reason)
    if interval_reason and warnings is not None:
        warnings.append(FitWarning("few_budgets", f"Approach 3: {interval_reason}"))
    out = Approach3Result(**fit.as_dict(), interval_reason=interval_reason,
                          bootstrap=settings.bootstrap,
                          bootstrap_method="" if thetas is None else
                          f"{noise.describe()}, refit per resample{_widening(noise)}"
                          if noise is not None else
                          "one Newton step per resample" if fit.n_points >=
                          settings.one_step_min_points else "refit per resample",
                          huber_delta=settings.huber_delta,
                          theta=dict(zip(PARAM_NAMES, fit.theta)))
    if thetas is not None:
        samples = parameter_samples(thetas)
        for name, values in samples.items():
            out.ci[name] = exponent_interval(values, getattr(fit, name), noise, settings) \
                if name in ("a", "b") else interval(values, settings)
            out.se[name] = float(np.nanstd(values, ddof=1))
        still = sorted(k for k, ci in out.ci.items() if zero_width(ci))
        if still:
            out.ci = {k: (None if k in still else v) for k, v in out.ci.items()}
            if warnings is not None:
                warnings.append(FitWarning("zero_width", f"Approach 3: no interval reported "
                                           f"for {still}: the bootstrap resamples did not "
                                           "vary"))
    return out


def _selection(iso: IsoflopFit, param: ParametricFit | None, settings: FitSettings,
               config: dict | None, bare: bool, fitted_budgets: np.ndarray,
               law_interval_reason: str, warnings: list[FitWarning]) -> dict:
    """selection.csv's table and fit.json's ``selection``; its findings join ``warnings``."""
    if param is not None:
        predict, approach = (lambda c: param.optimum(c)), "approach3"
    elif iso.n_law is not None:
        predict = lambda c: (iso.n_law(c), iso.d_law(c), iso.loss_law(c))  # noqa: E731
        approach = "approach2"
    else:
        return {"table": None, "summary": {"applicable": False, "reason": "no fitted law",
                                           "warnings": []}}
    members = family_from_config(config)
    table = select(settings.target_budgets, predict, approach, members, config,
                   settings.n_column, planned_only=not bare)
    if iso.n_law is not None:
        table.insert(3, "n_opt_approach2", iso.n_law(table["budget"].to_numpy()))
    found = _flag_extrapolation(table, fitted_budgets, settings.max_extrapolation_decades)
    found += far_pick_warnings(table, settings.max_pick_distance_decades)
    if law_interval_reason:
        found.append(FitWarning("few_budgets", f"the {approach} law it uses has no interval "
                                "(too few budgets): its uncertainty is unknown"))
    warnings.extend(FitWarning(w.code, f"selection: {w.message}") for w in found)
    notes = [w.message for w in found]
    table = beside_released(table, settings.n_column)
    reason = "" if members else ("no family named: give the study's experiment=... or "
                                 "family=... to select its members" if bare
                                 else "the sweep has no config.yaml with a family")
    family = (config or {}).get("family") or {}
    return {"table": table, "summary": {"applicable": bool(members), "reason": reason,
                                        "approach": approach, "warnings": notes,
                                        "family": family.get("name", "") if members else "",
                                        "candidates": "planned" if not bare else "all members",
                                        "rows": table.to_dict(orient="records")}}


def _flag_extrapolation(table: pd.DataFrame, fitted: np.ndarray,
                        allowed: float) -> list[FitWarning]:
    """Add ``extrapolation_decades`` and ``warning`` columns; the warning, if any."""
    decades = extrapolation_decades(table["budget"].to_numpy(float), fitted)
    far = decades > allowed
    table["extrapolation_decades"] = decades
    table["warning"] = np.where(far, f"extrapolation beyond {allowed} "
                                     "decades of the fitted budgets", "")
    if not far.any():
        return []
    return [FitWarning("extrapolation", f"{int(far.sum())} of {len(table)} target budgets lie "
                       f"{decades[far].min():.1f}-{decades[far].max():.1f} decades of compute "
                       f"outside the fitted budgets ({fitted.min():.3g}-{fitted.max():.3g} "
                       f"FLOPs), beyond fit.max_extrapolation_decades={allowed}: an "
                       "extrapolation of the law's form, not a measurement (selection.csv's "
                       "warning column)")]


def _exclusions(points: pd.DataFrame) -> dict[str, int]:
    reasons = points.loc[~points["used"], "excluded_reason"].str.split(":").str[0]
    return {str(k): int(v) for k, v in reasons.value_counts().items()}


def summary_text(fit: FitResult, width: int = 110) -> str:
    """The printed summary of a fit: rich tables rendered to text."""
    from rich.console import Console

    from analysis.fit.summary import renderables
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    for item in renderables(fit):
        console.print(item)
    return console.export_text()

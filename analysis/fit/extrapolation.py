"""Extrapolation check: refit without the largest budget and predict its optimum.

The held-out budget is the largest one that can be judged: its isoFLOP parabola is usable,
else (no usable parabola anywhere) it has ``min_points`` runs; larger budgets, e.g. the
stray single points of digitised data, are left out of the refit too. The "truth" there is
its parabola minimum when usable, else its lowest-loss run. Errors: ``log10(N_pred / N_obs)``
and ``(L_pred - L_obs) / L_obs``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.fit.degenerate import parametric_unidentified
from analysis.fit.isoflop import budget_groups, fit_isoflop
from analysis.fit.parametric import fit_parametric
from analysis.settings import FitSettings


def extrapolation_check(points: pd.DataFrame, settings: FitSettings) -> dict:
    """Both approaches refitted on all budgets but the largest, compared at the largest."""
    budgets, _ = budget_groups(points["budget"].to_numpy(float), settings.bucket_decades)
    no_boot = FitSettings(**{**settings.__dict__, "bootstrap": 0})
    full = fit_isoflop(points, no_boot)
    # Hold out the largest budget that can be judged: its parabola is usable, else it has
    # enough runs; larger budgets (single stray points) go too, so this is an extrapolation.
    judged = [b.budget for b in full.budgets if b.used] or \
        [b.budget for b in full.budgets if b.n_points >= settings.min_points]
    if len(np.unique(budgets)) < 3 or not judged:
        return {"reason": f"needs at least 3 budgets with >= {settings.min_points} runs"}
    held = float(max(judged))
    held_mask = np.isclose(budgets, held, rtol=1e-9)
    train = points[budgets < held * (1 - 1e-9)].reset_index(drop=True)
    if np.unique(budgets[budgets < held * (1 - 1e-9)]).size < 2:
        return {"reason": "fewer than 2 budgets below the largest usable one"}
    truth = _observed(full, points, budgets, held)
    out = {"held_out_budget": held, "n_train_points": int(len(train)),
           "n_held_out_points": int(held_mask.sum()), "observed": truth}
    iso = fit_isoflop(train, no_boot)
    if iso.n_law is None:
        out["approach2"] = {"reason": iso.reason}
    else:
        out["approach2"] = _errors(float(iso.n_law(held)), float(iso.loss_law(held)), truth)
    train_budgets, _ = budget_groups(train["budget"].to_numpy(float), settings.bucket_decades)
    unidentified = parametric_unidentified(train["loss"].to_numpy(float),
                                           np.unique(train_budgets).size,
                                           settings.flat_loss_rel_range)
    if unidentified:
        out["approach3"] = {"reason": unidentified}
    elif len(train) >= 6:
        fit = fit_parametric(train["n"], train["tokens"], train["loss"], settings.huber_delta)
        n_opt, _, l_opt = fit.optimum(held)
        out["approach3"] = _errors(float(n_opt[0]), float(l_opt[0]), truth)
    else:
        out["approach3"] = {"reason": f"only {len(train)} points without the largest budget"}
    return out


def _observed(iso, points: pd.DataFrame, budgets: np.ndarray, held: float) -> dict:
    for b in iso.budgets:
        if math.isclose(b.budget, held, rel_tol=1e-9) and b.used:
            return {"n_opt": b.n_opt, "loss_opt": b.loss_opt, "source": "isoFLOP parabola"}
    at = points[np.isclose(budgets, held, rtol=1e-9)]
    best = at.loc[at["loss"].idxmin()]
    return {"n_opt": float(best["n"]), "loss_opt": float(best["loss"]),
            "source": "lowest-loss run (the budget's parabola was rejected)"}


def _errors(n_pred: float, loss_pred: float, truth: dict) -> dict:
    return {"n_opt_pred": n_pred, "loss_opt_pred": loss_pred,
            "n_opt_log10_error": math.log10(n_pred / truth["n_opt"]),
            "loss_opt_rel_error": (loss_pred - truth["loss_opt"]) / truth["loss_opt"]}

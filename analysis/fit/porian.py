"""Approach 2 as Porian et al. (2024) estimate it: interpolated minima, seed-noise bootstrap,
weighted power laws (``fit.approach2_estimator=porian``).

Porian, Wortsman, Jitsev, Schmidt, Carmon (2024), "Resolving Discrepancies in Compute-Optimal
Scaling of Language Models" (NeurIPS 2024), section 3 and appendix; their released analysis is
formll/resolving-scaling-law-discrepancies (``analysis.py``: ``interp_flop``). Per budget:

1. the runs (one per size; the lowest loss where a size repeats) are interpolated in
   (ln N, ln loss) by an Akima spline (``scipy.interpolate.Akima1DInterpolator``), evaluated
   on ``INTERP_PER_GAP`` x (sizes - 1) log-spaced sizes between the smallest and largest;
   N_opt is the grid's minimum, and the budget is rejected when that sits at either end;
2. bootstrap over the loss noise: each resample adds N(0, sigma^2) to every loss
   (``fit.porian_seed_noise``: Porian et al. use 0.002 on RefinedWeb and 0.01 on
   OpenWebText2; default: the pooled residual std of the budget-wise parabolas) and repeats 1;
   resamples whose minimum is at an end are dropped, and a budget where more than half are
   dropped is rejected. The budget's N_opt and loss are the medians of the resamples, and
   sigma(ln N_opt) = max(std of the resamples, ``MIN_STD_FACTOR`` x mean spacing of ln N)
   x resamples / kept;
3. ``N_opt = k.C^a`` by least squares on ln N_opt vs ln C weighted by 1 / sigma^2 (the same
   for D_opt, and for the loss frontier with the std of ln L_opt); the interval of ``a`` is
   the percentile interval of the same weighted fit on each resample's minima.

No window, no parabola: the interpolation is exact at every run, so where the sizes are not
centred on the optimum it is not pulled toward the middle as a parabola's vertex is. What it
needs instead is sizes dense enough around the minimum (an interpolated minimum cannot lie
between sampled points by more than the spline's curvature allows).

``fit_approach2`` is the one entry point: ``fit.approach2_estimator`` picks the parabola
(``analysis.fit.isoflop.fit_isoflop``, with a noise structure
``analysis.fit.isoflop_pivot.fit_isoflop_structured``) or this estimator.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.interpolate import Akima1DInterpolator

from analysis.fit.isoflop import (
    BudgetFit,
    IsoflopFit,
    PowerLaw,
    budget_groups,
    pooled_residual_std,
    token_line,
)
from analysis.fit.isoflop_pivot import fit_isoflop_structured
from analysis.settings import FitSettings

INTERP_PER_GAP = 25       # interpolation points per gap between sampled sizes (theirs: 25)
MIN_STD_FACTOR = 0.33     # floor of sigma(ln N_opt), in sampled-size spacings (theirs: 0.33)
MIN_KEPT_FRACTION = 0.5   # a budget needs at least this fraction of resamples bracketed
DEFAULT_RESAMPLES = 200   # resamples when fit.bootstrap = 0 (the weights need them)


def fit_approach2(points: pd.DataFrame, settings: FitSettings, noise=None) -> IsoflopFit:
    """Approach 2 with the estimator ``fit.approach2_estimator`` names; ``noise`` (a
    ``NoiseStructure``) structures the parabola's residual bootstrap (Porian et al.'s
    estimator draws its own seed noise and ignores it)."""
    if settings.approach2_estimator == "porian":
        return fit_porian(points, settings)
    return fit_isoflop_structured(points, settings, noise)


def fit_porian(points: pd.DataFrame, settings: FitSettings) -> IsoflopFit:
    """Porian et al.'s Approach 2 on ``points`` (budget, n, tokens, loss)."""
    budgets, note = budget_groups(points["budget"].to_numpy(float), settings.bucket_decades)
    sigma = settings.porian_seed_noise
    if sigma is None:
        sigma = pooled_residual_std(points, settings)
    resamples = settings.bootstrap or DEFAULT_RESAMPLES
    rng = np.random.default_rng(settings.seed)
    fits = [_budget(points[budgets == b], float(b), sigma, resamples, rng)
            for b in np.unique(budgets)]
    used = [f for f in fits if f["fit"].used]
    budget_fits = tuple(f["fit"] for f in fits)
    if len(used) < 2:
        return IsoflopFit(budget_fits, None, None, None, f"only {len(used)} usable budget(s); a "
                          "power law needs at least 2", note)
    laws, samples = _power_laws(used, resamples)
    if not settings.bootstrap:
        samples = {}
    kind = f"seed noise (sigma {sigma:.3g})" if samples else ""
    return IsoflopFit(budget_fits, laws["n"], laws["d"], laws["l"], "",
                      "; ".join(x for x in (note, f"Porian et al. interpolation, seed-noise "
                                            f"sigma {sigma:.3g}") if x), samples, kind)


def _budget(group: pd.DataFrame, budget: float, sigma: float, resamples: int,
            rng: np.random.Generator) -> dict:
    """One budget: interpolated minimum, its resamples and sigma(ln N_opt), sigma(ln L)."""
    best = group.loc[group.groupby("n")["loss"].idxmin()].sort_values("n")
    x, y = np.log(best["n"].to_numpy(float)), best["loss"].to_numpy(float)
    log_d = np.log(best["tokens"].to_numpy(float))
    d0, d1 = token_line(x, log_d)  # x: distinct sizes, ascending
    rejected = dict(budget=budget, n_points=int(len(group)), used=False, coef=None,
                    center=float(x.mean()) if x.size else 0.0, window=None, n_opt=None,
                    d_opt=None, loss_opt=None)
    if x.size < 3:
        return {"fit": BudgetFit(reason="fewer than 3 distinct sizes", **rejected)}
    grid = np.linspace(x[0], x[-1], INTERP_PER_GAP * (x.size - 1))
    noisy = y[None] + sigma * rng.standard_normal((resamples, y.size))
    curves = np.exp(Akima1DInterpolator(x, np.log(np.vstack([y, noisy])), axis=1)(grid))
    at = curves.argmin(axis=1)
    inside = (at > 0) & (at < grid.size - 1)
    if not inside[0]:
        edge = "smallest" if at[0] == 0 else "largest"
        return {"fit": BudgetFit(reason=f"not bracketed: the interpolated minimum is at the "
                                 f"{edge} size", **rejected)}
    kept = inside[1:]
    if kept.mean() < MIN_KEPT_FRACTION:
        return {"fit": BudgetFit(reason=f"only {kept.mean():.0%} of the seed-noise resamples "
                                 "have a bracketed minimum", **rejected)}
    x_star = np.where(kept, grid[at[1:]], np.nan)
    l_star = np.where(kept, curves[1:][np.arange(resamples), at[1:]], np.nan)
    scale = resamples / kept.sum()
    spacing = (x[-1] - x[0]) / (x.size - 1)
    sd_x = max(np.nanstd(x_star), MIN_STD_FACTOR * spacing) * scale
    sd_l = max(np.nanstd(np.log(l_star)), 1e-6) * scale
    x_med, l_med = float(np.nanmedian(x_star)), float(np.nanmedian(l_star))
    fit = BudgetFit(budget=budget, n_points=int(len(group)), used=True, reason="", coef=None,
                    center=float(x.mean()), window=(float(np.exp(x[0])), float(np.exp(x[-1]))),
                    n_opt=math.exp(x_med), d_opt=math.exp(d0 + d1 * x_med), loss_opt=l_med)
    return {"fit": fit, "x_star": x_star, "l_star": l_star, "sd_x": sd_x, "sd_l": sd_l,
            "d0": d0, "d1": d1}


def _power_laws(used: list[dict], resamples: int) -> tuple[dict, dict]:
    """Weighted power laws of the medians, and of every resample (bootstrap samples)."""
    log_c = np.log([u["fit"].budget for u in used])
    w_x = np.array([1 / u["sd_x"] ** 2 for u in used])
    w_l = np.array([1 / u["sd_l"] ** 2 for u in used])
    x_med = np.log([u["fit"].n_opt for u in used])
    d_med = np.array([u["d0"] + u["d1"] * x for u, x in zip(used, x_med)])
    l_med = np.log([u["fit"].loss_opt for u in used])
    laws = {}
    for name, y, w in (("n", x_med, w_x), ("d", d_med, w_x), ("l", l_med, w_l)):
        slope, intercept = np.polyfit(log_c, y, 1, w=np.sqrt(w))
        laws[name] = PowerLaw(math.exp(intercept), float(slope))
    x_s = np.stack([u["x_star"] for u in used], axis=1)            # (resamples, budgets)
    d_s = np.stack([u["d0"] + u["d1"] * u["x_star"] for u in used], axis=1)
    l_s = np.log(np.stack([u["l_star"] for u in used], axis=1))
    samples = {"ok_fraction": np.array([np.isfinite(x_s).all(axis=1).mean()])}
    for name, y, w in (("n", x_s, w_x), ("d", d_s, w_x), ("l", l_s, w_l)):
        samples[f"ln_k{name}"], samples[f"exp_{name}"] = _weighted_lines(log_c, y, w)
    return laws, samples


def _weighted_lines(log_c: np.ndarray, y: np.ndarray, w: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per row of y, the weighted least-squares intercept and slope over its finite values."""
    ok = np.isfinite(y)
    ww = np.where(ok, w[None], 0.0)
    yy = np.where(ok, y, 0.0)
    sw, sx, sy = ww.sum(1), ww @ log_c, (ww * yy).sum(1)
    sxx, sxy = ww @ log_c ** 2, (ww * yy * log_c).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (sw * sxy - sx * sy) / (sw * sxx - sx ** 2)
        intercept = (sy - slope * sx) / sw
    good = ok.sum(1) >= 2
    return intercept[good], slope[good]

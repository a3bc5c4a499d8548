"""Approach 2 (Hoffmann et al. 2022, section 3.2): isoFLOP parabolas, then power laws in C.

Per budget, loss is fitted as a parabola in ln N inside a window around the lowest-loss run;
its vertex is that budget's N_opt. A budget is rejected, with the reason kept, when its
budget has fewer than ``min_points`` distinct sizes, its lowest loss sits at the smallest or
largest sampled size (the optimum is not bracketed: named so even when the window around that
edge also holds too few sizes, since more sizes beyond the edge, not more near it, would fix
it), its window has fewer than ``min_points`` distinct sizes, the parabola is concave, or its
vertex falls outside the window's sizes. Then ``N_opt = k.C^a``, ``D_opt = k'.C^b`` and
``L_opt = k_L.C^c`` by least squares in log-log.

The same vectorised code fits the data (one row) and every bootstrap resample, so intervals
and point estimates follow exactly the same rules. The default resampling is the residual
bootstrap of a designed regression: the sizes at each budget are chosen by the planner, not
drawn, so each resample keeps them and adds residuals drawn from the pooled,
leverage-corrected parabola residuals of all budgets to the fitted parabolas. Resampling
runs within budgets (``pairs``) leaves ~4 distinct sizes of 6, which moves the vertex far more
than the noise does: on demo-like synthetic sweeps its 95% intervals are twice as wide as
the estimator's spread (99% coverage), the residual ones ~95% (tests/analysis/fit/test_coverage.py).
Where runs share shapes (a noise structure from the Approach 3 law's residuals,
``analysis.fit.structure``), the resamples are drawn from that law instead and the interval
is the bias-corrected pivot of ``analysis.fit.isoflop_pivot``, or withheld with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import pandas as pd

from analysis.fit.parametric import resample_counts, row_chunks
from analysis.settings import FitSettings


class Reject(IntEnum):
    """Why a budget's parabola is not used (``OK``: it is), per weight row."""

    OK = 0
    FEW_SIZES = 1
    EDGE = 2
    CONCAVE = 3
    OUTSIDE = 4
    FLAT = 5


REASONS = {Reject.FEW_SIZES: "fewer than {min_points} distinct sizes in the window",
           Reject.EDGE: "not bracketed: the lowest loss is at the {edge} size",
           Reject.CONCAVE: "concave parabola (no minimum)",
           Reject.OUTSIDE: "parabola minimum outside the sampled sizes",
           Reject.FLAT: "flat losses: their range is below {flat:.0e} of the loss across the "
                        "budget's sizes, so N_opt is not identified"}
# Approach 2 bootstrap: resamples x runs per chunk (32 MB a chunk; ~100 MB peak). 4x the
# Approach 3 chunk: each chunk loops over the budgets in Python, and at 100,000 runs that
# overhead halved the time (9 s -> 5 s) for 75 MB more.
RESAMPLE_CHUNK_ELEMENTS = 1 << 22
# A budget whose losses span less than this fraction of the loss is flat (Reject.FLAT): the
# default of fit.flat_loss_rel_range (its reason is in FitSettings).
FLAT_LOSS_REL_RANGE = FitSettings.flat_loss_rel_range


@dataclass(frozen=True)
class BudgetFit:
    """The isoFLOP parabola of one budget."""

    budget: float
    """FLOPs of the budget (bucket: geometric mean of its points)."""
    n_points: int
    """Runs at this budget."""
    used: bool
    """Whether the budget enters the power-law fits."""
    reason: str
    """Why it was rejected ("" when used)."""
    coef: tuple[float, float, float] | None
    """Parabola ``loss = c0 + c1.t + c2.t^2`` with ``t = ln N - center``."""
    center: float
    """ln N the parabola's ``t`` is measured from."""
    window: tuple[float, float] | None
    """Smallest and largest N inside the fitting window."""
    n_opt: float | None
    """N at the parabola's minimum."""
    d_opt: float | None
    """Tokens at that N (from this budget's ln D vs ln N relation)."""
    loss_opt: float | None
    """Loss at the parabola's minimum."""

    def parabola(self, n: np.ndarray) -> np.ndarray:
        c0, c1, c2 = self.coef
        t = np.log(n) - self.center
        return c0 + c1 * t + c2 * t * t

    def as_dict(self) -> dict:
        return {"budget": self.budget, "n_points": self.n_points, "n_opt": self.n_opt,
                "d_opt": self.d_opt, "loss_opt": self.loss_opt, "used": self.used,
                "reason": self.reason}


@dataclass(frozen=True)
class PowerLaw:
    """``y = k.C^exponent``, fitted by least squares on ln y vs ln C."""

    k: float
    """Prefactor."""
    exponent: float
    """Exponent of C."""

    def __call__(self, budget: np.ndarray | float) -> np.ndarray:
        return self.k * np.asarray(budget, float) ** self.exponent


@dataclass(frozen=True)
class IsoflopFit:
    """Approach 2's result: per-budget parabolas, power laws and their bootstrap samples."""

    budgets: tuple[BudgetFit, ...]
    """One entry per budget (or bucket), used or rejected."""
    n_law: PowerLaw | None
    """N_opt(C), None when fewer than two budgets are usable."""
    d_law: PowerLaw | None
    """D_opt(C)."""
    loss_law: PowerLaw | None
    """L_opt(C) (the loss frontier)."""
    reason: str
    """Why there is no law ("" when there is one)."""
    note: str
    """How budgets were formed (e.g. bucketed FLOPs)."""
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Bootstrap samples of ln_k, a, ln_kd, b, ln_kl, c (resamples with >= 2 usable budgets);
    with a noise structure, pivot samples (``analysis.fit.isoflop_pivot``)."""
    bootstrap_kind: str = ""
    """How the samples were drawn: residual, pairs ("" without bootstrap)."""
    interval_reason: str = ""
    """Why no interval may be drawn from the samples ("" when one may)."""


def token_line(x: np.ndarray, log_d: np.ndarray) -> tuple[float, float]:
    """``(d0, d1)`` of ``ln D = d0 + d1 ln N`` through one budget's runs (``x`` = ln N): the
    tokens at an N between them, as the runs were planned (the study's FLOP formula, never a
    ``6ND`` assumed here; exact when D = C / (6 N)). The one rule: Approach 2's D_opt, Porian's,
    the design simulation's and the figures' Approach 3 curves all read D from it."""
    if np.unique(x).size > 1:
        d1, d0 = np.polyfit(x, log_d, 1)
        return d0, d1
    return log_d.mean(), 0.0


@dataclass(frozen=True)
class BudgetGroup:
    """One budget's points as Approach 2 fits them."""

    budget: float
    """The budget (or bucket) in FLOPs."""
    x: np.ndarray
    """ln N of its runs."""
    y: np.ndarray
    """Their losses."""
    d0: float
    """Intercept of the budget's ``token_line``."""
    d1: float
    """Slope of the budget's ``token_line``."""

    @classmethod
    def of(cls, budget: float, n: np.ndarray, tokens: np.ndarray, loss: np.ndarray
           ) -> BudgetGroup:
        x, log_d = np.log(n), np.log(tokens)
        d0, d1 = token_line(x, log_d)
        return cls(float(budget), x, loss, d0, d1)


@dataclass(frozen=True)
class Parabolas:
    """One budget's windowed parabolas, one row per weight (and loss) row."""

    code: np.ndarray
    """``Reject`` per row (``Reject.OK``: the parabola is used)."""
    edge_low: np.ndarray
    """Whether the lowest loss sits at the smallest size (for ``Reject.EDGE``'s message)."""
    coef: np.ndarray
    """``c0, c1, c2`` per row, of ``t = ln N - center``."""
    center: float
    """ln N that ``t`` is measured from (the mean of the budget's ln N)."""
    inwin: np.ndarray
    """Which runs lie in each row's window."""
    x_opt: np.ndarray
    """ln N at each row's vertex."""
    loss_opt: np.ndarray
    """Loss at each row's vertex."""
    window: tuple[np.ndarray, np.ndarray]
    """ln N of each row's window ends."""
    fitted: np.ndarray
    """Whether each row's window held enough sizes for a parabola (``coef`` means nothing
    where it did not)."""


@dataclass(frozen=True)
class LawRows:
    """A power law in C per row: ``ln y = intercept + slope . ln C``."""

    intercept: np.ndarray
    """Per row."""
    slope: np.ndarray
    """Per row (the exponent)."""


@dataclass(frozen=True)
class RowFits:
    """``fit_rows``' result: every budget's parabolas and the three power laws, per row."""

    parabolas: list[Parabolas]
    """Per budget."""
    valid: np.ndarray
    """(rows, budgets): the budgets each row uses."""
    laws: dict[str, LawRows]
    """``n`` (N_opt), ``d`` (D_opt), ``l`` (L_opt) in C."""
    ok: np.ndarray
    """Rows with at least two usable budgets (a power law)."""


def budget_groups(budget: np.ndarray, bucket_decades: float) -> tuple[np.ndarray, str]:
    """Each point's budget for Approach 2, and a note when FLOPs had to be bucketed.

    Budgets are discrete when there are at least three points per distinct value on
    average; otherwise (e.g. Chinchilla's digitised points) points are binned by
    ``round(log10 C / width)`` and each bin's budget is its points' geometric mean.
    """
    log_c = np.log10(budget)
    distinct = np.unique(np.round(log_c, 4))
    if 3 * distinct.size <= budget.size:
        # Values equal to 4 decimals of log10 are one budget: take their median, not a rounding.
        key = np.round(log_c, 4)
        return pd.Series(budget).groupby(key).transform("median").to_numpy(), ""
    bins = np.round(log_c / bucket_decades)
    means = pd.Series(log_c).groupby(bins).transform("mean").to_numpy()
    note = (f"FLOPs are not on discrete budgets ({distinct.size} distinct values for "
            f"{budget.size} points): bucketed into {np.unique(bins).size} bins of "
            f"{bucket_decades} decades")
    return 10.0 ** means, note


def _parabolas(x: np.ndarray, y: np.ndarray, weights: np.ndarray, half_window: float,
               min_points: int, flat_rel: float = FLAT_LOSS_REL_RANGE) -> Parabolas:
    """Windowed weighted parabolas of y (n,) or (k, n) in x for each weight row (k, n)."""
    y = np.broadcast_to(y, weights.shape)
    present = weights > 0
    spread = np.where(present, y, -np.inf).max(axis=1) - np.where(present, y, np.inf).min(axis=1)
    flat = spread <= flat_rel * np.abs(np.where(present, y, 0.0).max(axis=1))
    ic = np.where(present, y, np.inf).argmin(axis=1)
    xc = x[ic]
    lo = np.where(present, x, np.inf).min(axis=1)
    hi = np.where(present, x, -np.inf).max(axis=1)
    inwin = present & (np.abs(x[None] - xc[:, None]) <= half_window + 1e-12)
    # Distinct sizes in each row's window: OR over each run of equal sorted sizes (O(k.n);
    # a (points x sizes) indicator product was O(k.n^2): minutes at 5,000 runs per budget).
    order = np.argsort(x, kind="stable")
    firsts = np.flatnonzero(np.r_[True, x[order][1:] != x[order][:-1]])
    n_distinct = np.logical_or.reduceat(inwin[:, order], firsts, axis=1).sum(axis=1)
    n_sizes = np.logical_or.reduceat(present[:, order], firsts, axis=1).sum(axis=1)
    center = x.mean()
    t = x - center
    ww = weights * inwin
    powers = t[:, None] ** np.arange(5)
    s = ww @ powers
    rhs = (ww * y) @ powers[:, :3]
    gram = np.stack([s[:, 0:3], s[:, 1:4], s[:, 2:5]], axis=1)
    few = n_distinct < min_points
    gram[few] = np.eye(3)
    coef = np.linalg.solve(gram, rhs[..., None])[..., 0]
    c0, c1, c2 = coef.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t_opt = -c1 / (2 * c2)
    w_lo = np.where(inwin, t, np.inf).min(axis=1)
    w_hi = np.where(inwin, t, -np.inf).max(axis=1)
    # Which reason a rejected row gets (the first that holds): whether it is rejected at
    # all does not depend on the order. A budget with enough sizes whose lowest loss is at an
    # edge is "not bracketed", whatever its window holds.
    code = np.select([flat, n_sizes < min_points, (xc == lo) | (xc == hi), few, c2 <= 0,
                      (t_opt < w_lo) | (t_opt > w_hi)],
                     [Reject.FLAT, Reject.FEW_SIZES, Reject.EDGE, Reject.FEW_SIZES,
                      Reject.CONCAVE, Reject.OUTSIDE], Reject.OK)
    return Parabolas(code=code, edge_low=xc == lo, coef=coef, center=center, inwin=inwin,
                     x_opt=center + t_opt, loss_opt=c0 + c1 * t_opt + c2 * t_opt ** 2,
                     window=(center + w_lo, center + w_hi), fitted=~few)


def _power_law(log_c: np.ndarray, log_y: np.ndarray, valid: np.ndarray) -> LawRows:
    """Per row, least-squares intercept and slope of log_y on log_c over valid budgets."""
    v = valid.astype(float)
    n = v.sum(axis=1)
    sx, sy = v @ log_c, (v * log_y).sum(axis=1)
    sxx, sxy = v @ log_c ** 2, (v * log_y * log_c).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (n * sxy - sx * sy) / (n * sxx - sx ** 2)
        intercept = (sy - slope * sx) / n
    return LawRows(intercept, slope)


def fit_rows(groups: list[BudgetGroup], weights: list[np.ndarray], settings: FitSettings,
             losses: list[np.ndarray] | None = None) -> RowFits:
    """Parabolas of every budget and the three power laws, for each weight (and loss) row:
    the data (one row), every bootstrap resample, or a design's simulated replications."""
    half = math.inf if settings.window_decades is None else settings.window_decades * math.log(10)
    losses = losses or [g.y for g in groups]
    fits = [_parabolas(g.x, y, w, half, settings.min_points, settings.flat_loss_rel_range)
            for g, y, w in zip(groups, losses, weights)]
    valid = np.stack([f.code == Reject.OK for f in fits], axis=1)
    log_c = np.log(np.array([g.budget for g in groups]))
    x_opt = np.stack([np.where(f.code == Reject.OK, f.x_opt, 0.0) for f in fits], axis=1)
    # ln D at N_opt from the budget's own token_line (the runs' tokens, as planned).
    log_d = np.stack([g.d0 + g.d1 * x for g, x in zip(groups, x_opt.T)], axis=1)
    loss = np.stack([np.where(f.code == Reject.OK, f.loss_opt, 1.0) for f in fits], axis=1)
    laws = {name: _power_law(log_c, log_y, valid)
            for name, log_y in (("n", x_opt), ("d", log_d), ("l", np.log(np.abs(loss))))}
    return RowFits(fits, valid, laws, valid.sum(axis=1) >= 2)


def _groups(points: pd.DataFrame, settings: FitSettings) -> tuple[list[BudgetGroup], str]:
    """Per budget: its points and token line; and the bucketing note."""
    budgets, note = budget_groups(points["budget"].to_numpy(float), settings.bucket_decades)
    n, tokens, loss = (points[c].to_numpy(float) for c in ("n", "tokens", "loss"))
    groups = [BudgetGroup.of(b, n[budgets == b], tokens[budgets == b], loss[budgets == b])
              for b in np.unique(budgets)]
    return groups, note


def pooled_residual_std(points: pd.DataFrame, settings: FitSettings) -> float:
    """Std of the pooled, leverage-corrected parabola residuals: the loss noise the residual
    bootstrap draws from (0 when no window has residual degrees of freedom)."""
    groups, _ = _groups(points, settings)
    full = fit_rows(groups, [np.ones((1, g.x.size)) for g in groups], settings)
    model = _residual_model(groups, full.parabolas)
    return float(model["pool"].std(ddof=1)) if model is not None else 0.0


Resample = Callable[[list[BudgetGroup], RowFits], tuple[dict[str, np.ndarray], str, str]]
"""Bootstrap samples of a fit (its budgets' groups and one-row fit): samples, their kind, and
why no interval may be drawn from them ("" when one may)."""


def fit_isoflop(points: pd.DataFrame, settings: FitSettings,
                resample: Resample | None = None) -> IsoflopFit:
    """Approach 2 on ``points`` (columns budget, n, tokens, loss), with bootstrap samples:
    ``resample``'s (``analysis.fit.isoflop_pivot`` with a noise structure), else the
    residual or pairs bootstrap ``fit.approach2_bootstrap`` names."""
    groups, note = _groups(points, settings)
    if not groups:
        return IsoflopFit((), None, None, None, "no usable points", note)
    full = fit_rows(groups, [np.ones((1, g.x.size)) for g in groups], settings)
    budget_fits = tuple(_budget_fit(g, f, settings) for g, f in zip(groups, full.parabolas))
    if not full.ok[0]:
        used = int(full.valid[0].sum())
        reason = f"only {used} usable budget(s); a power law needs at least 2"
        return IsoflopFit(budget_fits, None, None, None, reason, note)
    laws = {k: PowerLaw(math.exp(v.intercept[0]), float(v.slope[0]))
            for k, v in full.laws.items()}
    if resample is None:
        (samples, kind), reason = _bootstrap(groups, full.parabolas, settings), ""
    else:
        samples, kind, reason = resample(groups, full)
    return IsoflopFit(budget_fits, laws["n"], laws["d"], laws["l"], "", note, samples, kind,
                      reason)


def _budget_fit(group: BudgetGroup, fit: Parabolas, settings: FitSettings) -> BudgetFit:
    code = Reject(int(fit.code[0]))
    reason = REASONS.get(code, "").format(min_points=settings.min_points,
                                          edge="smallest" if fit.edge_low[0] else "largest",
                                          flat=settings.flat_loss_rel_range)
    ok = code == Reject.OK
    x_opt = float(fit.x_opt[0]) if ok else None
    no_parabola = code == Reject.FLAT or not fit.fitted[0]  # no parabola was fitted
    window = None if no_parabola else (math.exp(fit.window[0][0]), math.exp(fit.window[1][0]))
    return BudgetFit(
        budget=group.budget, n_points=int(group.x.size), used=ok, reason=reason,
        coef=None if no_parabola else tuple(float(c) for c in fit.coef[0]),
        center=float(fit.center), window=window,
        n_opt=math.exp(x_opt) if ok else None,
        d_opt=math.exp(group.d0 + group.d1 * x_opt) if ok else None,
        loss_opt=float(fit.loss_opt[0]) if ok else None)


def _bootstrap(groups: list[BudgetGroup], fits: list[Parabolas], settings: FitSettings
               ) -> tuple[dict[str, np.ndarray], str]:
    """Bootstrap samples of the power laws (resamples with >= 2 usable budgets), and kind.

    Resamples are drawn and fitted in chunks of rows holding at most RESAMPLE_CHUNK_ELEMENTS
    values (one chunk, hence the same random draws as unchunked, up to ~4,000 runs at 1,000
    resamples): memory stays flat in the number of runs.
    """
    if settings.bootstrap == 0:
        return {}, ""
    rng = np.random.default_rng(settings.seed)
    residual = _residual_model(groups, fits) \
        if settings.approach2_bootstrap == "residual" else None
    parts = []
    width = sum(g.x.size for g in groups)
    for rows in row_chunks(settings.bootstrap, width, RESAMPLE_CHUNK_ELEMENTS):
        size = rows.stop - rows.start
        if residual is None:  # pairs, or no residual degrees of freedom to resample
            weights = [resample_counts(g.x.size, None, size, rng) for g in groups]
            losses = None
        else:
            losses = [y0[None] + np.where(win, rng.choice(residual["pool"], (size, y0.size)),
                                          0.0)
                      for y0, win in zip(residual["fitted"], residual["windows"])]
            weights = [np.ones_like(y) for y in losses]
        boot = fit_rows(groups, weights, settings, losses)
        parts.append((boot.ok, boot.laws))
    return _samples(parts), "pairs" if residual is None else "residual"


def _samples(parts: list) -> dict[str, np.ndarray]:
    """The bootstrap's samples from its chunks' (ok, laws), usable rows only."""
    ok = np.concatenate([p[0] for p in parts])
    out = {"ok_fraction": np.array([ok.mean()])}
    for name in parts[0][1]:
        intercept = np.concatenate([p[1][name].intercept for p in parts])
        slope = np.concatenate([p[1][name].slope for p in parts])
        out[f"ln_k{name}"], out[f"exp_{name}"] = intercept[ok], slope[ok]
    return out


def _residual_model(groups: list[BudgetGroup], fits: list[Parabolas]) -> dict | None:
    """What residual resamples are drawn from: per budget, the fitted parabola in its used
    window (observed losses elsewhere) and the window; and the pooled residuals.

    A resample's losses are fitted + pooled residuals drawn with replacement, in each used
    window. Residuals are divided by sqrt(1 - leverage) so that, pooled, they have the
    noise's variance; runs outside a window, and budgets rejected on the data, keep their
    losses. None when no window has more runs than the parabola's three coefficients.
    """
    fitted, windows, pool = [], [], []
    for g, f in zip(groups, fits):
        win = f.inwin[0] & (f.code[0] == Reject.OK)
        t = g.x - f.center
        design = np.stack([np.ones_like(t), t, t * t], axis=1)
        fitted.append(np.where(win, design @ f.coef[0], g.y))
        windows.append(win)
        if win.sum() > 3:
            leverage = np.einsum("ij,ji->i", design[win], np.linalg.pinv(design[win]))
            keep = leverage < 1 - 1e-9  # a run alone at its size is fitted exactly
            residual = (g.y - fitted[-1])[win]
            pool.append(residual[keep] / np.sqrt(1 - leverage[keep]))
    if not pool:
        return None
    pool = np.concatenate(pool)
    return {"fitted": fitted, "windows": windows, "pool": pool - pool.mean()}


def interval(samples: np.ndarray, settings: FitSettings) -> list[float] | None:
    """Percentile interval of bootstrap samples, or None without samples."""
    samples = samples[np.isfinite(samples)] if samples is not None else None
    if samples is None or samples.size < 2:
        return None
    lo, hi = np.percentile(samples, settings.alpha_tails)
    return [float(lo), float(hi)]

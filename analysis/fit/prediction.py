"""The law's prediction of one run's final loss, with a prediction interval, by both approaches.

A released model (``flame release``) is a run the sweep never trained: a family member at a
target budget, N parameters (as the fit counts them) and D tokens. What the law says about it,
and how sure it is, comes from the same bootstrap that gave the fit's intervals: the resamples
are drawn again from the sweep's results.csv with fit.json's own settings (same seed, same code:
``fit_approach2`` and the driver's parametric bootstrap), and each resample's law predicts the
run. That spread is the uncertainty of the *law*; a single new run also scatters around the law
(seed noise, and how far a shape sits off the fitted form), so each resampled prediction is
multiplied by ``exp(sd . z)``, ``sd`` the fit's own residual scatter in log loss (below). The
interval is the percentile interval of those predictive draws at the fit's confidence.

- Approach 3: ``L(N, D) = E + A/N^alpha + B/D^beta`` of each resample, at the run's N and D.
  Scatter: the standard deviation of ln(loss) around the fitted law (5 parameters' worth of
  degrees of freedom taken off).
- Approach 2: the loss frontier ``L_opt(C) = k_L C^c`` of each resample, plus what the run
  loses by sitting off that resample's ``N_opt(C)``: the fitted parabolas' curvature in ln N,
  relative to their minimum loss (the median over the used budgets), times
  ``(ln N - ln N_opt)^2``. Scatter: the pooled parabola residuals (the same pool the residual
  bootstrap draws from) relative to the loss.

The bootstrap is reproduced, not stored: ``law_draws`` checks that its resamples give the
intervals fit.json holds and says so when they do not (fit.json written by other code, or
results.csv changed since), and the prediction then carries that note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.fit.driver import parametric_with_bootstrap
from analysis.fit.isoflop import interval, pooled_residual_std
from analysis.fit.points import load_sweep_results, used_points
from analysis.fit.porian import fit_approach2
from analysis.fit.result import FitResult, read_fit
from analysis.fit.structure import NoiseStructure
from analysis.settings import FitSettings
from sweep.errors import ConfigError
from sweep.io import RESULTS_CSV

APPROACHES = ("approach2", "approach3")
# fit.json's intervals and the reproduced ones agree to this relative tolerance (they are the
# same numbers when the code and results.csv are unchanged).
REPRODUCED_RTOL = 1e-6
DRAW_SEED_OFFSET = 7919  # the scatter's draws: their own stream, apart from the resampling's


@dataclass(frozen=True)
class Prediction:
    """One approach's prediction of one run's final validation loss."""

    approach: str
    """approach2 | approach3."""
    loss: float | None
    """The fitted law's prediction (None: this approach has no law)."""
    low: float | None
    """The prediction interval's lower end (None: no interval, see ``reason``)."""
    high: float | None
    """Its upper end."""
    scatter_sd: float | None
    """The run-to-run scatter added, as a standard deviation of ln(loss)."""
    reason: str = ""
    """Why there is no prediction or no interval ("" when there are both)."""

    def inside(self, achieved: float | None) -> bool | None:
        """Whether ``achieved`` lies in the interval (None: no interval or no loss yet)."""
        if self.low is None or self.high is None or achieved is None or \
                not math.isfinite(achieved):
            return None
        return bool(self.low <= achieved <= self.high)


@dataclass(frozen=True)
class LawDraws:
    """Both approaches' laws as fitted and as resampled, enough to predict any (C, N, D)."""

    fit: FitResult
    """The fit.json predicted from."""
    settings: FitSettings
    """Its settings (confidence, seed)."""
    approach2: dict[str, np.ndarray] | None
    """``ln_kn, exp_n, ln_kl, exp_l`` (index 0: the fit; then the resamples) and ``curvature``
    (relative, per ln N squared), ``scatter`` (sd of ln loss), ``largest_budget`` (of the
    points fitted); None: no Approach 2 law."""
    approach3: np.ndarray | None
    """Thetas ``(ln A, ln B, ln E, alpha, beta)``, row 0 the fit, then the resamples; None:
    no Approach 3 law."""
    approach3_scatter: float
    """Approach 3's residual sd of ln(loss)."""
    notes: tuple[str, ...] = ()
    """Why an approach has no law or no interval, or the bootstrap was not reproduced."""


def law_draws(sweep_dir: Path) -> LawDraws:
    """The bootstrap of the fit in ``sweep_dir`` (fit.json + results.csv), drawn again."""
    sweep_dir = Path(sweep_dir)
    fit = read_fit(sweep_dir)
    settings = fit.fit_settings()
    points = used_points(load_sweep_results(sweep_dir / RESULTS_CSV, settings))
    if points.empty:
        raise ConfigError(f"{sweep_dir / RESULTS_CSV}: no usable runs; run `flame collect` "
                          "and `flame fit` first")
    return draws_of(points, fit)


def draws_of(points: pd.DataFrame, fit: FitResult) -> LawDraws:
    """The bootstrap of ``fit`` drawn again from the points it fitted (columns budget, n,
    tokens, loss: ``analysis.fit.points.used_points``)."""
    settings = fit.fit_settings()
    notes: list[str] = []
    # the law first, as ``flame fit`` does: its residuals give the noise structure that both
    # bootstraps resample (``analysis.fit.structure``)
    law = parametric_with_bootstrap(points, settings)
    noise = law[4] if settings.bootstrap_structure == "shapes" else None
    a2 = _approach2_draws(points, settings, fit, notes, noise)
    a3, scatter3 = _approach3_draws(law, points, settings, fit, notes)
    return LawDraws(fit, settings, a2, a3, scatter3, tuple(notes))


def _approach2_draws(points: pd.DataFrame, settings: FitSettings, fit: FitResult,
                     notes: list[str], noise: NoiseStructure | None
                     ) -> dict[str, np.ndarray] | None:
    iso = fit_approach2(points, settings, noise)
    if iso.n_law is None or iso.loss_law is None:
        notes.append(f"approach2: no law ({iso.reason or 'not fitted'})")
        return None
    s = iso.samples or {}
    if iso.interval_reason:  # withheld by flame fit: the fitted law alone, no draws
        notes.append(f"approach2: no interval ({iso.interval_reason})")
        s = {}
    keys = ("ln_kn", "exp_n", "ln_kl", "exp_l")
    fitted = {"ln_kn": math.log(iso.n_law.k), "exp_n": iso.n_law.exponent,
              "ln_kl": math.log(iso.loss_law.k), "exp_l": iso.loss_law.exponent}
    draws = {k: np.concatenate([[fitted[k]], s.get(k, np.array([]))]) for k in keys}
    _check_reproduced("approach2", interval(s.get("exp_n"), settings) if s else None,
                      fit.approach2.a_ci, notes)
    used = [b for b in iso.budgets if b.used and b.coef is not None and b.loss_opt]
    if not used:
        notes.append("approach2: no parabola to take a curvature from (e.g. "
                     "fit.approach2_estimator=porian): it predicts the frontier's loss")
    curvature = float(np.median([b.coef[2] / b.loss_opt for b in used])) if used else 0.0
    draws["curvature"] = np.array([curvature])
    median_loss = float(points["loss"].median())
    draws["scatter"] = np.array([pooled_residual_std(points, settings) / median_loss])
    draws["largest_budget"] = np.array([float(points["budget"].max())])
    return draws


def _approach3_draws(bootstrap: tuple, points: pd.DataFrame, settings: FitSettings,
                     fit: FitResult, notes: list[str]) -> tuple[np.ndarray | None, float]:
    law, thetas, reason, interval_reason, _ = bootstrap
    if law is None:
        notes.append(f"approach3: no law ({reason})")
        return None, math.nan
    if interval_reason:
        notes.append(f"approach3: no interval ({interval_reason})")
    n, d, loss = (points[c].to_numpy(float) for c in ("n", "tokens", "loss"))
    residual = np.log(loss) - np.log(law.predict(n, d))
    dof = max(len(loss) - 5, 1)
    scatter = float(math.sqrt(np.sum(residual ** 2) / dof))
    rows = [np.asarray(law.theta, float)[None]]
    if thetas is not None:
        rows.append(np.asarray(thetas, float))
        alpha_ci = interval(thetas[:, 3], settings)
        _check_reproduced("approach3", alpha_ci, fit.approach3.ci.get("alpha"), notes)
    return np.concatenate(rows), scatter


def _check_reproduced(approach: str, now: list[float] | None, then: list[float] | None,
                      notes: list[str]) -> None:
    if now is None or then is None:
        return
    if not np.allclose(now, then, rtol=REPRODUCED_RTOL):
        notes.append(f"{approach}: the bootstrap drawn again gives {now}, fit.json holds "
                     f"{then}: results.csv or flame changed since `flame fit`; refit to "
                     "predict from the law that is on disk")


A2_BEYOND = ("beyond the sweep's largest budget ({largest:.3g} FLOPs) Approach 2's loss "
             "frontier, a pure power law in C with no irreducible loss, predicts too low and "
             "its bootstrap interval does not widen to match (95% intervals held 76%, 19% and "
             "9% of released runs' losses 0.5, 1 and 1.5 decades out: "
             "benchmarks/bench_release_coverage.py); Approach 3's interval is the one to read")
"""Why Approach 2's loss prediction past the sweep comes without an interval."""


def predict(draws: LawDraws, budget: float, n: float, tokens: float,
            approach2_beyond: bool = False) -> list[Prediction]:
    """Both approaches' predictions of a run at ``budget`` FLOPs with N ``n`` (as the fit
    counts N) and ``tokens`` tokens. Approach 2's interval only within the sweep's budgets
    (``A2_BEYOND``) unless ``approach2_beyond`` (the benchmark that measures why)."""
    return [_predict_approach2(draws, budget, n, approach2_beyond),
            _predict_approach3(draws, n, tokens)]


def _predict_approach2(draws: LawDraws, budget: float, n: float, beyond: bool) -> Prediction:
    d = draws.approach2
    if d is None:
        return Prediction("approach2", None, None, None, None, "no Approach 2 law")
    log_c = math.log(budget)
    frontier = np.exp(d["ln_kl"] + d["exp_l"] * log_c)
    off = math.log(n) - (d["ln_kn"] + d["exp_n"] * log_c)
    values = frontier * (1.0 + d["curvature"][0] * off ** 2)
    scatter, largest = float(d["scatter"][0]), float(d["largest_budget"][0])
    if budget > largest * (1 + 1e-9) and not beyond:
        return Prediction("approach2", float(values[0]), None, None, scatter,
                          A2_BEYOND.format(largest=largest))
    return _with_interval("approach2", values, scatter, draws)


def _predict_approach3(draws: LawDraws, n: float, tokens: float) -> Prediction:
    theta = draws.approach3
    if theta is None:
        return Prediction("approach3", None, None, None, None, "no Approach 3 law")
    ln_a, ln_b, ln_e, alpha, beta = theta.T
    values = np.exp(ln_e) + np.exp(ln_a) / n ** alpha + np.exp(ln_b) / tokens ** beta
    return _with_interval("approach3", values, draws.approach3_scatter, draws)


def _with_interval(approach: str, values: np.ndarray, scatter: float,
                   draws: LawDraws) -> Prediction:
    point = float(values[0])
    resampled = values[1:][np.isfinite(values[1:]) & (values[1:] > 0)]
    if resampled.size < 2:
        return Prediction(approach, point, None, None, scatter,
                          "no bootstrap resamples (fit.bootstrap=0, or too few budgets)")
    rng = np.random.default_rng(draws.settings.seed + DRAW_SEED_OFFSET)
    predictive = resampled * np.exp(scatter * rng.standard_normal(resampled.size))
    low, high = np.percentile(predictive, draws.settings.alpha_tails)
    return Prediction(approach, point, float(low), float(high), scatter)


def prediction_columns(predictions: list[Prediction]) -> dict[str, object]:
    """One run's predictions as flat columns: ``predicted_<approach>``, ``_low``, ``_high``,
    ``_scatter_sd`` and ``_reason``."""
    out: dict[str, object] = {}
    for p in predictions:
        key = f"predicted_{p.approach}"
        out.update({key: p.loss, f"{key}_low": p.low, f"{key}_high": p.high,
                    f"{key}_scatter_sd": p.scatter_sd, f"{key}_reason": p.reason})
    return out


def stored_prediction(row: dict, approach: str) -> Prediction:
    """A prediction back from the columns ``prediction_columns`` wrote (a CSV row)."""
    key = f"predicted_{approach}"

    def number(name: str) -> float | None:
        value = row.get(name)
        return None if value is None or pd.isna(value) else float(value)
    reason = row.get(f"{key}_reason")
    return Prediction(approach, number(key), number(f"{key}_low"), number(f"{key}_high"),
                      number(f"{key}_scatter_sd"), "" if pd.isna(reason) else str(reason))

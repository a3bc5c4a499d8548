"""Loss to accuracy: the second step of Bhagia et al. 2024's two-step ladder.

Bhagia, Liu, Wettig et al., "Establishing Task Scaling Laws via Compute-Efficient Model
Ladders" (arXiv:2412.04403, 2024), predict a model's downstream accuracy in two steps: (1) the
scaling law gives its loss from compute (here: the sweep's fit); (2) a sigmoid in that loss
gives its accuracy (their eq. 2)::

    acc(L) = b + a / (1 + exp(k (L - L0)))          a, k > 0

falling from ``a + b`` (a model with no loss left) to ``b`` (chance, at high loss) around
``L0``. We fit step (2) by least squares (``scipy.optimize.curve_fit``) on the sweep's runs
(validation loss, lm-eval accuracy), with a bootstrap over runs for the curve's interval and,
for a new model's *scored* accuracy, its binomial sampling noise on the task's documents added.
Spearman's rank correlation says how well loss ranks accuracy without any functional form
(FLAME-MoE reports 0.89 between the law's predicted loss and HellaSwag accuracy); we give
rho(-loss, accuracy), so 1 means the lower loss always scores higher, as FLAME's figure reads.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.stats import spearmanr

MIN_POINTS = 5
"""Fewer runs than this: no sigmoid (four parameters need more points than that)."""


def sigmoid(loss: np.ndarray, a: float, k: float, l0: float, b: float) -> np.ndarray:
    """Bhagia et al.'s eq. 2: accuracy at loss ``loss``."""
    return b + a / (1.0 + np.exp(np.clip(k * (np.asarray(loss, float) - l0), -50, 50)))


@dataclass(frozen=True)
class SigmoidFit:
    """Accuracy against loss, fitted, with a bootstrap over runs."""

    params: dict[str, float] | None
    """a, k, L0, b of ``sigmoid``; None when it could not be fitted (``reason``)."""
    n_points: int
    """Runs fitted."""
    rmse: float
    """Root-mean-square residual of accuracy at the fitted parameters."""
    boot: np.ndarray = field(repr=False, default_factory=lambda: np.empty((0, 4)))
    """Bootstrap parameter draws (rows a, k, L0, b) that converged."""
    samples: int | None = None
    """Documents per task score (for the binomial noise of a predicted score)."""
    reason: str = ""
    """Why there is no fit, or a warning about it."""

    def predict(self, loss: float | np.ndarray) -> np.ndarray:
        """The fitted curve at ``loss``."""
        assert self.params is not None
        return sigmoid(loss, *self.params.values())

    def interval(self, loss: float, level: float = 0.95, scored: bool = True,
                 seed: int = 0) -> tuple[float, float] | None:
        """The ``level`` interval at ``loss``: of the curve (``scored=False``) or of a score on
        the task's documents (``scored=True``: each draw's curve value, then a binomial draw of
        ``samples`` documents)."""
        if self.params is None or not len(self.boot):
            return None
        values = np.clip(sigmoid(loss, *self.boot.T), 0.0, 1.0)
        if scored and self.samples:
            rng = np.random.default_rng(seed)
            values = rng.binomial(self.samples, values) / self.samples
        tail = (1 - level) / 2 * 100
        low, high = np.percentile(values, [tail, 100 - tail])
        return float(low), float(high)


NAMES = ("a", "k", "L0", "b")
MEANING = {"a": "the rise from floor to ceiling", "k": "the steepness",
           "L0": "the midpoint loss", "b": "the floor"}


def _bounds(loss: np.ndarray) -> tuple[list[float], list[float]]:
    """curve_fit's box: accuracies in [0, 1], the midpoint within five loss ranges."""
    spread = max(float(np.ptp(loss)), 1e-3)
    return ([0.0, 1e-6, float(loss.min()) - 5 * spread, 0.0],
            [1.0, 1e3, float(loss.max()) + 5 * spread, 1.0])


def at_bounds(params: np.ndarray, loss: np.ndarray) -> list[str]:
    """The parameters the fit left on their box's edge: the runs did not fix them (e.g. a
    loss range that never reaches where accuracy saturates), so the curve beyond the runs'
    losses is the box's, not the data's."""
    lower, upper = _bounds(loss)
    return [name for name, v, lo, hi in zip(NAMES, params, lower, upper)
            if min(abs(v - lo), abs(hi - v)) <= 1e-6 * max(1.0, abs(hi - lo))]


def _fit_once(loss: np.ndarray, acc: np.ndarray, chance: float) -> np.ndarray | None:
    spread = max(float(np.ptp(loss)), 1e-3)
    p0 = [max(float(acc.max()) - chance, 0.05), 4.0 / spread, float(np.median(loss)), chance]
    lower, upper = _bounds(loss)
    p0 = list(np.clip(p0, np.add(lower, 1e-9), np.subtract(upper, 1e-9)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(sigmoid, loss, acc, p0=p0, bounds=(lower, upper),
                                  maxfev=5000)
    except (RuntimeError, ValueError):
        return None
    return params


def fit_sigmoid(loss: np.ndarray, acc: np.ndarray, chance: float = 0.0, n_boot: int = 200,
                seed: int = 0, samples: int | None = None) -> SigmoidFit:
    """Fit ``sigmoid`` to (loss, accuracy) pairs, with ``n_boot`` resamples of the runs.
    ``chance``: the task's chance accuracy (the starting floor ``b``)."""
    loss, acc = np.asarray(loss, float), np.asarray(acc, float)
    keep = np.isfinite(loss) & np.isfinite(acc)
    loss, acc = loss[keep], acc[keep]
    if len(loss) < MIN_POINTS or np.ptp(loss) == 0:
        return SigmoidFit(None, len(loss), math.nan, samples=samples,
                          reason=f"{len(loss)} runs with a loss and an accuracy; the sigmoid "
                                 f"needs {MIN_POINTS} at different losses")
    params = _fit_once(loss, acc, chance)
    if params is None:
        return SigmoidFit(None, len(loss), math.nan, samples=samples,
                          reason="curve_fit did not converge")
    rmse = float(np.sqrt(np.mean((sigmoid(loss, *params) - acc) ** 2)))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(loss), len(loss))
        if np.ptp(loss[pick]) == 0:
            continue
        found = _fit_once(loss[pick], acc[pick], chance)
        if found is not None:
            draws.append(found)
    boot = np.array(draws) if draws else np.empty((0, 4))
    notes = [] if len(draws) >= 0.8 * n_boot else \
        [f"only {len(draws)} of {n_boot} bootstrap refits converged"]
    edge = at_bounds(params, loss)
    if edge:
        notes.append("at the edge of its range: " + ", ".join(
            f"{name} ({MEANING[name]}) = {params[NAMES.index(name)]:.4g}" for name in edge)
            + "; the runs' losses do not fix it, so the curve past them is a guess")
    return SigmoidFit(dict(zip(NAMES, map(float, params))), len(loss), rmse, boot, samples,
                      "; ".join(notes))


def spearman(loss: np.ndarray, acc: np.ndarray) -> float:
    """Spearman's rho of (-loss, accuracy): 1 when a lower loss always scores higher."""
    loss, acc = np.asarray(loss, float), np.asarray(acc, float)
    keep = np.isfinite(loss) & np.isfinite(acc)
    if keep.sum() < 3 or np.ptp(acc[keep]) == 0 or np.ptp(loss[keep]) == 0:
        return math.nan
    return float(spearmanr(-loss[keep], acc[keep]).statistic)

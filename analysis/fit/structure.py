"""Noise a study's runs share: variance components and the structured bootstrap's draws.

A shape's loss departs from the five-parameter law by an amount shared by every budget and
every seed of that shape (the law's misfit), and only the rest is run-to-run noise. Points
that share a shape are therefore not independent evidence about the law, and a bootstrap
that resamples runs as if they were gives falsely narrow intervals (issue 25: 57% coverage
for a seeded design). The model here is the two-level random-effects model

    log loss_j = log L(N_j, D_j; theta) + u_shape(j) + e_j,
    u ~ (0, shape_sd^2) per shape,  e ~ (0, run_sd^2) per run,

with the shape the architecture (``shape``/``member`` column, else N itself).

Variance components (``variance_components``):
- ``seed_sd``: the pooled within-point SD of replicates (runs of one shape at one budget,
  different seeds): the one-way ANOVA's within mean square, free of any law;
- ``shape_sd`` and ``run_sd``: ANOVA (method-of-moments) estimators from the law's
  residuals, grouped by shape: the between- and within-shape sums of squares set equal to
  their expectations. The expectations account for the 5 fitted parameters through the
  linearised fit's hat matrix ``H = J (J'J)^-1 J'``: ``E[r'Ar] = su2.tr(Z'MAMZ) +
  se2.tr(AM)`` with ``M = I - H`` and ``Z`` the shape indicators (Henderson's method III;
  Searle, Casella & McCulloch 1992, "Variance Components", sections 3.5 and 5.5). A negative
  solution is set to 0 and the other refitted from the total, as the ANOVA method does.

The structured bootstrap is model-based resampling for a random-effects model (Davison &
Hinkley 1997, "Bootstrap Methods and their Application", section 3.8; Carpenter, Goldstein
& Rasbash 2003, JRSS C 52, "A novel bootstrap procedure for assessing the relationship
between class size and achievement"): the design (sizes, budgets, seeds) is kept, and each
resample adds to the fitted values one shape effect per shape, drawn with replacement from
the shapes' centred mean residuals, and one run effect per run, drawn from the centred
within-shape residuals, each set rescaled to its estimated component (Carpenter et al.'s
rescaling: raw residuals under-estimate both). Resampling shapes as clusters instead (the
cluster bootstrap, Davison & Hinkley 1997 section 3.8; Field & Welsh 2007, JRSS B 69) would
leave a budget 2-3 distinct sizes of its 4-6 and reject its parabola: the design is not
what is random here, the losses are.

Approach 3's interval of a (and b = 1 - a) is that bootstrap's percentile interval with each
side's distance from the estimate scaled by t_(df) / z (``t_widened``): a percentile interval
is about a-hat +- z.SE with SE set by the estimated components, as if they were known, while
a's variance is estimated from few shapes (on FLAME's 16-shape grid ~13 df, where N varies
only between shapes). ``df`` is Satterthwaite's (1946) for the linearised variance of a as a
combination of the between- and within-shape sums of squares (``satterthwaite_df``); the same
small-sample correction as the t critical values used with few clusters (Cameron & Miller
2015, J. Human Resources 50, "A practitioner's guide to cluster-robust inference", section VI)
and Hesterberg's expanded percentile interval (2015, The American Statistician 69, "What
teachers should know about the bootstrap"). Measured in docs/methods.md.

Fall-backs: where no shape has more than one run (no replicates and no shape at two
budgets), shape and run effects cannot be told apart: ``structure`` is None and the fits
resample as before (Approach 2: pooled parabola residuals; Approach 3: runs within budgets),
which is right when every point is its own shape. Without replicates but with shapes across
budgets the components are still estimated (between vs within shapes), but fit.json's
``variance_components`` is null, since no seed SD is measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm
from scipy.stats import t as student_t

from analysis.fit.parametric import (
    HUBER_DELTA,
    ONE_STEP_MIN_POINTS,
    ParametricFit,
    _jacobian,
    _logs,
    _predict_log,
    lm_irls,
    row_chunks,
)

SHAPE_COLUMNS = ("shape", "member")
"""Columns naming a run's architecture, in order of preference (else N identifies it)."""


@dataclass(frozen=True)
class VarianceComponents:
    """What the law's residuals split into (log-loss SDs)."""

    seed_sd: float | None
    """SD of a run's loss between seeds of one point (None without replicates)."""
    shape_sd: float
    """SD of the law's misfit shared by every budget and seed of a shape."""
    run_sd: float
    """SD of a run beyond its shape's effect (seed noise and misfit not shared)."""
    n_shapes: int
    """Distinct shapes fitted."""
    n_replicated_points: int
    """Points (shape x budget) with two or more runs."""
    n_runs: int
    """Runs fitted."""
    method: str
    """How they were estimated."""

    def as_json(self) -> dict | None:
        """fit.json's ``variance_components`` (None when no point has replicates)."""
        if not self.n_replicated_points:
            return None
        return {"seed_sd": self.seed_sd, "shape_sd": self.shape_sd, "n_shapes": self.n_shapes,
                "n_replicated_points": self.n_replicated_points, "method": self.method,
                "run_sd": self.run_sd}


@dataclass(frozen=True)
class NoiseStructure:
    """The structured bootstrap's model: components and the residuals to draw from."""

    components: VarianceComponents
    """The estimated components."""
    shape: np.ndarray
    """Shape index (0..S-1) of each run, in the points' order."""
    shape_effects: np.ndarray
    """Centred shape mean residuals, rescaled to ``shape_sd`` (S,)."""
    run_effects: np.ndarray
    """Centred within-shape residuals, rescaled to ``run_sd``."""
    fitted_log: np.ndarray | None = None
    """The Approach 3 law's log loss at each run (None: built without a law): Approach 2's
    structured bootstrap draws its resamples around it (``analysis.fit.isoflop_pivot``)."""
    theta: np.ndarray | None = None
    """That law's parameters (ln A, ln B, ln E, alpha, beta)."""
    a_df: float | None = None
    """Satterthwaite's degrees of freedom of the estimated variance of that law's a (None:
    built without a law): Approach 3's interval of a is t-widened by them
    (``t_widened``)."""

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """(size, runs) log-loss noise: a shape effect per shape plus a run effect per run."""
        n_shapes = self.shape_effects.size
        u = self.shape_effects[rng.integers(0, n_shapes, (size, n_shapes))]
        e = self.run_effects[rng.integers(0, self.run_effects.size, (size, self.shape.size))]
        return u[:, self.shape] + e

    def describe(self) -> str:
        c = self.components
        return f"structured (shape sd {c.shape_sd:.3g}, run sd {c.run_sd:.3g})"


def shape_index(points: pd.DataFrame) -> np.ndarray:
    """Each run's shape as 0..S-1: its ``shape`` or ``member`` column, else its N."""
    for column in SHAPE_COLUMNS:
        if column in points.columns and points[column].notna().all():
            return pd.factorize(points[column].astype(str))[0]
    return pd.factorize(np.round(np.log(points["n"].to_numpy(float)), 9))[0]


def point_index(budgets: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Each run's point (budget x shape) as 0..P-1: runs of a point differ only in seed."""
    keys = pd.MultiIndex.from_arrays([np.round(np.log10(budgets), 4), shape])
    return pd.factorize(keys)[0]


def seed_sd(log_loss: np.ndarray, point: np.ndarray) -> tuple[float | None, int]:
    """Pooled within-point SD of log loss, and how many points have replicates."""
    counts = np.bincount(point)
    means = np.bincount(point, log_loss) / counts
    df = int((counts - 1).sum())
    if df == 0:
        return None, 0
    ss = float(((log_loss - means[point]) ** 2).sum())
    return math.sqrt(ss / df), int((counts > 1).sum())


@dataclass(frozen=True)
class AnovaTerms:
    """The two quadratic forms of the law's residuals and their expectations' coefficients."""

    lhs: np.ndarray
    """(2, 2): row i is E[Q_i] = lhs[i, 0].shape_var + lhs[i, 1].run_var."""
    q: np.ndarray
    """(Q_between, Q_within): sums of squares between shapes (of shape sums) and within."""
    df: tuple[float, float]
    """Their degrees of freedom, tr(P_Z M) and tr(M) - tr(P_Z M)."""
    total: tuple[float, float]
    """The coefficients of E[Q_between + Q_within]: tr(Z'MZ) and tr(M)."""


def anova_terms(residual: np.ndarray, jac: np.ndarray, shape: np.ndarray) -> AnovaTerms | None:
    """The between- and within-shape sums of squares of residuals of a fit with Jacobian
    ``jac`` (runs, params) and their expectations; None when no shape has two runs."""
    n = residual.size
    counts = np.bincount(shape).astype(float)
    if counts.max() < 2:
        return None
    u, s, _ = np.linalg.svd(jac, full_matrices=False)
    q = u[:, s > s.max() * 1e-10]                        # basis of the fit's column space
    k = np.zeros((counts.size, q.shape[1]))
    np.add.at(k, shape, q)                               # Z'Q: Z'HZ = K K', never formed
    diag = (k * k).sum(axis=1)                           # (Z'HZ)_gg
    tr_pm = counts.size - float((diag / counts).sum())   # tr(P_Z M)
    tr_m = n - q.shape[1]                                # tr(M)
    t_u_total = n - float(diag.sum())                    # tr(Z'MZ)
    # tr(Z'M P_Z M Z) = sum_gh (Z'MZ)_gh^2 / n_h with Z'MZ = D - KK', in O(S.p^2).
    t_u_between = n - 2 * float(diag.sum()) + \
        float(np.einsum("hi,ij,hj->h", k, k.T @ k, k) @ (1 / counts))
    sums = np.bincount(shape, residual)
    q_between = float((sums ** 2 / counts).sum())
    q_within = float((residual ** 2).sum()) - q_between
    lhs = np.array([[t_u_between, tr_pm], [t_u_total - t_u_between, tr_m - tr_pm]])
    return AnovaTerms(lhs, np.array([q_between, q_within]), (tr_pm, tr_m - tr_pm),
                      (t_u_total, tr_m))


def anova_components(residual: np.ndarray, jac: np.ndarray, shape: np.ndarray
                     ) -> tuple[float, float] | None:
    """(shape variance, run variance) by Henderson's method III from residuals of a fit
    with Jacobian ``jac`` (runs, params); None when no shape has two runs."""
    terms = anova_terms(residual, jac, shape)
    return None if terms is None else _components(terms)


def _components(terms: AnovaTerms) -> tuple[float, float] | None:
    if _singular(terms.lhs):
        return None
    (q_between, q_within), (t_u_total, tr_m) = terms.q, terms.total
    su2, se2 = np.linalg.solve(terms.lhs, [q_between, q_within])
    total = q_between + q_within
    if su2 < 0:
        su2, se2 = 0.0, total / tr_m
    elif se2 < 0:
        su2, se2 = total / t_u_total, 0.0
    return float(su2), float(se2)


def _singular(lhs: np.ndarray) -> bool:
    return abs(np.linalg.det(lhs)) < 1e-12 * np.abs(lhs).max() ** 2


def satterthwaite_df(residual: np.ndarray, jac: np.ndarray, shape: np.ndarray,
                     grad: np.ndarray) -> float | None:
    """Degrees of freedom of the estimated variance of a quantity with gradient ``grad``
    (params,) at the fit: Satterthwaite's approximation (1946, Biometrics Bulletin 2).

    Linearised, the quantity's error is ``c'(Zu + e)`` with ``c = J (J'J)^-1 grad``, so its
    variance is ``c_u.shape_var + c_e.run_var`` (``c_u`` the squared shape sums of c, ``c_e``
    its squared norm); with the components solved from the two sums of squares it is
    ``w_b.Q_b + w_w.Q_w``, and Satterthwaite's df is ``V^2 / sum (w_i Q_i)^2 / df_i``. A
    component the ANOVA sets to 0 leaves the other's df. None: no shape has two runs."""
    terms = anova_terms(residual, jac, shape)
    return None if terms is None else _satterthwaite(terms, jac, shape, grad)


def _satterthwaite(terms: AnovaTerms, jac: np.ndarray, shape: np.ndarray,
                   grad: np.ndarray) -> float | None:
    if _singular(terms.lhs):
        return None
    su2, se2 = np.linalg.solve(terms.lhs, terms.q)
    df_b, df_w = terms.df
    if su2 < 0:  # all run noise, pooled over both sums of squares
        return float(df_b + df_w)
    if se2 < 0:
        return float(df_b)
    c = jac @ np.linalg.lstsq(jac.T @ jac, grad, rcond=None)[0]
    c_u = float((np.bincount(shape, c) ** 2).sum())
    w = np.linalg.solve(terms.lhs.T, [c_u, float(c @ c)]) * terms.q
    variance = float(w.sum())
    denominator = w[0] ** 2 / max(df_b, 1e-9) + w[1] ** 2 / max(df_w, 1e-9)
    if variance <= 0 or denominator <= 0:
        return None
    return variance ** 2 / denominator


def t_widened(ci: list[float] | None, estimate: float, df: float | None,
              confidence: float) -> list[float] | None:
    """``ci`` with each side's distance from ``estimate`` scaled by Student's t quantile
    with ``df`` degrees of freedom over the normal's (unchanged without ``df``). Fewer than
    one df (as many shapes as the law has parameters between them) count as one: t_1's
    quantile (x6.5 at 95%) says the spread is barely estimated without an infinite bound."""
    if ci is None or df is None or not math.isfinite(df):
        return ci
    tail = (1 + confidence) / 2
    scale = float(student_t.ppf(tail, max(df, 1.0)) / norm.ppf(tail))
    return [estimate - scale * (estimate - ci[0]), estimate + scale * (ci[1] - estimate)]


def noise_structure(log_loss: np.ndarray, fitted_log: np.ndarray, jac: np.ndarray,
                    shape: np.ndarray, point: np.ndarray, theta: np.ndarray | None = None
                    ) -> NoiseStructure | None:
    """The components and resampling pools from a law's fit (log values per run, its
    Jacobian), or None when shapes and runs cannot be told apart."""
    residual = log_loss - fitted_log
    terms = anova_terms(residual, jac, shape)  # once: the components and a's df share it
    found = None if terms is None else _components(terms)
    if found is None:
        return None
    su2, se2 = found
    sd_seed, replicated = seed_sd(log_loss, point)
    counts = np.bincount(shape)
    components = VarianceComponents(
        seed_sd=sd_seed, shape_sd=math.sqrt(su2), run_sd=math.sqrt(se2),
        n_shapes=int(counts.size), n_replicated_points=replicated, n_runs=int(residual.size),
        method="seed_sd: pooled within-point SD of replicates (one-way ANOVA); shape_sd, "
               "run_sd: ANOVA estimators from the Approach 3 law's log residuals grouped by "
               "shape, adjusted for its fitted parameters (Henderson's method III)")
    means = np.bincount(shape, residual) / counts
    within = (residual - means[shape])[counts[shape] > 1] * \
        np.sqrt(counts[shape] / np.maximum(counts[shape] - 1, 1))[counts[shape] > 1]
    a_df = None if theta is None else _satterthwaite(terms, jac, shape, a_gradient(theta))
    return NoiseStructure(components, shape, _rescaled(means, su2), _rescaled(within, se2),
                          fitted_log, theta, a_df)


def a_gradient(theta: np.ndarray) -> np.ndarray:
    """Gradient of ``a = beta / (alpha + beta)`` with respect to (ln A, ln B, ln E, alpha,
    beta)."""
    alpha, beta = theta[3], theta[4]
    return np.array([0.0, 0.0, 0.0, -beta, alpha]) / (alpha + beta) ** 2


def _rescaled(values: np.ndarray, variance: float) -> np.ndarray:
    """``values`` centred and scaled so that their mean square is ``variance``."""
    centred = values - values.mean()
    ms = float((centred ** 2).mean())
    if variance <= 0 or ms <= 0:
        return np.zeros(max(values.size, 1))
    return centred * math.sqrt(variance / ms)


def law_structure(fit: ParametricFit, n, d, loss, shape: np.ndarray, budgets: np.ndarray
                  ) -> NoiseStructure | None:
    """``noise_structure`` from an Approach 3 fit of runs ``(n, d, loss)`` at ``budgets``."""
    log_n, log_d, log_loss = _logs(n, d, loss)
    pred, p = _predict_log(np.array(fit.theta)[None], log_n, log_d)
    jac = _jacobian(p, log_n, log_d)[0].T                 # (runs, 5)
    return noise_structure(log_loss, pred[0], jac, shape, point_index(budgets, shape),
                           np.array(fit.theta, float))


def bootstrap_parametric_structured(fit: ParametricFit, n, d, structure: NoiseStructure,
                                    n_boot: int = 1000, seed: int = 0,
                                    delta: float = HUBER_DELTA, chunk: int = 256,
                                    one_step_min_points: int = ONE_STEP_MIN_POINTS
                                    ) -> np.ndarray:
    """Approach 3's thetas (n_boot, 5) refitted, warm-started at ``fit``, on resamples
    ``log L(fit) + structure.draw()``: the law's fitted values plus shape and run effects.

    At most 200 iterations a resample (the run-resampling bootstrap allows 500): on FLAME's
    law, whose beta (0.95) leaves a flat direction, 500 took twice the time and moved no
    percentile of a by 1e-4 (the largest change of one resample's a: 0.003)."""
    log_n, log_d = np.log(np.asarray(n, float)), np.log(np.asarray(d, float))
    fitted, _ = _predict_log(np.array(fit.theta)[None], log_n, log_d)
    rng = np.random.default_rng(seed)
    if log_n.size >= one_step_min_points:
        return _one_step(fit, log_n, log_d, structure, n_boot, rng, delta)
    chunk = min(chunk, row_chunks(n_boot, 5 * log_n.size)[0].stop)
    out = []
    for lo in range(0, n_boot, chunk):
        size = min(chunk, n_boot - lo)
        log_loss = fitted + structure.draw(rng, size)
        start = np.repeat(np.array(fit.theta)[None], size, axis=0)
        theta, _ = lm_irls(start, log_n, log_d, log_loss, None, delta, max_iter=200,
                           rtol=1e-11)
        out.append(theta)
    return np.concatenate(out)


def _one_step(fit: ParametricFit, log_n: np.ndarray, log_d: np.ndarray,
              structure: NoiseStructure, n_boot: int, rng: np.random.Generator,
              delta: float) -> np.ndarray:
    """Thetas by one Newton step from ``fit`` on each resample (``one_step_bootstrap``'s
    k-step bootstrap, for many points): at ``fit`` a resample's residuals are minus its
    drawn effects, so its Huber gradient and curvature need no refit."""
    theta = np.array(fit.theta)
    _, p = _predict_log(theta[None], log_n, log_d)
    jac = _jacobian(p, log_n, log_d)[0]                       # (5, n)
    curv = (jac[:, None] * jac[None]).reshape(25, -1).T       # (n, 25)
    out = np.empty((n_boot, 5))
    for rows in row_chunks(n_boot, log_n.size):
        effects = structure.draw(rng, rows.stop - rows.start)
        hess = ((np.abs(effects) <= delta) @ curv).reshape(-1, 5, 5) + 1e-12 * np.eye(5)
        grad = np.clip(-effects, -delta, delta) @ jac.T
        out[rows] = theta - np.linalg.solve(hess, grad[..., None])[..., 0]
    return out

"""Approach 3: the parametric law ``L(N, D) = E + A/N^alpha + B/D^beta`` fitted to log loss.

Method of Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models", section
3.3 and appendix D.2, as replicated by Besiroglu et al. (2024), "Chinchilla Scaling: A
replication attempt": parameters ``theta = (a, b, e, alpha, beta)`` with ``A = exp(a)``,
``B = exp(b)``, ``E = exp(e)``; prediction ``log L = LSE(a - alpha.log N, b - beta.log D, e)``;
objective the Huber loss (delta = 1e-3) of ``log L_pred - log L`` summed over points.

Speed (so that thousands of bootstrap refits are routine):
- starts by variable projection: for fixed (alpha, beta) the law is linear in (E, A, B); a
  weighted linear least-squares solve per (alpha, beta) pair of a dense grid, all at once,
  ranks the whole landscape in one vectorised pass;
- a batched damped Gauss-Newton on the Huber objective (an IRLS majoriser step and a Newton
  step on the points inside the Huber zone, the better one kept), with analytic Jacobians of
  the log-sum-exp form, refines many starts or many bootstrap resamples (as multinomial
  point weights) in the same numpy arrays;
- scipy's L-BFGS-B with the analytic gradient polishes the best candidates.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber

from sweep.law import Law

HUBER_DELTA = 1e-3
# Largest (rows x points) working array of a batched evaluation: 2^20 doubles = 8 MB, so a
# fit's memory stays flat in the number of points (issue 11: 16 GB at 100,000 rows before).
CHUNK_ELEMENTS = 1 << 20
# From this many points the bootstrap takes one Newton step per resample instead of a full
# refit (one_step_bootstrap): 1,000 refits of 9,600 points take 10 s (minutes at 100,000).
# Measured on synthetic sweeps (0.5% noise, 5x the Huber delta) against refits, one-step
# standard errors are 3% off at 9,600 points but 6-23% too wide at 2,500-4,000: the Huber
# loss's curvature is a count of points inside the zone, so the step needs many points.
ONE_STEP_MIN_POINTS = 10_000  # the default of fit.one_step_min_points (analysis.settings)
# VarPro start ranking: at most this many (candidate x point) Huber evaluations (0.4 s); all
# 1,600 grid candidates up to 10,000 points, the best by least squares beyond.
HUBER_RANK_EVALS = 1 << 24
PARAM_NAMES = ("a", "b", "e", "alpha", "beta")
# C = 6.N.D (Kaplan et al. 2020; Hoffmann et al. 2022): the convention of the closed-form
# optimum (N_opt, D_opt on a budget) and of points given with no tokens and no plan (a plain
# CSV, synthetic sweeps). Runs of a plan carry their tokens, from the study's FLOP formula.
FLOPS_PER_PARAM_TOKEN = 6.0


def tokens_6nd(budget, n):
    """Tokens ``C / (6 N)``: for points without a plan only (``FLOPS_PER_PARAM_TOKEN``)."""
    return budget / (FLOPS_PER_PARAM_TOKEN * n)


@dataclass(frozen=True)
class ParametricFit:
    """A fitted ``L(N, D) = E + A/N^alpha + B/D^beta``."""

    theta: tuple[float, float, float, float, float]
    """``(a, b, e, alpha, beta)``: log A, log B, log E and the two exponents."""
    objective: float
    """Summed Huber loss of the log-loss residuals at ``theta``."""
    n_points: int
    """Number of (N, D, loss) points fitted."""

    @property
    def A(self) -> float:
        return math.exp(self.theta[0])

    @property
    def B(self) -> float:
        return math.exp(self.theta[1])

    @property
    def E(self) -> float:
        return math.exp(self.theta[2])

    @property
    def alpha(self) -> float:
        return self.theta[3]

    @property
    def beta(self) -> float:
        return self.theta[4]

    @property
    def a(self) -> float:
        """Exponent of ``N_opt ~ C^a`` (Hoffmann et al. eq. 4): beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of ``D_opt ~ C^b``: alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    def optimum(self, budget: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(N_opt, D_opt, L_opt)`` at FLOPs ``budget`` under ``C = 6.N.D`` (Hoffmann eq. 4)."""
        return closed_form_optimum(np.array(self.theta)[None], np.asarray(budget, float))

    def law(self) -> Law:
        """The fitted law (``sweep.law``: its one definition)."""
        return Law(self.E, self.A, self.B, self.alpha, self.beta)

    def predict(self, n: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Predicted loss at parameters ``n`` and tokens ``d``."""
        return self.law().loss(np.asarray(n, float), np.asarray(d, float))

    def as_dict(self) -> dict:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
                "a": self.a, "b": self.b, "objective": self.objective,
                "n_points": self.n_points}


def closed_form_optimum(theta: np.ndarray, budget: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N_opt, D_opt, L_opt for each row of ``theta`` (k, 5) and each budget: arrays (k, m).

    Minimising ``A/N^alpha + B/D^beta`` subject to ``6.N.D = C`` gives ``N_opt = G.(C/6)^a``,
    ``D_opt = (C/6)^b / G`` with ``G = (alpha.A / (beta.B))^(1/(alpha+beta))`` (Hoffmann et
    al. 2022, eq. 4). Squeezed to 1-D when ``theta`` has one row.
    """
    theta = np.atleast_2d(theta)
    a_, b_, e_, alpha, beta = (theta[:, i:i + 1] for i in range(5))
    log_c6 = np.log(np.atleast_1d(budget) / FLOPS_PER_PARAM_TOKEN)[None, :]
    log_g = (np.log(alpha / beta) + a_ - b_) / (alpha + beta)
    log_n = log_g + beta / (alpha + beta) * log_c6
    log_d = log_c6 - log_n
    loss = np.exp(e_) + np.exp(a_ - alpha * log_n) + np.exp(b_ - beta * log_d)
    out = np.exp(log_n), np.exp(log_d), loss
    return tuple(x[0] for x in out) if theta.shape[0] == 1 else out


def _predict_log(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """log L_pred (k, n) and the softmax weights (3, k, n) of its three LSE terms."""
    # Three separate (k, n) arrays: reductions over a trailing axis of 3 are slow in numpy.
    z1 = theta[:, 0:1] - theta[:, 3:4] * log_n
    z2 = theta[:, 1:2] - theta[:, 4:5] * log_d
    z3 = theta[:, 2:3]
    top = np.maximum(np.maximum(z1, z2), z3)
    s = np.empty((3,) + top.shape)
    for i, z in enumerate((z1, z2, z3)):
        np.exp(np.subtract(z, top, out=s[i]), out=s[i])
    total = s[0] + s[1] + s[2]
    s /= total
    return top + np.log(total), s


def _jacobian(p: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """d log L_pred / d theta, laid out (k, 5, n), from the LSE softmax weights (3, k, n)."""
    jac = np.empty((p.shape[1], 5, p.shape[2]))
    jac[:, :3] = np.swapaxes(p, 0, 1)
    np.multiply(p[0], -log_n, out=jac[:, 3])
    np.multiply(p[1], -log_d, out=jac[:, 4])
    return jac


def huber_objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray,
                    log_loss: np.ndarray, weights: np.ndarray | None = None,
                    delta: float = HUBER_DELTA) -> np.ndarray:
    """Summed (weighted) Huber loss of log residuals for each row of ``theta`` (k,)."""
    theta = np.atleast_2d(theta)
    out = np.empty(theta.shape[0])
    for rows in row_chunks(theta.shape[0], log_n.size):
        pred, _ = _predict_log(theta[rows], log_n, log_d)
        h = huber(delta, pred - log_loss)
        if weights is not None:
            h = h * (weights if np.ndim(weights) == 1 else weights[rows])
        out[rows] = h.sum(axis=-1)
    return out


def row_chunks(rows: int, width: int, budget: int = CHUNK_ELEMENTS) -> list[slice]:
    """Slices of ``rows`` such that a (rows, width) working array holds <= ``budget`` values."""
    step = max(1, budget // max(width, 1))
    return [slice(lo, min(lo + step, rows)) for lo in range(0, rows, step)]


def _value_and_grad(theta: np.ndarray, log_n, log_d, log_loss, delta):
    pred, p = _predict_log(theta[None], log_n, log_d)
    r = pred[0] - log_loss
    psi = np.clip(r, -delta, delta)  # Huber's derivative
    return float(huber(delta, r).sum()), _jacobian(p, log_n, log_d)[0] @ psi


def lm_irls(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray,
            weights: np.ndarray | None = None, delta: float = HUBER_DELTA,
            max_iter: int = 200, rtol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Batched damped Gauss-Newton on the Huber objective from each row of ``theta`` (k, 5).

    Two candidate steps per iteration, the better one kept when it lowers that row's objective:
    - IRLS: minimises the quadratic majoriser ``sum w.min(1, delta/|r|).r^2 / 2`` of the Huber
      loss (always a descent direction, but linear convergence when delta is small);
    - Newton: the Huber loss's own curvature (only points with |r| <= delta), which converges
      in a few steps once the set of such points has settled.
    Both are Levenberg-Marquardt damped by the IRLS diagonal. ``weights`` (k, n) are per-row
    point multiplicities (bootstrap counts); ``log_loss`` is one vector (n,) or one per row
    (k, n) (resampled losses). Converged rows leave the working arrays.
    """
    theta = np.array(theta, float, copy=True)
    k = theta.shape[0]
    w = np.ones((k, log_n.size)) if weights is None else np.asarray(weights, float)
    pred, p = _predict_log(theta, log_n, log_d)
    f = (huber(delta, pred - log_loss) * w).sum(axis=1)
    out_theta, out_f = theta.copy(), f.copy()
    ids, lam, eye = np.arange(k), np.full(k, 1e-3), np.eye(5)
    for _ in range(max_iter):
        r = pred - log_loss
        jac = _jacobian(p, log_n, log_d)
        jac_t = np.swapaxes(jac, 1, 2)
        jw = jac * (w * np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300)))[:, None, :]
        grad = (jw @ r[..., None])[..., 0]
        hess_irls = jw @ jac_t
        hess_newton = (jac * (w * (np.abs(r) <= delta))[:, None, :]) @ jac_t
        damp = (lam[:, None] * np.einsum("kjj->kj", hess_irls) + 1e-12)[..., None] * eye
        best = None
        for hess in (hess_irls, hess_newton):
            trial = theta + np.linalg.solve(hess + damp, -grad[..., None])[..., 0]
            t_pred, t_p = _predict_log(trial, log_n, log_d)
            t_f = (huber(delta, t_pred - log_loss) * w).sum(axis=1)
            t_f = np.where(np.isfinite(t_f), t_f, np.inf)
            if best is None:
                best = [trial, t_pred, t_p, t_f]
                continue
            m = t_f < best[3]
            best[0][m], best[1][m], best[2][:, m], best[3][m] = trial[m], t_pred[m], \
                t_p[:, m], t_f[m]
        trial, t_pred, t_p, t_f = best
        better = t_f < f
        gain = np.where(better, f - t_f, 0.0)
        theta[better], pred[better], f[better] = trial[better], t_pred[better], t_f[better]
        p[:, better] = t_p[:, better]
        lam = np.where(better, np.maximum(lam / 3.0, 1e-9), lam * 4.0)
        out_theta[ids], out_f[ids] = theta, f
        # A row stops when an accepted step gains almost nothing, or its damping explodes.
        keep = ~((better & (gain <= rtol * f)) | (lam > 1e12))
        if not keep.all():
            if not keep.any():
                break
            ids, theta, pred, p, f, w, lam = (ids[keep], theta[keep], pred[keep], p[:, keep],
                                              f[keep], w[keep], lam[keep])
            if log_loss.ndim == 2:
                log_loss = log_loss[keep]
    return out_theta, out_f


def varpro_starts(log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray,
                  delta: float = HUBER_DELTA, grid: int = 40, keep: int = 12) -> np.ndarray:
    """The ``keep`` best starts from a (alpha, beta) grid with (E, A, B) solved linearly.

    For fixed exponents, ``L = E + A.x + B.y`` (x = N^-alpha, y = D^-beta) is linear; a
    relative least-squares solve ``min sum((E + A.x + B.y)/L - 1)^2`` (close to the log-loss
    residual) gives (E, A, B) for every pair at once. Candidates are ranked by the Huber
    objective itself; with many points only the ``HUBER_RANK_EVALS / points`` best by that
    least-squares criterion (exact from the normal equations, no pass over the points) are.
    """
    exps = np.linspace(0.05, 2.0, grid)
    alpha, beta = (g.ravel() for g in np.meshgrid(exps, exps, indexing="ij"))
    gram, rhs = _varpro_normal_equations(exps, log_n, log_d, np.exp(-log_loss))
    coef = np.linalg.solve(gram + 1e-12 * np.eye(3), rhs[..., None])[..., 0]
    coef = np.maximum(coef, 1e-6 * np.exp(log_loss).min())  # the law needs E, A, B > 0
    theta = np.stack([np.log(coef[:, 1]) + alpha * log_n.min(),
                      np.log(coef[:, 2]) + beta * log_d.min(),
                      np.log(coef[:, 0]), alpha, beta], axis=1)
    ranked = max(keep, HUBER_RANK_EVALS // log_n.size)
    if ranked < theta.shape[0]:
        # sum((c.row - 1)^2) = c'Gc - 2c'r + n for each candidate's coefficients c.
        sq = np.einsum("ki,kij,kj->k", coef, gram, coef) - 2 * (coef * rhs).sum(axis=1)
        theta = theta[np.argsort(sq)[:ranked]]
    obj = huber_objective(theta, log_n, log_d, log_loss, delta=delta)
    return theta[np.argsort(obj)[:keep]]


def _varpro_normal_equations(exps: np.ndarray, log_n: np.ndarray, log_d: np.ndarray,
                             inv_loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normal equations (grid^2, 3, 3) and right-hand sides (grid^2, 3) of the VarPro solves.

    The design row of a point is ``(1, x, y) / L``; its Gram matrix needs only sums over
    points of products of x (one row per alpha) and y (one row per beta), so memory is
    O(grid.n), not O(grid^2.n) as a (pairs, points, 3) design would be (3.8 GB at 100,000
    points). Columns scaled to max 1 keep the equations well conditioned for any exponent.
    """
    x = np.exp(-exps[:, None] * (log_n - log_n.min()))
    y = np.exp(-exps[:, None] * (log_d - log_d.min()))
    u2 = inv_loss ** 2
    g = exps.size
    sx, sy, sxx, syy = x @ u2, y @ u2, (x * x) @ u2, (y * y) @ u2
    sxy = (x * u2) @ y.T
    gram = np.empty((g, g, 3, 3))
    gram[..., 0, 0] = u2.sum()
    gram[..., 0, 1] = gram[..., 1, 0] = sx[:, None]
    gram[..., 0, 2] = gram[..., 2, 0] = sy[None, :]
    gram[..., 1, 1] = sxx[:, None]
    gram[..., 2, 2] = syy[None, :]
    gram[..., 1, 2] = gram[..., 2, 1] = sxy
    rhs = np.empty((g, g, 3))
    rhs[..., 0], rhs[..., 1], rhs[..., 2] = inv_loss.sum(), (x @ inv_loss)[:, None], \
        (y @ inv_loss)[None, :]
    return gram.reshape(g * g, 3, 3), rhs.reshape(g * g, 3)


def _polish(theta0: np.ndarray, log_n, log_d, log_loss, delta) -> tuple[np.ndarray, float]:
    res = minimize(_value_and_grad, theta0, args=(log_n, log_d, log_loss, delta), jac=True,
                   method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000})
    return res.x, float(res.fun)


def _logs(n, d, loss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = [np.asarray(v, float) for v in (n, d, loss)]
    if not all(np.all(np.isfinite(v) & (v > 0)) for v in arrays):
        raise ValueError("parametric fit: n, tokens and loss must be positive and finite")
    return tuple(np.log(v) for v in arrays)


def fit_parametric(n, d, loss, delta: float = HUBER_DELTA, grid: int = 40,
                   keep: int = 12, polish: int = 3) -> ParametricFit:
    """Fit the law to points ``(n, d, loss)``: VarPro starts, batched LM, L-BFGS-B polish."""
    log_n, log_d, log_loss = _logs(n, d, loss)
    starts = varpro_starts(log_n, log_d, log_loss, delta, grid, keep)
    # Rows are independent: chunks bound the (starts, 5, points) Jacobians' memory.
    parts = [lm_irls(starts[rows], log_n, log_d, log_loss, delta=delta)
             for rows in row_chunks(len(starts), 5 * log_n.size)]
    refined, obj = (np.concatenate(v) for v in zip(*parts))
    best = [_polish(refined[i], log_n, log_d, log_loss, delta) for i in np.argsort(obj)[:polish]]
    theta, value = min(best, key=lambda pair: pair[1])
    return ParametricFit(tuple(float(v) for v in theta), value, int(log_n.size))


def chinchilla_grid() -> np.ndarray:
    """The 4,500 starts of Hoffmann et al. as used by Besiroglu et al. (2024): (a, b, e, alpha,
    beta) with alpha, beta in {0, .5, ..., 2}, e in {-1, -.5, ..., 1}, a, b in {0, 5, ..., 25}."""
    ab = np.arange(0, 30, 5.0)
    e = np.arange(-1, 1.5, 0.5)
    ex = np.arange(0, 2.5, 0.5)
    return np.array(list(itertools.product(ab, ab, e, ex, ex)))


def fit_parametric_grid(n, d, loss, delta: float = HUBER_DELTA) -> ParametricFit:
    """The plain reference method: L-BFGS-B from each of the 4,500 grid starts, keep the best.

    Kept as the baseline the fast fit is benchmarked and tested against.
    """
    log_n, log_d, log_loss = _logs(n, d, loss)
    best_theta, best = None, math.inf
    for start in chinchilla_grid():
        res = minimize(_value_and_grad, start, args=(log_n, log_d, log_loss, delta), jac=True,
                       method="L-BFGS-B")
        if res.fun < best:
            best_theta, best = res.x, float(res.fun)
    return ParametricFit(tuple(float(v) for v in best_theta), best, int(log_n.size))


def bootstrap_parametric(fit: ParametricFit, n, d, loss, groups: np.ndarray | None = None,
                         n_boot: int = 1000, seed: int = 0, delta: float = HUBER_DELTA,
                         chunk: int = 256, one_step_min_points: int | None = None
                         ) -> np.ndarray:
    """Refit on ``n_boot`` resamples (k, 5 thetas), warm-started at ``fit``.

    Points are resampled with replacement within each group (budget) when ``groups`` is
    given, else over all points; a resample is a vector of multiplicities, so all refits run
    in one batched solve (in chunks of ``chunk`` rows: small arrays stay in cache). Measured
    against an independent multi-start fit of each resample, refits stopped at 100 iterations
    (rtol 1e-9) left 15% of the demo's resamples short of their optimum; at 500 (1e-11) none,
    in 2x the time. On FLAME-MoE's 48 runs 10% of resamples still end in another basin than
    their own fit's (4 extra VarPro starts per resample fix half of those at 4x the cost).
    From ``one_step_min_points`` (default ONE_STEP_MIN_POINTS) points on, each resample
    takes one Newton step instead (``one_step_bootstrap``).
    """
    log_n, log_d, log_loss = _logs(n, d, loss)
    rng = np.random.default_rng(seed)
    if log_n.size >= (one_step_min_points or ONE_STEP_MIN_POINTS):
        return one_step_bootstrap(fit, log_n, log_d, log_loss, groups, n_boot, rng, delta)
    counts = resample_counts(log_n.size, groups, n_boot, rng)
    chunk = min(chunk, row_chunks(n_boot, 5 * log_n.size)[0].stop)
    out = []
    for lo in range(0, n_boot, chunk):
        w = counts[lo:lo + chunk]
        start = np.repeat(np.array(fit.theta)[None], w.shape[0], axis=0)
        theta, _ = lm_irls(start, log_n, log_d, log_loss, w, delta, max_iter=500, rtol=1e-11)
        out.append(theta)
    return np.concatenate(out)


def one_step_bootstrap(fit: ParametricFit, log_n: np.ndarray, log_d: np.ndarray,
                       log_loss: np.ndarray, groups: np.ndarray | None, n_boot: int,
                       rng: np.random.Generator, delta: float = HUBER_DELTA) -> np.ndarray:
    """Bootstrap thetas (n_boot, 5) by one Newton step from ``fit`` on each resample.

    The k-step bootstrap with k = 1 (Davidson & MacKinnon 1999; Andrews 2002, Econometrica
    70, "Higher-order improvements of a computationally attractive k-step bootstrap for
    extremum estimators"): with many points each resample's optimum is within O(1/n) of one
    Newton step from the full-data fit, and that step needs only each point's gradient and
    curvature at ``fit``, so a resample costs two (points)-long dot products instead of a
    refit: 1,000 resamples of 100,000 points take seconds, where refits took minutes.
    The curvature is the Huber loss's own (points inside the Huber zone), as in ``lm_irls``.
    """
    theta = np.array(fit.theta)
    pred, p = _predict_log(theta[None], log_n, log_d)
    r = pred[0] - log_loss
    jac = _jacobian(p, log_n, log_d)[0]                       # (5, n)
    grad = (jac * np.clip(r, -delta, delta)).T               # (n, 5): per-point gradients
    inside = np.abs(r) <= delta
    curv = (jac[:, None] * jac[None] * inside).reshape(25, -1).T  # (n, 25)
    out = np.empty((n_boot, 5))
    for rows in row_chunks(n_boot, log_n.size):
        w = _counts_by_bincount(log_n.size, groups, rows.stop - rows.start, rng)
        hess = (w @ curv).reshape(-1, 5, 5) + 1e-12 * np.eye(5)
        out[rows] = theta - np.linalg.solve(hess, (w @ grad)[..., None])[..., 0]
    return out


def _counts_by_bincount(n_points: int, groups: np.ndarray | None, n_boot: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Multiplicities like ``resample_counts``, drawn as indices and counted (2.5x faster than
    numpy's multinomial for thousands of points per group)."""
    groups = np.zeros(n_points, int) if groups is None else np.asarray(groups)
    drawn = [members[rng.integers(0, members.size, (n_boot, members.size))]
             for members in (np.flatnonzero(groups == g) for g in np.unique(groups))]
    flat = (np.concatenate(drawn, axis=1) + np.arange(n_boot)[:, None] * n_points).ravel()
    return np.bincount(flat, minlength=n_boot * n_points).reshape(n_boot, n_points).astype(float)


def resample_counts(n_points: int, groups: np.ndarray | None, n_boot: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Multiplicities (n_boot, n_points) of a with-replacement resample within each group."""
    groups = np.zeros(n_points, int) if groups is None else np.asarray(groups)
    counts = np.zeros((n_boot, n_points))
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        counts[:, members] = rng.multinomial(members.size, np.full(members.size,
                                                                   1.0 / members.size), n_boot)
    return counts

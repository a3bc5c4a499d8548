"""Simulated studies: how precisely would a design measure the law, before any GPU runs?

A design is a set of planned runs (budget x family member, with the planner's tokens and cost
model), trained as independent runs or as WSD cooldown branches. For a prior law and a noise
model (``analysis.design.noise``: final loss = L(N, D).exp(error), the error a per-shape
offset shared by all runs of a shape, plus seed noise, part of it common to the branches of
one trunk), ``simulate`` draws ``replications`` studies of the design at once and fits every
one with the fitting code of ``flame fit``:

- Approach 2: ``analysis.fit.isoflop.fit_rows``, the vectorised parabolas and power laws that fit
  the data and every bootstrap resample, given the replications as loss rows;
- Approach 3: ``analysis.fit.parametric.lm_irls``, the batched damped Gauss-Newton on the Huber
  objective that refits ``flame fit``'s bootstrap resamples, warm-started at the prior law (as
  the bootstrap is at the fit). Each replication has its own losses; ``lm_irls`` takes one loss
  vector and per-row point weights, so a chunk of replications is fitted as one problem with
  their points side by side and block-diagonal weights (row r weighs only its own block).

The spread of the replications' exponent a is the design's predicted precision: the 95%
half-width is half the 2.5-97.5 percentile range, the bias the median minus the true a.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from analysis.design.noise import NoiseModel, draw_log_errors, prior_components, resolve
from analysis.design.prior_checks import prior_warnings
from analysis.design_settings import DesignConfig
from analysis.fit.degenerate import FitWarning
from analysis.fit.isoflop import BudgetGroup, budget_groups, fit_rows
from analysis.fit.parametric import closed_form_optimum, lm_irls, row_chunks
from analysis.fit.result import read_fit
from analysis.fit.selection import member_n
from analysis.settings import FitSettings
from sweep.errors import ConfigError
from sweep.family import Member
from sweep.law import Law
from sweep.planner import PlannedRun

LAW_KEYS = ("E", "A", "B", "alpha", "beta")
# Approach 3 chunk: replications fitted side by side in one lm_irls problem. The work per
# iteration grows as chunk^2 x points (block-diagonal weights), the Python overhead as
# 1/chunk: 16 was the fastest on FLAME-sized designs (80 points).
A3_CHUNK = 16


@dataclass(frozen=True)
class PriorLaw:
    """The law and noise level designs are simulated from."""

    law: Law
    """True law of the simulated studies (N counted as fit.n_column counts it)."""
    noise: float
    """Total log-normal sigma of a run's final loss."""
    source: str
    """Where the law came from (a fit.json path, or design.law)."""
    noise_source: str
    """Where the noise level came from."""
    model: NoiseModel | None = None
    """The noise's split into shape misfit and seed noise (None: iid at ``noise``)."""
    warnings: tuple[FitWarning, ...] = ()
    """What makes the prior's law itself falsely precise (``prior_checks``): a fit of its
    data gives the same warnings."""

    @property
    def split(self) -> NoiseModel:
        """The noise model simulated (iid at ``noise`` when none was given)."""
        return self.model or NoiseModel(0.0, self.noise, 0.0, "iid")


@dataclass(frozen=True)
class Design:
    """A candidate design: the runs it trains and how it was made."""

    name: str
    """Label in the table and design.json."""
    runs: tuple[PlannedRun, ...]
    """The planner's runs (budget, member, tokens, cost)."""
    params: dict = field(default_factory=dict)
    """How the search built it (budgets, members_per_budget, span); empty for a plan."""
    branches: bool = False
    """Trained as WSD cooldown branches (one trunk per member and seed) instead of
    independent runs: the same points, another cost, seed noise partly shared per trunk."""
    branch_cost: dict | None = None
    """The planner's cost as branches (``analysis.design.branches.branch_cost``)."""

    @functools.cached_property
    def flops(self) -> float:
        """Training FLOPs of all runs (flops_per_token x tokens, the planner's count); as
        branches, trunks' and cooldowns' FLOPs."""
        if self.branches and self.branch_cost:
            return float(self.branch_cost["flops"])
        return float(sum(r.flops_per_token * r.tokens for r in self.runs))

    @property
    def gpu_hours(self) -> float:
        """Accelerator-hours at the cluster's assumed MFU (the planner's cost model)."""
        if self.branches and self.branch_cost:
            return float(self.branch_cost["gpu_hours"])
        return float(sum(r.gpu_hours for r in self.runs))

    @property
    def budgets(self) -> list[float]:
        """Distinct budgets, ascending."""
        return sorted({r.budget for r in self.runs})


def resolve_path(path: str) -> Path:
    """A path as given (absolute, or from the working directory), else one of the data files
    flame ships inside its package (``analysis/data/``, e.g. ``flame_moe_prior/fit.json``):
    found the same from a checkout and from an installed flame."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    shipped = resources.files("analysis").joinpath("data", *given.parts)
    return Path(str(shipped)) if shipped.is_file() else given


def load_prior(settings: DesignConfig, fit: FitSettings) -> PriorLaw:
    """The prior law and noise of ``settings``, or a ConfigError naming the field to fix."""
    if settings.prior:
        path = resolve_path(settings.prior)
        try:
            prior_fit = read_fit(path)
            a3 = prior_fit.approach3
        except ConfigError as err:
            raise ConfigError(f"design.prior={settings.prior}: {err}; give a `flame fit` "
                              "output") from None
        missing = [k for k in LAW_KEYS if not isinstance(getattr(a3, k), (int, float))]
        if missing:
            raise ConfigError(f"design.prior={settings.prior}: its approach3 has no "
                              f"{', '.join(missing)} (no Approach 3 law was fitted); give "
                              "another fit.json or design.law={E:..,A:..,B:..,alpha:..,beta:..}")
        law = a3.law()
        warnings = tuple(prior_warnings(prior_fit))
        source = str(path)
        components = prior_components(path)
        noise, noise_source = settings.noise, "design.noise"
        if noise is None and _both(settings):
            noise, noise_source = math.hypot(settings.shape_sd, settings.seed_sd), \
                "design.shape_sd and design.seed_sd"
        elif noise is None and components is not None:
            noise = math.hypot(components["shape_sd"], components["seed_sd"])
            noise_source = "the prior fit.json's variance_components"
        elif noise is None:
            noise = noise_from_huber(a3.objective, a3.n_points, fit.huber_delta)
            noise_source = "the prior fit's Huber objective per point"
    elif settings.law.given():
        law, source, components, warnings = settings.law.law(), "design.law", None, ()
        if settings.noise is None and not _both(settings):
            raise ConfigError("design.noise: not set; with design.law give the noise level, "
                              "e.g. design.noise=0.018 (or design.shape_sd and design.seed_sd)")
        noise, noise_source = (settings.noise, "design.noise") if settings.noise is not None \
            else (math.hypot(settings.shape_sd, settings.seed_sd),
                  "design.shape_sd and design.seed_sd")
    else:
        raise ConfigError("design.prior: no prior law; give design.prior=PATH/fit.json (e.g. "
                          "flame_moe_prior/fit.json, shipped) or design.law={E:..,A:..,B:..,"
                          "alpha:..,beta:..} with design.noise")
    bad = [k for k in LAW_KEYS if not getattr(law, k) > 0]
    if bad:
        raise ConfigError(f"design.law: {', '.join(bad)} must be > 0 (the law's parameters)")
    model = resolve(float(noise), settings.shape_sd, settings.seed_sd, settings.branch_shared,
                    components)
    return PriorLaw(law, model.total, source, noise_source, model, warnings)


def _both(settings: DesignConfig) -> bool:
    return settings.shape_sd is not None and settings.seed_sd is not None


def noise_from_huber(objective, n_points, delta: float) -> float:
    """The normal sigma whose expected Huber loss per point is the fit's (objective / points)."""
    if not objective or not n_points or objective <= 0:
        raise ConfigError("design.noise: not set and the prior fit.json has no Huber "
                          "objective to estimate it from; give design.noise=SIGMA (> 0)")
    per_point = objective / n_points

    def expected(sigma: float) -> float:
        z = delta / sigma
        inside = sigma ** 2 / 2 * (2 * norm.cdf(z) - 1 - 2 * z * norm.pdf(z))
        outside = 2 * (delta * sigma * norm.pdf(z) - delta ** 2 / 2 * norm.sf(z))
        return inside + outside - per_point

    return float(brentq(expected, 1e-7, 10.0))


@dataclass
class Points:
    """A design's runs as fit points: budget, N (fit.n_column), tokens, the law's loss.

    The simulated trainer's N is the active parameters under ``accounting``: with the defaults
    (flame, n_active_flame) the simulation and the trainer draw from the same law."""

    budget: np.ndarray
    n: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    shape: np.ndarray
    """Each run's shape (family member) index: runs of one shape share its misfit."""
    trunk: np.ndarray
    """Each run's trunk index (member, seed) when the design is branches, else -1."""

    @classmethod
    def of(cls, design: Design, law: Law, n_column: str) -> Points:
        budget = np.array([r.budget for r in design.runs], float)
        n = np.array([member_n(r.member.arch, n_column) for r in design.runs], float)
        tokens = np.array([r.tokens for r in design.runs], float)
        shape = _codes([r.member.name for r in design.runs])
        trunk = _codes([(r.member.name, r.replicate) for r in design.runs]) \
            if design.branches else np.full(len(design.runs), -1)
        return cls(budget, n, tokens, law.loss(n, tokens), shape, trunk)


def _codes(keys: list) -> np.ndarray:
    """Index of each key among the distinct keys, in first-seen order."""
    index: dict = {}
    return np.array([index.setdefault(k, len(index)) for k in keys], int)


def draw(points: Points, noise: NoiseModel | float, replications: int, seed: int
         ) -> np.ndarray:
    """Simulated final losses (replications, runs): the law times exp(error), the error drawn
    from the noise model (a float: iid at that sigma)."""
    if not isinstance(noise, NoiseModel):
        noise = NoiseModel(0.0, float(noise), 0.0, "iid")
    rng = np.random.default_rng(seed)
    return points.loss[None] * np.exp(draw_log_errors(noise, points.shape, points.trunk,
                                                      replications, rng))


def fit_approach2(points: Points, losses: np.ndarray, fit: FitSettings) -> dict[str, np.ndarray]:
    """Approach 2 on every replication: ln k and a of N_opt = k.C^a, loss law, usable rows."""
    budgets, _ = budget_groups(points.budget, fit.bucket_decades)
    groups, rows = [], []
    for b in np.unique(budgets):
        sel = budgets == b
        groups.append(BudgetGroup.of(b, points.n[sel], points.tokens[sel], points.loss[sel]))
        rows.append(losses[:, sel])
    out = fit_rows(groups, [np.ones_like(y) for y in rows], fit, rows)
    n_law, loss_law = out.laws["n"], out.laws["l"]
    return {"ln_k": n_law.intercept, "a": n_law.slope, "ln_kl": loss_law.intercept,
            "c": loss_law.slope, "ok": out.ok, "used_budgets": out.valid.sum(axis=1)}


def fit_approach3(points: Points, losses: np.ndarray, law: Law, fit: FitSettings
                  ) -> np.ndarray:
    """Approach 3's theta (replications, 5) on every replication, from the prior law."""
    log_n, log_d = np.log(points.n), np.log(points.tokens)
    width = points.n.size
    out = np.empty((losses.shape[0], 5))
    for rows in row_chunks(losses.shape[0], 1, A3_CHUNK):
        k = rows.stop - rows.start
        weights = np.kron(np.eye(k), np.ones(width))  # row r weighs block r only
        start = np.repeat(law.theta[None], k, axis=0)
        theta, _ = lm_irls(start, np.tile(log_n, k), np.tile(log_d, k),
                           np.log(losses[rows]).ravel(), weights, fit.huber_delta,
                           max_iter=500, rtol=1e-11)
        out[rows] = theta
    return out


def halfwidth(values: np.ndarray) -> float:
    """Half the 2.5-97.5 percentile range of the finite values (nan when fewer than 10)."""
    values = values[np.isfinite(values)]
    if values.size < 10:
        return math.nan
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(hi - lo) / 2


def nearest_members(n_opt: np.ndarray, budgets: np.ndarray, members: list[Member],
                    n_column: str) -> np.ndarray:
    """Index of the member selection would pick for each N_opt (rows, budgets), as
    ``analysis.fit.selection`` does: nearest in log N among the members eligible at the budget."""
    sizes = np.log(np.array([member_n(m.arch, n_column) for m in members], float))
    out = np.empty(n_opt.shape, int)
    for j, budget in enumerate(budgets):
        eligible = np.array([m.budgets is None or any(math.isclose(budget, b, rel_tol=1e-6)
                                                      for b in m.budgets) for m in members])
        if not eligible.any():
            eligible[:] = True
        dist = np.abs(np.log(n_opt[:, j])[:, None] - sizes[None])
        dist[:, ~eligible] = np.inf
        out[:, j] = dist.argmin(axis=1)
    return out


def simulate(design: Design, prior: PriorLaw, settings: DesignConfig, fit: FitSettings,
             members: list[Member] | None, approach3: bool = True) -> dict:
    """design.json's entry for ``design``: cost, and per approach the half-width, bias and
    usable fraction of a, selection's chance of the right member, extrapolation error."""
    points = Points.of(design, prior.law, fit.n_column)
    losses = draw(points, prior.split, settings.replications, settings.seed)
    law, targets = prior.law, np.array(sorted(fit.target_budgets), float)
    true_n, _, true_loss = (np.atleast_1d(v) for v in
                            closed_form_optimum(law.theta[None], targets))
    a2 = fit_approach2(points, losses, fit)
    ok2 = a2["ok"]
    n2 = np.exp(a2["ln_k"][:, None] + a2["a"][:, None] * np.log(targets)[None])
    l2 = np.exp(a2["ln_kl"][:, None] + a2["c"][:, None] * np.log(targets)[None])
    result = {"name": design.name, "runs": len(design.runs), "budgets": design.budgets,
              "flops": design.flops, "gpu_hours": design.gpu_hours, "params": design.params,
              "trained_as": "branches" if design.branches else "independent runs",
              "branch_cost": design.branch_cost if design.branches else None,
              "shapes": len({r.member.name for r in design.runs}),
              "seeds": 1 + max((r.replicate for r in design.runs), default=0),
              "a_true": law.a, "replications": settings.replications,
              "a_halfwidth": {"approach2": halfwidth(a2["a"][ok2])},
              "a_bias": {"approach2": _bias(a2["a"][ok2], law.a)},
              "usable": {"approach2": float(ok2.mean())},
              "extrapolation": {"budget": float(targets[-1]),
                                "approach2": _extrapolation(n2[ok2, -1], l2[ok2, -1],
                                                            true_n[-1], true_loss[-1])},
              "members": _members_by_budget(design)}
    p_member = {"approach2": _p_member(n2[ok2], targets, true_n, members, fit.n_column)}
    if approach3:
        theta = fit_approach3(points, losses, law, fit)
        a3 = theta[:, 4] / (theta[:, 3] + theta[:, 4])
        ok3 = np.isfinite(a3) & (theta[:, 3] > 0) & (theta[:, 4] > 0)
        n3, _, l3 = closed_form_optimum(theta[ok3], targets)
        result["a_halfwidth"]["approach3"] = halfwidth(a3[ok3])
        result["a_bias"]["approach3"] = _bias(a3[ok3], law.a)
        result["usable"]["approach3"] = float(ok3.mean())
        result["extrapolation"]["approach3"] = _extrapolation(n3[:, -1], l3[:, -1], true_n[-1],
                                                              true_loss[-1])
        p_member["approach3"] = _p_member(n3, targets, true_n, members, fit.n_column)
    # flame fit selects with Approach 3 when it has a law, so that is the headline p_member.
    result["p_member"] = p_member.get("approach3", p_member["approach2"])
    result["p_member_by_approach"] = p_member
    return result


def _bias(values: np.ndarray, truth: float) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values) - truth) if values.size else math.nan


def _extrapolation(n_pred: np.ndarray, loss_pred: np.ndarray, n_true: float,
                   loss_true: float) -> dict:
    """95% half-widths of log10(N_opt predicted / true) and of L_opt's relative error, and the
    median of each (their bias)."""
    log_ratio = np.log10(n_pred / n_true)
    rel = loss_pred / loss_true - 1
    return {"n_opt_log10_halfwidth": halfwidth(log_ratio), "n_opt_log10_bias":
            _bias(log_ratio, 0.0), "loss_rel_halfwidth": halfwidth(rel),
            "loss_rel_bias": _bias(rel, 0.0)}


def _p_member(n_pred: np.ndarray, targets: np.ndarray, true_n: np.ndarray,
              members: list[Member] | None, n_column: str) -> dict[str, float]:
    """Per target budget: the fraction of replications whose selection is the true law's."""
    if not members or n_pred.shape[0] == 0:
        return {}
    good = np.isfinite(n_pred).all(axis=1) & (n_pred > 0).all(axis=1)
    picked = nearest_members(np.where(good[:, None], n_pred, 1.0), targets, members, n_column)
    right = nearest_members(true_n[None], targets, members, n_column)[0]
    hits = (picked == right[None]) & good[:, None]
    return {f"{b:.3g}": float(hits[:, j].mean()) for j, b in enumerate(targets)}


def _members_by_budget(design: Design) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for run in design.runs:
        out.setdefault(f"{run.budget:.3g}", []).append(run.member.name)
    return out

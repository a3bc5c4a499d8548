"""The design optimiser: the cheapest design over the family and budgets that meets a target.

Candidates: every subset of the candidate budgets with at least ``min_budgets`` budgets, x
members per budget (``members_per_budget``; the largest budget, the dearest, chooses its own
number from the same list), x how far either side of the prior's optimum they
reach (``spans``): at each budget the members nearest to evenly spaced points of log N across
``N_opt(C) x 10^[-span, +span]``, x how many seeds each (budget, member) trains from
(``seeds``: the planner's replicates, each its own run with independent noise). Each candidate
is screened cheaply, then the cheapest that pass are simulated in full
(``analysis.design.simulate.simulate``) until one meets the target:

- Approach 3 screen: the asymptotic (sandwich) variance of the Huber M-estimator at the prior
  law, ``(E psi^2 / E psi'^2).(J'J)^-1`` for normal noise, mapped to a by the delta method:
  one 5x5 solve per single-seed candidate (R seeds: that half-width / sqrt(R), exactly);
- Approach 2 screen: the simulation itself (the parabolas are cheap).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from analysis.design.branches import BranchCoster
from analysis.design.simulate import (
    Design,
    Points,
    PriorLaw,
    draw,
    fit_approach2,
    halfwidth,
    simulate,
)
from analysis.design_settings import DesignConfig
from analysis.fit.parametric import closed_form_optimum
from analysis.fit.selection import member_n
from analysis.settings import FitSettings
from sweep.errors import ConfigError
from sweep.family import Member
from sweep.planner import PlannedRun, PlannerSettings, plan

Z95 = float(norm.ppf(0.975))


@dataclass
class SearchResult:
    """What the optimiser found."""

    best: dict
    """design.json entry of the chosen design (simulated in full)."""
    design: Design
    """The chosen design's runs."""
    target: float | None
    """The half-width it had to meet (None: a compute cap was given)."""
    screened: int
    """Candidates screened."""
    confirmed: list[dict]
    """Entries of every candidate simulated in full (the chosen one included)."""
    scores: list[float]
    """Each candidate's screened half-width, in the pool's order."""


def candidate_runs(budgets: list[float], members: list[Member], settings: PlannerSettings,
                   ctx: dict, seeds: int = 1) -> dict[float, list[PlannedRun]]:
    """Per budget, every family member the planner keeps there, each with ``seeds``
    replicates (members' own budget lists are ignored: the search places members itself)."""
    free = [dataclasses.replace(m, budgets=None) for m in members]
    # Points as independent runs, whatever planner.strategy says: a branch design's cost is
    # added afterwards (analysis/design_branches.py), its points are these.
    settings = dataclasses.replace(settings, seeds=seeds, strategy="independent")
    out: dict[float, list[PlannedRun]] = {}
    for budget in budgets:
        try:
            out[budget] = plan([budget], free, settings, ctx).runs
        except ConfigError:  # every member removed at this budget: it cannot be used
            continue
    return out


def pick(runs: list[PlannedRun], n_opt: float, k: int, span: float, n_column: str,
         sizes: np.ndarray | None = None) -> list[PlannedRun]:
    """``k`` runs nearest to k log-spaced points across N_opt.10^[-span, span], distinct
    (``sizes``: the runs' log10 N, when already known)."""
    if sizes is None:
        sizes = np.log10([member_n(r.member.arch, n_column) for r in runs])
    free = np.ones(len(runs), bool)
    chosen = []
    for target in math.log10(n_opt) + np.linspace(-span, span, k):
        dist = np.where(free, np.abs(sizes - target), np.inf)
        if not np.isfinite(dist).any():
            break
        i = int(dist.argmin())
        free[i] = False
        chosen.append(i)
    return [runs[i] for i in sorted(chosen, key=lambda i: sizes[i])]


def search_seeds(settings: DesignConfig, prior: PriorLaw) -> list[int]:
    """The seed counts the search tries: ``design.seeds``, else [1, 2, 4, 8] when the noise's
    split is known and [1] when it is not (under the iid model a seed's gain is an upper
    bound: it would average away misfit that seeds cannot)."""
    if settings.seeds is not None:
        return sorted(set(settings.seeds))
    return [1, 2, 4, 8] if prior.split.known else [1]


def candidates(prior: PriorLaw, by_budget: dict[float, list[PlannedRun]],
               settings: DesignConfig, n_column: str, coster: BranchCoster | None = None
               ) -> list[Design]:
    """Every searched design (see the module's docstring), cheapest first; with ``coster``
    each also as branches, where that is cheaper than independent runs."""
    budgets = sorted(by_budget)
    n_opt = dict(zip(budgets, np.atleast_1d(closed_form_optimum(
        prior.law.theta[None], np.array(budgets, float))[0])))
    first = {b: [r for r in by_budget[b] if r.replicate == 0] for b in budgets}
    log_n = {b: np.log10([member_n(r.member.arch, n_column) for r in first[b]])
             for b in budgets}

    @functools.cache
    def picked(budget: float, k: int, span: float) -> list[PlannedRun]:
        return pick(first[budget], n_opt[budget], k, span, n_column, log_n[budget])
    repeats = _replicates(by_budget)
    seen, out = set(), []
    sizes = settings.members_per_budget
    for size in range(settings.min_budgets, len(budgets) + 1):
        for subset in itertools.combinations(budgets, size):
            # The largest budget costs most: it gets its own number of members.
            for k, k_top, span in itertools.product(sizes, sizes, settings.spans):
                runs = [r for b in subset for r in picked(b, k_top if b == subset[-1] else k,
                                                          span)]
                key = tuple(r.run_id for r in runs)
                if key in seen or any(len([r for r in runs if r.budget == b]) < 3
                                      for b in subset):
                    continue
                seen.add(key)
                # One seed's branch cost; R seeds are R trunks per member, R times the cost.
                single = coster.cost(Design("", tuple(runs))) if coster else None
                params = {"budgets": list(subset), "members_per_budget": k,
                          "members_at_largest": k_top, "span_decades": span}
                name = (f"search: {len(subset)} budgets x {k} shapes ({k_top} at the "
                        f"largest), +-{span:g} dec")
                for seeds in search_seeds(settings, prior):
                    copies = [repeats[r.run_id][:seeds] for r in runs]
                    if any(len(c) < seeds for c in copies):
                        continue  # candidate_runs planned fewer replicates
                    design = Design(name + (f", {seeds} seeds" if seeds > 1 else ""),
                                    tuple(r for c in copies for r in c),
                                    dict(params, seeds=seeds))
                    out.append(design)
                    branch = branch_variant(design, coster, single and {
                        k: v * seeds for k, v in single.items()})
                    if branch is not None:
                        out.append(branch)
    return sorted(out, key=lambda d: d.flops)


def branch_variant(design: Design, coster: BranchCoster | None, cost: dict | None = None
                   ) -> Design | None:
    """The design trained as branches, when the planner can lay them out and that is cheaper
    (a member at one budget only is one trunk + one branch: no saving); ``cost``: its branch
    cost when already known."""
    if cost is None and coster is not None:
        cost = coster.cost(design)
    if cost is None or cost["flops"] >= design.flops * 0.999:
        return None
    return dataclasses.replace(design, name=design.name + ", as branches",
                               params=dict(design.params, branches=True), branches=True,
                               branch_cost=cost)


def _replicates(by_budget: dict[float, list[PlannedRun]]) -> dict[str, list[PlannedRun]]:
    """Replicate 0's run_id -> the (budget, member)'s runs in replicate order."""
    groups: dict[tuple[float, str], list[PlannedRun]] = {}
    for runs in by_budget.values():
        for r in runs:
            groups.setdefault((r.budget, r.member.name), []).append(r)
    out = {}
    for group in groups.values():
        group.sort(key=lambda r: r.replicate)
        out[group[0].run_id] = group
    return out


def influence(design: Design, prior: PriorLaw, fit: FitSettings) -> tuple[np.ndarray, Points]:
    """Each run's linear influence on Approach 3's a at the prior law (d a / d log loss_i by
    the delta method through least squares: J (J'J)^-1 grad a), or an empty array when J'J is
    singular."""
    pts = Points.of(design, prior.law, fit.n_column)
    law = prior.law
    terms = np.stack([law.A / pts.n ** law.alpha, law.B / pts.tokens ** law.beta,
                      np.full(pts.n.size, law.E)]) / pts.loss
    jac = np.stack([terms[0], terms[1], terms[2], -terms[0] * np.log(pts.n),
                    -terms[1] * np.log(pts.tokens)], axis=1)
    s = law.alpha + law.beta
    grad = np.array([0, 0, 0, -law.beta / s ** 2, law.alpha / s ** 2])
    try:
        return jac @ np.linalg.solve(jac.T @ jac, grad), pts
    except np.linalg.LinAlgError:
        return np.empty(0), pts


@functools.lru_cache(maxsize=64)
def _huber_variance(sigma: float, delta: float) -> float:
    return huber_variance(sigma, delta)


def huber_variance(sigma: float, delta: float) -> float:
    """E psi^2 / (E psi')^2 of the Huber loss for normal errors of SD sigma: the variance a
    point's error counts with in the M-estimator's sandwich (sigma^2 for least squares)."""
    z = delta / sigma
    inside = 2 * norm.cdf(z) - 1                       # E psi'
    psi2 = sigma ** 2 * (inside - 2 * z * norm.pdf(z)) + delta ** 2 * 2 * norm.sf(z)
    return psi2 / inside ** 2


def variance_pieces(design: Design, prior: PriorLaw, fit: FitSettings) -> tuple[float, float]:
    """(sum of v_i^2, sum over shapes of (sum of v_i)^2) of the influences v: a's asymptotic
    variance is ``own.vv + shape_sd^2.ss`` (see ``asymptotic_halfwidth``)."""
    v, pts = influence(design, prior, fit)
    if v.size == 0:
        return math.inf, math.inf
    groups = np.bincount(pts.shape, weights=v)
    return float(v @ v), float(groups @ groups)


def asymptotic_halfwidth(vv: float, ss: float, prior: PriorLaw, fit: FitSettings,
                         seeds: int = 1, branches: bool = False) -> float:
    """Approach 3's asymptotic 95% half-width of a from a single-seed design's pieces, for
    ``seeds`` copies of it, as independent runs or as branches.

    The Huber M-estimator's sandwich (J'J)^-1 J' S J (J'J)^-1 with S the errors' covariance
    under the noise model: a point's own variance counts at the Huber-weighted total
    (``huber_variance``), the covariance between runs of one shape at shape_sd^2 (for the
    Huber's near-sign psi the covariance of psi-values maps back to about that of the errors),
    between branches of one trunk at branch_shared.seed_sd^2 more. With R seeds the points'
    own part and the trunks' shrink as 1/R (R copies of J, R trunks per shape); the shapes'
    part does not: seeds never average the misfit away. With shape_sd = 0 this is the iid
    sandwich, the earlier screen.
    """
    if not math.isfinite(vv):
        return math.inf
    noise = prior.split
    own = _huber_variance(noise.total, fit.huber_delta) - noise.shape_sd ** 2
    trunk = noise.branch_shared * noise.seed_sd ** 2 if branches else 0.0
    var = (own - trunk) * vv / seeds + noise.shape_sd ** 2 * ss + trunk * ss / seeds
    return Z95 * math.sqrt(var) if var > 0 else math.inf


def linear_halfwidth(design: Design, prior: PriorLaw, fit: FitSettings) -> float:
    """Approach 3's asymptotic 95% half-width of a of any design (seeds and trunks as the
    design has them), the Huber sandwich under the noise model."""
    v, pts = influence(design, prior, fit)
    if v.size == 0:
        return math.inf
    noise = prior.split
    own = huber_variance(noise.total, fit.huber_delta) - noise.shape_sd ** 2
    shapes = np.bincount(pts.shape, weights=v)
    var = own * (v @ v) + noise.shape_sd ** 2 * (shapes @ shapes)
    if design.branches:
        trunk = noise.branch_shared * noise.seed_sd ** 2
        trunks = np.bincount(pts.trunk, weights=v)
        var += trunk * (trunks @ trunks - v @ v)
    return Z95 * math.sqrt(var) if var > 0 else math.inf


def screen(design: Design, prior: PriorLaw, settings: DesignConfig, fit: FitSettings
           ) -> float:
    """The cheap estimate of the design's half-width for ``settings.approach``."""
    if settings.approach == "approach3":
        return linear_halfwidth(design, prior, fit)
    pts = Points.of(design, prior.law, fit.n_column)
    a2 = fit_approach2(pts, draw(pts, prior.split, settings.replications, settings.seed), fit)
    return halfwidth(a2["a"][a2["ok"]]) if a2["ok"].mean() >= 0.9 else math.inf


def screen_all(pool: list[Design], prior: PriorLaw, settings: DesignConfig, fit: FitSettings
               ) -> list[float]:
    """``screen`` of every candidate. A design whose runs are all repeated R times has its
    single-seed design's influences, R times over, each / R (J'J is R times as large), so
    each distinct single-seed design is solved once and scaled (``asymptotic_halfwidth``)."""
    if settings.approach != "approach3":
        return [screen(d, prior, settings, fit) for d in pool]
    solved: dict[tuple[str, ...], tuple[float, float]] = {}
    out = []
    for design in pool:
        first = tuple(r for r in design.runs if r.replicate == 0)
        counts = set(Counter((r.budget, r.member.name) for r in design.runs).values())
        copies = counts.pop() if len(counts) == 1 else 0
        if not first or not copies or len(first) * copies != len(design.runs):
            out.append(linear_halfwidth(design, prior, fit))  # unevenly repeated: solve it
            continue
        key = tuple(r.run_id for r in first)
        if key not in solved:
            solved[key] = variance_pieces(Design("", first), prior, fit)
        out.append(asymptotic_halfwidth(*solved[key], prior, fit, copies, design.branches))
    return out


def optimise(prior: PriorLaw, pool: list[Design], settings: DesignConfig, fit: FitSettings,
             members: list[Member], target: float | None, cap: float | None) -> SearchResult:
    """The cheapest candidate meeting ``target`` (or the most precise within ``cap``)."""
    approach = settings.approach
    scores = screen_all(pool, prior, settings, fit)
    confirmed: list[dict] = []

    def full(i: int) -> dict:
        entry = simulate(pool[i], prior, settings, fit, members)
        confirmed.append(entry)
        return entry

    if target is not None:
        return dataclasses.replace(_cheapest(pool, scores, full, target, cap, settings,
                                             confirmed), scores=scores)
    within = [i for i in range(len(pool)) if pool[i].flops <= cap]
    if not within:
        raise ConfigError(f"design.max_flops: the compute cap {cap:.3g} FLOPs is below the "
                          f"cheapest searched design ({pool[0].flops:.3g} FLOPs); raise it")
    best = sorted(within, key=lambda i: scores[i])[:min(4, settings.confirm)]
    entries = [(full(i), i) for i in best]
    entry, i = min(entries, key=lambda e: e[0]["a_halfwidth"][approach])
    return SearchResult(entry, pool[i], None, len(pool), confirmed, scores)


def _cheapest(pool: list[Design], scores: list[float], full, target: float, cap: float | None,
              settings: DesignConfig, confirmed: list[dict]) -> SearchResult:
    """Simulate candidates cheapest first, skipping those whose screen, scaled by how far the
    simulations so far exceeded their screens, misses the target; then the most precise one."""
    approach = settings.approach
    eligible = [i for i in range(len(pool)) if cap is None or pool[i].flops <= cap]
    ratios: list[float] = []
    for i in eligible:  # pool is cheapest first
        if len(ratios) >= settings.confirm:
            break
        if scores[i] * (float(np.mean(ratios)) if ratios else 1.0) > target * 1.05:
            continue
        entry = full(i)
        ratios.append(entry["a_halfwidth"][approach] / scores[i])
        if entry["a_halfwidth"][approach] <= target and _usable(entry, approach):
            return SearchResult(entry, pool[i], target, len(pool), confirmed, [])
    if not eligible:
        raise ConfigError(f"design.max_flops: the compute cap {cap:.3g} FLOPs is below the "
                          f"cheapest searched design ({pool[0].flops:.3g} FLOPs); raise it")
    best = min(eligible, key=lambda i: scores[i])  # not the cheapest, but it may still meet it
    entry = full(best)
    if entry["a_halfwidth"][approach] <= target and _usable(entry, approach):
        return SearchResult(entry, pool[best], target, len(pool), confirmed, [])
    within = "" if cap is None else f" within design.max_flops={cap:.3g}"
    raise ConfigError(
        f"design.target_halfwidth={target:g}: no design in the family and budgets reaches "
        f"it{within}; the best reachable {approach} half-width of a is "
        f"{entry['a_halfwidth'][approach]:.3f} ({pool[best].name}, {pool[best].flops:.3g} "
        "FLOPs); ask for that or more, or widen design.budgets / design.seeds / the family")


def _usable(entry: dict, approach: str) -> bool:
    return entry["usable"][approach] >= 0.9

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
import itertools
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

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


def pick(runs: list[PlannedRun], n_opt: float, k: int, span: float, n_column: str
         ) -> list[PlannedRun]:
    """``k`` runs nearest to k log-spaced points across N_opt.10^[-span, span], distinct."""
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


def candidates(prior: PriorLaw, by_budget: dict[float, list[PlannedRun]],
               settings: DesignConfig, n_column: str) -> list[Design]:
    """Every searched design (see the module's docstring), cheapest first."""
    budgets = sorted(by_budget)
    n_opt = dict(zip(budgets, np.atleast_1d(closed_form_optimum(
        prior.law.theta[None], np.array(budgets, float))[0])))
    first = {b: [r for r in by_budget[b] if r.replicate == 0] for b in budgets}
    repeats = _replicates(by_budget)
    seen, out = set(), []
    sizes = settings.members_per_budget
    for size in range(settings.min_budgets, len(budgets) + 1):
        for subset in itertools.combinations(budgets, size):
            # The largest budget costs most: it gets its own number of members.
            for k, k_top, span in itertools.product(sizes, sizes, settings.spans):
                runs = [r for b in subset for r in pick(
                    first[b], n_opt[b], k_top if b == subset[-1] else k, span, n_column)]
                key = tuple(r.run_id for r in runs)
                if key in seen or any(len([r for r in runs if r.budget == b]) < 3
                                      for b in subset):
                    continue
                seen.add(key)
                params = {"budgets": list(subset), "members_per_budget": k,
                          "members_at_largest": k_top, "span_decades": span}
                name = f"search: {len(subset)} budgets x {k} (top {k_top}), +-{span:g} dec"
                for seeds in sorted(set(settings.seeds)):
                    copies = [repeats[r.run_id][:seeds] for r in runs]
                    if any(len(c) < seeds for c in copies):
                        continue  # candidate_runs planned fewer replicates
                    out.append(Design(name + (f", {seeds} seeds" if seeds > 1 else ""),
                                      tuple(r for c in copies for r in c),
                                      dict(params, seeds=seeds)))
    return sorted(out, key=lambda d: d.flops)


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


def linear_halfwidth(design: Design, prior: PriorLaw, fit: FitSettings) -> float:
    """Approach 3's asymptotic 95% half-width of a (Huber sandwich, delta method)."""
    pts = Points.of(design, prior.law, fit.n_column)
    law = prior.law
    terms = np.stack([law.A / pts.n ** law.alpha, law.B / pts.tokens ** law.beta,
                      np.full(pts.n.size, law.E)]) / pts.loss
    jac = np.stack([terms[0], terms[1], terms[2], -terms[0] * np.log(pts.n),
                    -terms[1] * np.log(pts.tokens)], axis=1)
    z = fit.huber_delta / prior.noise
    inside = 2 * norm.cdf(z) - 1                       # E psi'
    psi2 = prior.noise ** 2 * (inside - 2 * z * norm.pdf(z)) + \
        fit.huber_delta ** 2 * 2 * norm.sf(z)         # E psi^2
    try:
        cov = psi2 / inside ** 2 * np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        return math.inf
    s = law.alpha + law.beta
    grad = np.array([0, 0, 0, -law.beta / s ** 2, law.alpha / s ** 2])
    var = float(grad @ cov @ grad)
    return Z95 * math.sqrt(var) if var > 0 else math.inf


def screen(design: Design, prior: PriorLaw, settings: DesignConfig, fit: FitSettings
           ) -> float:
    """The cheap estimate of the design's half-width for ``settings.approach``."""
    if settings.approach == "approach3":
        return linear_halfwidth(design, prior, fit)
    pts = Points.of(design, prior.law, fit.n_column)
    a2 = fit_approach2(pts, draw(pts, prior.noise, settings.replications, settings.seed), fit)
    return halfwidth(a2["a"][a2["ok"]]) if a2["ok"].mean() >= 0.9 else math.inf


def screen_all(pool: list[Design], prior: PriorLaw, settings: DesignConfig, fit: FitSettings
               ) -> list[float]:
    """``screen`` of every candidate. Approach 3's screen of a design whose runs are all
    repeated R times is its single-seed screen / sqrt(R) exactly (J'J is R times as large), so
    each distinct single-seed design is solved once."""
    if settings.approach != "approach3":
        return [screen(d, prior, settings, fit) for d in pool]
    solved: dict[tuple[str, ...], float] = {}
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
            solved[key] = linear_halfwidth(Design("", first), prior, fit)
        out.append(solved[key] / math.sqrt(copies))
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

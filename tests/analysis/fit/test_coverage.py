"""Both approaches' 95% intervals cover the true exponent a on synthetic isoFLOP sweeps."""

from __future__ import annotations

import numpy as np

from analysis.design.synthetic import Law, isoflop_sweep
from analysis.fit.driver import parameter_samples
from analysis.fit.isoflop import fit_isoflop, interval
from analysis.fit.parametric import bootstrap_parametric, fit_parametric
from analysis.settings import FitSettings

SEEDS = 50
BUDGETS = np.geomspace(1e18, 1e21, 6)


def test_intervals_cover_the_true_exponent_in_90_percent_of_seeds():
    law, settings = Law(), FitSettings(bootstrap=200)
    hits = {"approach2": 0, "approach3": 0}
    for seed in range(SEEDS):
        points = isoflop_sweep(law, BUDGETS, per_budget=9, noise=0.005, seed=seed)
        iso = fit_isoflop(points, FitSettings(bootstrap=200, seed=seed))
        lo, hi = interval(iso.samples["exp_n"], settings)
        hits["approach2"] += lo <= law.a <= hi
        args = (points["n"], points["tokens"], points["loss"])
        fit = fit_parametric(*args)
        groups = np.unique(points["budget"], return_inverse=True)[1]
        thetas = bootstrap_parametric(fit, *args, groups=groups, n_boot=200, seed=seed)
        lo, hi = interval(parameter_samples(thetas)["a"], settings)
        hits["approach3"] += lo <= law.a <= hi
    assert hits["approach2"] >= 0.9 * SEEDS, hits
    assert hits["approach3"] >= 0.9 * SEEDS, hits


def test_approach2_residual_intervals_are_calibrated_where_pairs_are_not():
    # The demo's design: 5 budgets of 6 sizes within +-0.4 decades, scatter ~1/13 of the
    # loss rise across a budget. Measured (100 seeds): residual 93% coverage with half-width
    # 2.3 x the estimator's spread; pairs 99% with 3.3 x.
    law = Law()
    budgets = np.geomspace(1e18, 1e21, 5)
    hits, half = {"residual": 0, "pairs": 0}, {"residual": [], "pairs": []}
    estimates = []
    for seed in range(SEEDS):
        points = isoflop_sweep(law, budgets, per_budget=6, span_decades=0.4, noise=0.005,
                               seed=seed)
        for kind in hits:
            settings = FitSettings(bootstrap=200, seed=seed, approach2_bootstrap=kind)
            iso = fit_isoflop(points, settings)
            lo, hi = interval(iso.samples["exp_n"], settings)
            hits[kind] += lo <= law.a <= hi
            half[kind].append((hi - lo) / 2)
        estimates.append(iso.n_law.exponent)
    spread = np.std(estimates)
    assert hits["residual"] >= 0.86 * SEEDS, hits
    assert 1.5 * spread < np.median(half["residual"]) < 3.0 * spread, (half, spread)
    assert np.median(half["pairs"]) > 1.3 * np.median(half["residual"])

"""Both approaches' 95% intervals cover the true exponent a on synthetic isoFLOP sweeps."""

from __future__ import annotations

import numpy as np

from analysis.isoflop import fit_isoflop, interval
from analysis.parametric import bootstrap_parametric, fit_parametric
from analysis.report import parameter_samples
from analysis.settings import FitSettings
from analysis.synthetic import Law, isoflop_sweep

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

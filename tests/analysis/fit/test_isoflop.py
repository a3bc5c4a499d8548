"""Approach 2: parabolas, rejection reasons, bucketing, power laws, on data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.fit.isoflop import budget_groups, fit_isoflop
from analysis.settings import FitSettings

SETTINGS = FitSettings(bootstrap=200)


def _budget(budget, n, loss):
    n = np.asarray(n, float)
    return pd.DataFrame({"budget": budget, "n": n, "tokens": budget / (6 * n), "loss": loss})


def test_exact_parabolas_give_exact_power_law():
    # loss = 3 + 0.1 (ln N - ln N*)^2 with N* = 2e-3 C^0.6: Approach 2 must return a = 0.6.
    frames = []
    for c in (1e18, 1e19, 1e20):
        n_star = 2e-3 * c ** 0.6
        n = n_star * np.geomspace(0.3, 3.0, 7)
        frames.append(_budget(c, n, 3 + 0.1 * np.log(n / n_star) ** 2))
    fit = fit_isoflop(pd.concat(frames), FitSettings(bootstrap=50, window_decades=None))
    assert all(b.used for b in fit.budgets)
    assert fit.n_law.exponent == pytest.approx(0.6, abs=1e-9)
    assert fit.n_law.k == pytest.approx(2e-3, rel=1e-6)
    assert fit.d_law.exponent == pytest.approx(0.4, abs=1e-9)
    for b in fit.budgets:
        assert b.loss_opt == pytest.approx(3.0) and b.d_opt * b.n_opt * 6 == pytest.approx(b.budget)


def test_rejections_carry_their_reason():
    n = np.geomspace(1e8, 1e9, 5)
    x = np.log(n / 3e8)
    frames = [_budget(1e18, n, 3 + 0.1 * x ** 2),              # fine
              _budget(2e18, n, 3 + 0.1 * x ** 2 - 0.3 * x),    # minimum at the largest size
              _budget(4e18, n, 3 - 0.1 * x ** 2 + 0.3),        # concave
              _budget(8e18, n[:2], [3.0, 2.9]),                # two points
              _budget(1.6e19, n, 3 + 0.1 * x ** 2)]
    fit = fit_isoflop(pd.concat(frames), FitSettings(bootstrap=20, window_decades=None))
    reasons = {b.budget: b.reason for b in fit.budgets}
    assert reasons[1e18] == "" and reasons[1.6e19] == ""
    assert reasons[2e18] == "not bracketed: the lowest loss is at the largest size"
    assert reasons[4e18].startswith("not bracketed: the lowest loss is at the")
    assert "fewer than 3" in reasons[8e18]
    assert fit.n_law is not None  # two usable budgets are enough


def test_concave_is_named():
    # The lowest-loss run is inside the sampled sizes, but the least-squares parabola through
    # the W-shaped losses curves downwards: no minimum.
    n = np.geomspace(1e8, 1e9, 5)
    fit = fit_isoflop(_budget(1e18, n, [3.0, 2.95, 3.1, 2.94, 3.0]),
                      FitSettings(bootstrap=0, window_decades=None))
    assert fit.budgets[0].used is False
    assert fit.budgets[0].reason == "concave parabola (no minimum)"
    assert fit.budgets[0].coef[2] < 0
    assert fit.n_law is None and "usable budget" in fit.reason


def test_minimum_outside_the_sampled_sizes_is_named():
    # Lowest loss at the fourth of five sizes, but the convex parabola's vertex lies beyond
    # the largest size: the data fall almost linearly.
    n = np.geomspace(1e8, 1e9, 5)
    fit = fit_isoflop(_budget(1e18, n, [3.4, 3.3, 3.2, 3.1, 3.105]),
                      FitSettings(bootstrap=0, window_decades=None))
    budget = fit.budgets[0]
    assert budget.used is False and budget.coef[2] > 0
    assert budget.reason == "parabola minimum outside the sampled sizes"


def test_too_narrow_a_window_is_named():
    # Sizes 0.25 decades apart and a window of +-0.2 decades: one size in it.
    n = np.geomspace(1e8, 1e9, 5)
    x = np.log(n / 3e8)
    fit = fit_isoflop(_budget(1e18, n, 3 + 0.1 * x ** 2),
                      FitSettings(bootstrap=0, window_decades=0.2))
    assert fit.budgets[0].reason == "fewer than 3 distinct sizes in the window"


def test_flame_moe_optima_match_the_lowest_loss_runs(flame48):
    fit = fit_isoflop(flame48, SETTINGS)
    assert [b.budget for b in fit.budgets] == [6e18, 1e19, 3e19]
    assert all(b.used for b in fit.budgets)
    for b in fit.budgets:
        runs = flame48[flame48["budget"] == b.budget]
        best = runs.loc[runs["loss"].idxmin()]
        # Within a factor 2 of the best run in N, and of its loss within the ~0.02-nat scatter
        # between neighbouring sizes in this sweep.
        assert abs(math.log10(b.n_opt / best["n"])) < math.log10(2)
        assert b.loss_opt == pytest.approx(best["loss"], abs=0.025)
    assert fit.n_law.exponent > 0
    lo, hi = np.percentile(fit.samples["exp_n"], [2.5, 97.5])
    assert lo < fit.n_law.exponent < hi


def test_chinchilla_flops_are_bucketed(chinchilla):
    groups, note = budget_groups(chinchilla["budget"].to_numpy(), 0.2)
    assert "bucketed" in note and np.unique(groups).size < 30
    fit = fit_isoflop(chinchilla, SETTINGS)
    assert fit.note == note
    used = [b for b in fit.budgets if b.used]
    assert len(used) >= 5
    # Hoffmann et al. report a = 0.49 for Approach 2 on their (undigitised) data.
    assert 0.4 < fit.n_law.exponent < 0.6


def test_scattered_flops_never_crash():
    rng = np.random.default_rng(0)
    c = 10 ** rng.uniform(18, 21, 20)
    n = 10 ** rng.uniform(7, 10, 20)
    fit = fit_isoflop(_budget(c, n, rng.uniform(2, 4, 20)), SETTINGS)
    assert fit.note and (fit.n_law is None) == bool(fit.reason)


def _noisy_sweep(per_budget):
    from analysis.design.synthetic import Law, isoflop_sweep
    return isoflop_sweep(Law(), np.geomspace(1e18, 1e20, 3), per_budget=per_budget,
                         span_decades=0.4, noise=0.005, seed=1)


def test_residual_bootstrap_keeps_the_design_and_is_reproducible():
    points = _noisy_sweep(6)
    first = fit_isoflop(points, FitSettings(bootstrap=300, seed=3))
    again = fit_isoflop(points, FitSettings(bootstrap=300, seed=3))
    np.testing.assert_array_equal(first.samples["exp_n"], again.samples["exp_n"])
    assert first.samples["ok_fraction"][0] > 0.9
    lo, hi = np.percentile(first.samples["exp_n"], [2.5, 97.5])
    assert lo < first.n_law.exponent < hi
    pairs = fit_isoflop(points, FitSettings(bootstrap=300, seed=3, approach2_bootstrap="pairs"))
    assert pairs.n_law == first.n_law  # the resampling changes intervals, never the estimate
    assert not np.array_equal(pairs.samples["exp_n"], first.samples["exp_n"])


def test_residual_bootstrap_without_residual_freedom_falls_back_to_pairs():
    # Three sizes per budget: every parabola passes through its points, no residual to draw.
    points = _noisy_sweep(3)
    residual = fit_isoflop(points, FitSettings(bootstrap=100, seed=0, window_decades=None))
    pairs = fit_isoflop(points, FitSettings(bootstrap=100, seed=0, window_decades=None,
                                            approach2_bootstrap="pairs"))
    np.testing.assert_array_equal(residual.samples["exp_n"], pairs.samples["exp_n"])


def test_unknown_bootstrap_kind_names_the_field():
    from sweep.errors import ConfigError
    with pytest.raises(ConfigError, match="fit.approach2_bootstrap='wild'.*residual, pairs"):
        FitSettings.from_mapping({"approach2_bootstrap": "wild"})


def test_the_bootstrap_kind_used_is_recorded():
    assert fit_isoflop(_noisy_sweep(6), FitSettings(bootstrap=20)).bootstrap_kind == "residual"
    fallback = fit_isoflop(_noisy_sweep(3), FitSettings(bootstrap=20, window_decades=None))
    assert fallback.bootstrap_kind == "pairs"
    assert fit_isoflop(_noisy_sweep(6), FitSettings(bootstrap=0)).bootstrap_kind == ""

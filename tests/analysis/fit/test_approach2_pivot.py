"""Approach 2's structured interval is the law-based pivot (``analysis.fit.isoflop_pivot``):
where the parabola estimator is biased its interval is moved by the bias and covers the true
a; where the estimator fails in most resamples drawn from the law its interval is withheld,
with the reason in fit.json and a warning.

The studies: FLAME-MoE's law (the shipped prior, a = 0.780) at 5 budgets (1e18-1e20), the
same 7 sizes at every budget (10^-1.8 .. 10^0.6 times the middle budget's N_opt: shapes
fixed across budgets, as in an isoFLOP grid of named architectures), 2 seeds a point, misfit
world (shape offset SD 0.013 + seed noise SD 0.012). The budgets' optima move across the
fixed sizes, the parabolas' windows are cut asymmetrically by the ends, and a is estimated
low: median 0.735 over these 16 studies, the intervals' centres 0.042 above the estimates.
Reduced count: 16 studies of 60 resamples. Tolerance: at least 13 of 16 cover (a calibrated
95% interval falls below that with probability 0.007, binomial); measured 16 of 16 (the same
intervals centred on the estimate: 14). benchmarks/bench_design_honesty.py measures the same
on full designs at 100 studies (docs/design_studies.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.fit.driver import approach2_result, parametric_with_bootstrap
from analysis.fit.intervals import fit_intervals, misfit_losses
from analysis.fit.parametric import closed_form_optimum
from analysis.fit.porian import fit_approach2
from analysis.fit.result import read_fit
from analysis.settings import FitSettings

ROOT = Path(__file__).parents[3]
LAW = read_fit(ROOT / "analysis/data/flame_moe_prior/fit.json").law()
BUDGETS = (1e18, 3e18, 1e19, 3e19, 1e20)
STUDIES = 16
RESAMPLES = 60


def _design(offsets: tuple[float, ...], budgets: tuple[float, ...] = BUDGETS) -> pd.DataFrame:
    """The same sizes (N_opt of the middle budget times 10^offsets) at every budget, 2 seeds."""
    middle = float(np.sqrt(budgets[0] * budgets[-1]))
    n_mid = float(closed_form_optimum(LAW.theta, np.array([middle]))[0][0])
    rows = [(c, n_mid * 10 ** o, c / (6 * n_mid * 10 ** o), f"size{o}")
            for c in budgets for o in offsets]
    points = pd.DataFrame(rows, columns=["budget", "n", "tokens", "shape"])
    return pd.concat([points, points], ignore_index=True)


def _study(design: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    loss = misfit_losses(LAW, design["n"].to_numpy(), design["tokens"].to_numpy(),
                         design["shape"].to_numpy(), 0.013, 0.012, rng)
    return design.assign(loss=loss)


def test_a_biased_parabola_estimate_gets_a_corrected_interval_that_covers():
    design = _design((-1.8, -1.4, -1.0, -0.6, -0.2, 0.2, 0.6))
    fits = [fit_intervals(_study(design, s), FitSettings(bootstrap=RESAMPLES, seed=s))
            for s in range(STUDIES)]
    assert all(f.a2_ci is not None and not f.a2_withheld for f in fits)
    estimates = np.array([f.a2 for f in fits])
    centres = np.array([sum(f.a2_ci) / 2 for f in fits])
    assert np.median(estimates) < LAW.a - 0.03          # the estimator is biased low ...
    assert np.median(centres - estimates) > 0.025        # ... and the interval moves up
    assert sum(f.covers(LAW.a)["approach2"] for f in fits) >= 13
    assert all("from the Approach 3 law (pivot)" in f.bootstrap for f in fits)


def test_an_estimator_that_fails_in_most_resamples_has_its_interval_withheld():
    # The sizes end below the largest budgets' optima: Approach 2 has a law only when the
    # noise happened to bracket two budgets, and then it is far off (0.39 at seed 3).
    # fit.min_interval_budgets=2: else a law from 2 budgets has no interval anyway.
    design = _design((-1.8, -1.4, -1.0, -0.6, -0.2), BUDGETS[:4])
    settings = FitSettings(bootstrap=RESAMPLES, min_interval_budgets=2)
    seen = 0
    for seed in range(8):
        points = _study(design, seed)
        fit = fit_intervals(points, settings)
        if fit.a2 is None:
            continue
        seen += 1
        assert fit.a2_ci is None and "resamples drawn from the Approach 3 law" in \
            fit.a2_withheld
        noise = parametric_with_bootstrap(points, settings)[4]
        warnings = []
        out = approach2_result(fit_approach2(points, settings, noise), settings, warnings)
        assert out.a is not None and out.a_ci is None and out.interval_reason
        assert "biased" in [w.code for w in warnings]
    assert seen >= 1

"""Approach 2 as Porian et al. (2024) estimate it, checked on their released isoFLOP data.

Data: tests/data/porian2024_isoflop_points.csv (their 15 configurations; see
tests/data/README.md). Published exponents: tests/data/porian2024_published_exponents.csv,
the ``a`` estimates and 95% intervals of their released analysis results
(formll/resolving-scaling-law-discrepancies, data/summary_df*.pickle.xz:
fit_results["bs_median_weighted"]["n_exponent"] and the 2.5/97.5% quantiles of
fit_results["bootstrap_weighted"], what their paper_tables.py prints as the a estimate).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.design.synthetic import Law, isoflop_sweep
from analysis.fit.isoflop import fit_isoflop
from analysis.fit.porian import fit_approach2, fit_porian
from analysis.settings import FitSettings
from sweep.errors import ConfigError
from tests.analysis.conftest import DATA

KEYS = ["dataset", "hparams", "warmup", "decay", "param_count", "val"]
# Their seed noise per dataset (configs.py: RW_SEED_CONFIG, OWT2_SEED_CONFIG noise_low).
SEED_NOISE = {"rw": 0.002, "owt2": 0.01}


def _configurations():
    points = pd.read_csv(DATA / "porian2024_isoflop_points.csv")
    published = pd.read_csv(DATA / "porian2024_published_exponents.csv")
    for row in published.to_dict(orient="records"):
        sel = (points[KEYS] == pd.Series({k: row[k] for k in KEYS})).all(axis=1)
        config = points[sel]
        yield row, pd.DataFrame({"budget": config["flops"], "n": config["n"],
                                 "tokens": config["t"], "loss": config["loss"]})


def test_exponents_match_porian_et_al_on_their_15_configurations():
    checked = 0
    for row, points in _configurations():
        settings = FitSettings(approach2_estimator="porian", bootstrap=400,
                               porian_seed_noise=SEED_NOISE[row["dataset"]])
        fit = fit_approach2(points, settings)
        lo, hi = np.percentile(fit.samples["exp_n"], [2.5, 97.5])
        # Measured: within 0.003 of theirs on all 15 at 1,000 resamples; their interval
        # ends within 0.005.
        assert fit.n_law.exponent == pytest.approx(row["a"], abs=0.006), row["label"]
        assert lo == pytest.approx(row["a_lo"], abs=0.01) and \
            hi == pytest.approx(row["a_hi"], abs=0.01), row["label"]
        checked += 1
    assert checked == 15


def test_off_centre_grid_biases_the_parabola_not_the_interpolation():
    """Sizes all on one side of the optimum: the parabola's vertex is pulled toward the
    grid, the interpolated minimum much less (the reason for the off-centre warning)."""
    law, budgets = Law(), np.geomspace(1e18, 1e20, 5)
    points = isoflop_sweep(law, budgets, per_budget=9, span_decades=0.8, noise=0.0)
    true_a = law.beta / (law.alpha + law.beta)
    # Shift each budget's sizes by a factor growing with C: centred at the smallest budget,
    # 0.45 decades too small at the largest (a planner whose prior exponent was too low).
    shift = np.interp(np.log10(points["budget"]), [18, 20], [0.0, -0.45])
    n = points["n"] * 10 ** shift
    shifted = points.assign(n=n, tokens=points["budget"] / (6 * n),
                            loss=law.loss(n, points["budget"] / (6 * n)))
    parabola = fit_isoflop(shifted, FitSettings(bootstrap=0, window_decades=None))
    porian = fit_porian(shifted, FitSettings(bootstrap=50, porian_seed_noise=0.0))
    assert abs(porian.n_law.exponent - true_a) < abs(parabola.n_law.exponent - true_a)


def test_bad_estimator_names_the_field():
    with pytest.raises(ConfigError, match="fit.approach2_estimator='spline'"):
        FitSettings(approach2_estimator="spline")
    with pytest.raises(ConfigError, match="fit.porian_seed_noise"):
        FitSettings(porian_seed_noise=-1.0)

"""fit.json's variance components: what the demo's replicates show, in the summary and the
report; null where no point has replicates; the ANOVA estimator recovers known components."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.design.synthetic import Law
from analysis.fit.driver import summary_text
from analysis.fit.intervals import misfit_losses
from analysis.fit.parametric import fit_parametric
from analysis.fit.result import read_fit
from analysis.fit.structure import (
    _one_step,
    anova_components,
    bootstrap_parametric_structured,
    law_structure,
    seed_sd,
)
from analysis.report.fit import approach3_section

DEMO_FIT = Path(__file__).parents[1] / "data" / "demo_690ed83" / "fit.json"
SHIPPED = Path(__file__).parents[3] / "analysis" / "data" / "flame_moe_prior" / "fit.json"


def test_the_demos_components_are_in_fit_json_the_summary_and_the_report(tmp_path):
    fit = read_fit(DEMO_FIT)
    vc = fit.variance_components
    assert set(vc) >= {"seed_sd", "shape_sd", "n_shapes", "n_replicated_points", "method"}
    assert vc["n_shapes"] == 10 and vc["n_replicated_points"] == 15
    assert 0.005 < vc["seed_sd"] < vc["shape_sd"] < 0.03
    assert "seed-to-seed SD 0.0115" in summary_text(fit, width=200)
    notes = " ".join(approach3_section(tmp_path, fit).notes)
    assert "misfit shared by a shape SD 0.0185" in notes
    # A fit without replicates (FLAME's 48 runs, one seed each) has none to report.
    assert read_fit(SHIPPED).variance_components is None


def test_anova_recovers_known_components_and_the_seed_sd():
    rng = np.random.default_rng(0)
    shapes, budgets, seeds = 40, 4, 3
    shape = np.repeat(np.arange(shapes), budgets * seeds)
    point = np.repeat(np.arange(shapes * budgets), seeds)
    x = np.linspace(-1, 1, shape.size)
    jac = np.stack([np.ones_like(x), x], axis=1)  # a fitted line absorbs two directions
    found = []
    for _ in range(50):
        y = 0.3 + 0.1 * x + 0.02 * rng.standard_normal(shapes)[shape] + \
            0.01 * rng.standard_normal(shape.size)
        residual = y - jac @ np.linalg.lstsq(jac, y, rcond=None)[0]
        su2, se2 = anova_components(residual, jac, shape)
        found.append((np.sqrt(su2), np.sqrt(se2), seed_sd(y, point)[0]))
    shape_sd, run_sd, seed = np.median(found, axis=0)
    assert shape_sd == pytest.approx(0.02, rel=0.1)
    assert run_sd == pytest.approx(0.01, rel=0.05) and seed == pytest.approx(0.01, rel=0.05)
    # One run a shape: nothing to tell apart.
    assert anova_components(rng.standard_normal(8), np.ones((8, 1)), np.arange(8)) is None


def test_one_newton_step_a_resample_tracks_refits_on_many_runs():
    # From fit.ONE_STEP_MIN_POINTS runs the structured bootstrap takes one Newton step a
    # resample; at 6,000 runs its spread of a is within 10% below to 60% above refits'.
    rng = np.random.default_rng(0)
    budgets, sizes, seeds = np.geomspace(1e18, 1e21, 6), np.geomspace(2e7, 2e10, 40), 25
    n = np.tile(sizes, budgets.size * seeds)
    c = np.repeat(budgets, sizes.size * seeds)
    shape = np.tile(np.arange(sizes.size), budgets.size * seeds)
    d = c / (6 * n)
    loss = misfit_losses(Law(), n, d, shape, 0.01, 0.005, rng)
    fit = fit_parametric(n, d, loss)
    noise = law_structure(fit, n, d, loss, shape, c)
    refits = bootstrap_parametric_structured(fit, n, d, noise, 30, 0)
    steps = _one_step(fit, np.log(n), np.log(d), noise, 200, np.random.default_rng(0), 1e-3)
    spread = [np.std(t[:, 4] / (t[:, 3] + t[:, 4])) for t in (refits, steps)]
    assert 0.9 * spread[0] < spread[1] < 1.6 * spread[0], spread

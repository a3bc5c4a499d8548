"""`flame design` on a degenerate prior: a prior fit.json whose own fit was degenerate (two
budgets, E run to zero) carries the warnings that fit gave into the design's output, design.json
and cautions; a fit.json written before a check existed gets it recomputed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from analysis.design.prior_checks import prior_warnings
from analysis.fit import fit_sweep
from analysis.fit.result import read_fit
from tests.analysis.design.test_design import FAST
from tests.jobs.conftest import flame

SHIPPED = Path(__file__).parents[3] / "analysis" / "data" / "flame_moe_prior" / "fit.json"
DEMO = Path(__file__).parents[1] / "data" / "demo_690ed83" / "fit.json"


@pytest.fixture(scope="module")
def two_budget_prior(tmp_path_factory) -> Path:
    """fit.json of a law with no floor (E = 0) sampled on two budgets: the fit has no
    interval (few_budgets) and runs E to its boundary (e_at_zero)."""
    out = tmp_path_factory.mktemp("prior")
    rows = []
    for c in (1e18, 1e20):
        n = np.geomspace(3e7, 3e9, 7) * (c / 1e19) ** 0.5
        d = c / (6 * n)
        rows.append(pd.DataFrame({"budget": c, "n": n, "tokens": d,
                                  "loss": 400 / n ** 0.34 + 410 / d ** 0.28}))
    pd.concat(rows).to_csv(out / "results.csv", index=False)
    fit_sweep(out, OmegaConf.create({"fit": {"bootstrap": 0, "figures": False}}),
              out / "results.csv")
    return out / "fit.json"


def test_a_degenerate_priors_warnings_are_its_fits_own(two_budget_prior):
    fit = read_fit(two_budget_prior)
    assert fit.approach3.E < 1e-6
    found = prior_warnings(fit)
    assert [w.code for w in found] == ["few_budgets", "e_at_zero"]
    assert [w.message for w in found] == [w.message for w in fit.warnings
                                          if w.message.startswith("Approach 3")]
    # healthy priors: the shipped one and the demo's
    assert prior_warnings(read_fit(SHIPPED)) == [] and prior_warnings(read_fit(DEMO)) == []


def test_a_prior_written_before_the_checks_gets_them_recomputed(two_budget_prior, tmp_path):
    old = json.loads(two_budget_prior.read_text())
    old["warnings"], old["approach3"]["E"] = [], 1.7e-46  # the prior
    (tmp_path / "fit.json").write_text(json.dumps(old))
    found = prior_warnings(read_fit(tmp_path / "fit.json"))
    assert [w.code for w in found] == ["few_budgets", "e_at_zero"]
    assert "fitted on only 2 budgets" in found[0].message and "1.7e-46" in found[1].message


def test_flame_design_repeats_the_priors_warnings(two_budget_prior, tmp_path):
    sweep = tmp_path / "d"
    out = flame("design", f"sweep_dir={sweep}", f"design.prior={two_budget_prior}", *FAST)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("warning [few_budgets]: design.prior: Approach 3: fitted on "
                               "only 2 budgets")
    assert any(line.startswith("warning [e_at_zero]: design.prior: Approach 3: E = ")
               for line in lines)
    assert "the prior is degenerate" in out.stdout
    report = json.loads((sweep / "design.json").read_text())
    assert [w["code"] for w in report["prior"]["warnings"]] == ["few_budgets", "e_at_zero"]
    assert report["cautions"][0].startswith("the prior law is degenerate (2 warning(s): "
                                            "few_budgets, e_at_zero)")

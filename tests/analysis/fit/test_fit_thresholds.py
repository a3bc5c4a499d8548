"""The fit's thresholds are ``fit.*`` settings (their reasons in ``flame fit --help``), and
each one changes what the fit does: the fewest budgets for an interval, the flat-loss range,
the size from which Approach 3's bootstrap takes one Newton step."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.fit.parametric import ONE_STEP_MIN_POINTS
from analysis.settings import FitSettings
from sweep.errors import ConfigError
from tests.analysis.fit.test_degenerate import INSIDE, _codes, _fit, _points


def test_defaults_are_the_former_constants():
    s = FitSettings()
    assert (s.min_interval_budgets, s.flat_loss_rel_range, s.one_step_min_points) == \
        (3, 1e-4, ONE_STEP_MIN_POINTS)


def test_min_interval_budgets_withholds_intervals(tmp_path, capsys):
    fit, _ = _fit(tmp_path, _points(), capsys, INSIDE, "fit.min_interval_budgets=5",
                  "fit.bootstrap=20", "fit.bootstrap_structure=iid")
    assert fit["approach2"]["a_ci"] is None and "fit.min_interval_budgets" in \
        fit["approach2"]["interval_reason"] and "at least 5" in fit["approach2"]["interval_reason"]
    assert fit["approach3"]["interval_reason"].endswith("at least 5 are needed "
                                                        "(fit.min_interval_budgets)")
    assert "few_budgets" in _codes(fit)


def test_flat_loss_range_rejects_budgets(tmp_path, capsys):
    # losses of this sweep span a few percent within a budget: a 50% range calls all flat
    fit, _ = _fit(tmp_path, _points(), capsys, INSIDE, "fit.flat_loss_rel_range=0.5",
                  "fit.bootstrap=0")
    assert all(b["reason"].startswith("flat") for b in fit["approach2"]["budgets"])
    assert fit["approach3"]["reason"].startswith("flat losses") and "5e-01" in \
        fit["approach3"]["reason"]
    assert "flat_losses" in _codes(fit)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # one step on 36 points: wild draws
def test_one_step_from_the_setting(tmp_path, capsys):
    fit, _ = _fit(tmp_path, _points(), capsys, INSIDE, "fit.one_step_min_points=10",
                  "fit.bootstrap=20", "fit.bootstrap_structure=iid")
    assert fit["approach3"]["bootstrap_method"] == "one Newton step per resample"
    assert np.isfinite(fit["approach3"]["ci"]["a"]).all()


@pytest.mark.parametrize("key, value", [("min_interval_budgets", 1),
                                        ("flat_loss_rel_range", -1e-4),
                                        ("one_step_min_points", 0)])
def test_out_of_range_is_refused(key, value):
    with pytest.raises(ConfigError, match=f"fit.{key}="):
        FitSettings(**{key: value})

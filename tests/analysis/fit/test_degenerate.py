"""Degenerate data never yields a confident number (issue 11, item 6): duplicated rows, too
few budgets, flat losses and far extrapolation are detected, reported in fit.json's warnings
and the printed summary, and give no interval or selection that looks precise."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.design.synthetic import Law, isoflop_sweep
from analysis.fit.driver import approach2_result
from analysis.fit.isoflop import fit_isoflop
from analysis.settings import FitSettings
from jobs.cli import main

BUDGETS = np.geomspace(1e18, 1e20, 4)
INSIDE = "fit.target_budgets=[3e18,3e19]"


def _points(budgets=BUDGETS) -> pd.DataFrame:
    return isoflop_sweep(Law(), budgets, per_budget=9, span_decades=0.6, noise=0.005, seed=4)


def _fit(tmp_path, points: pd.DataFrame, capsys, *overrides: str) -> tuple[dict, str]:
    csv = tmp_path / "points.csv"
    points.to_csv(csv, index=False)
    out = tmp_path / "out"
    assert main(["fit", f"results={csv}", f"sweep_dir={out}", "fit.bootstrap=100",
                 "fit.figures=false", *overrides]) == 0  # figures: most of a fit's time
    return json.loads((out / "fit.json").read_text()), capsys.readouterr().out


def _codes(fit: dict) -> list[str]:
    return [w["code"] for w in fit["warnings"]]


def test_a_healthy_sweep_raises_no_warning(tmp_path, capsys):
    fit, printed = _fit(tmp_path, _points(), capsys, INSIDE)
    assert fit["warnings"] == [] and "warning" not in printed
    assert fit["approach2"]["a_ci"] is not None and fit["approach3"]["ci"]["a"] is not None
    assert fit["n_excluded"] == 0
    assert fit["figures"] == [] and not (tmp_path / "out" / "figures").exists()


def test_duplicated_rows_are_counted_once(tmp_path, capsys):
    once, _ = _fit(tmp_path, _points(), capsys, INSIDE)
    twice, printed = _fit(tmp_path, pd.concat([_points(), _points()]), capsys, INSIDE)
    assert _codes(twice) == ["duplicates"]
    assert "36 of 72 rows repeat an earlier row exactly" in twice["warnings"][0]["message"]
    assert "warning [duplicates]" in printed
    assert twice["n_used"] == 36 and twice["excluded"] == {"duplicate": 36}
    # The copies change nothing: not a falsely narrow interval.
    for key in ("a", "a_ci", "b_ci"):
        assert twice["approach2"][key] == once["approach2"][key]
    assert twice["approach3"]["ci"]["a"] == once["approach3"]["ci"]["a"]


def test_two_budgets_give_no_interval(tmp_path, capsys):
    fit, printed = _fit(tmp_path, _points(BUDGETS[:2]), capsys, INSIDE)
    a2 = fit["approach2"]
    assert a2["a"] is not None  # the line through two minima is still the estimate ...
    assert a2["a_ci"] is None and a2["b_ci"] is None and a2["k_ci"] is None  # ... not precise
    assert "only 2 usable budgets" in a2["interval_reason"]
    a3 = fit["approach3"]
    assert a3["E"] is not None and a3["ci"] == {} and a3["se"] == {}  # a fit, no interval
    assert a3["interval_reason"].startswith("fitted on only 2 budgets")
    assert _codes(fit) == ["few_budgets", "few_budgets", "few_budgets"]
    assert "no interval: only 2 usable budgets" in printed
    assert "no interval: fitted on only 2 budgets" in printed
    assert fit["selection"]["warnings"] == ["the approach3 law it uses has no interval (too "
                                            "few budgets): its uncertainty is unknown"]


def test_one_budget_gives_no_law_and_no_selection(tmp_path, capsys):
    fit, printed = _fit(tmp_path, _points(BUDGETS[:1]), capsys)
    assert fit["approach2"]["a"] is None and fit["approach3"]["E"] is None
    assert fit["approach3"]["reason"].startswith("only 1 budget(s); within a budget D = C / 6N")
    assert fit["selection"] == {"applicable": False, "reason": "no fitted law", "warnings": []}
    assert not (tmp_path / "out" / "selection.csv").exists()
    assert "few_budgets" in _codes(fit) and "Selection: not applicable (no fitted law)" in printed


def test_flat_losses_are_named_and_not_fitted(tmp_path, capsys):
    points = _points().assign(loss=3.0)
    fit, printed = _fit(tmp_path, points, capsys)
    reasons = {b["reason"] for b in fit["approach2"]["budgets"]}
    assert len(reasons) == 1 and reasons.pop().startswith("flat losses")
    assert fit["approach3"]["E"] is None and fit["approach3"]["reason"].startswith("flat")
    assert fit["selection"]["applicable"] is False
    assert not (tmp_path / "out" / "selection.csv").exists()
    assert _codes(fit) == ["flat_losses", "flat_losses"]
    assert "warning [flat_losses]" in printed


def test_selection_far_beyond_the_data_is_flagged(tmp_path, capsys):
    # 3e19 is inside the fitted budgets (1e18-1e20); 1e22 is 2 decades above them.
    fit, printed = _fit(tmp_path, _points(), capsys, "fit.target_budgets=[3e19,1e22]")
    table = pd.read_csv(tmp_path / "out" / "selection.csv", keep_default_na=False)
    assert list(table["extrapolation_decades"]) == pytest.approx([0.0, 2.0])
    assert table["warning"].iloc[0] == ""
    allowed = FitSettings().max_extrapolation_decades
    assert table["warning"].iloc[1] == (f"extrapolation beyond {allowed} "
                                        "decades of the fitted budgets")
    assert _codes(fit) == ["extrapolation"]
    assert "1 of 2 target budgets lie 2.0-2.0 decades of compute outside" in printed


def test_resamples_that_do_not_vary_give_no_interval():
    # Exact parabolas: every bootstrap resample finds the same minima (zero-width interval).
    frames = []
    for c in (1e18, 1e19, 1e20):
        n = 2e-3 * c ** 0.6 * np.geomspace(0.3, 3.0, 7)
        frames.append(pd.DataFrame({"budget": c, "n": n, "tokens": c / (6 * n),
                                    "loss": 3 + 0.1 * np.log(n / (2e-3 * c ** 0.6)) ** 2}))
    settings = FitSettings(bootstrap=50, window_decades=None)
    warnings = []
    out = approach2_result(fit_isoflop(pd.concat(frames), settings), settings, warnings)
    assert out.a == pytest.approx(0.6) and out.a_ci is None
    assert out.interval_reason == "the bootstrap resamples did not vary (zero-width interval)"
    assert [w.code for w in warnings] == ["zero_width"]


def test_off_centre_grid_is_warned_about():
    """Sizes centred on the optimum raise nothing; the same grid shifted 0.5 decades toward
    small N at the two largest budgets puts their vertices at the window's edge."""
    settings = FitSettings(bootstrap=0)
    centred = _points()
    warnings = []
    approach2_result(fit_isoflop(centred, settings), settings, warnings)
    assert warnings == []
    big = centred["budget"] >= BUDGETS[2]
    n = centred["n"] * np.where(big, 10 ** -0.5, 1.0)
    law = Law()
    shifted = centred.assign(n=n, tokens=centred["budget"] / (6 * n),
                             loss=law.loss(n, centred["budget"] / (6 * n)))
    approach2_result(fit_isoflop(shifted, settings), settings, warnings)
    assert [w.code for w in warnings] == ["off_centre"]
    assert "2 budget(s)" in warnings[0].message and "porian" in warnings[0].message

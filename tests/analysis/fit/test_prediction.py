"""The law's prediction of a run with its prediction interval, on the demo's pinned fit
(tests/analysis/data/demo_690ed83): the bootstrap drawn again is fit.json's, the point
predictions are the laws' own numbers, and the intervals hold them."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis.fit.prediction import law_draws, predict, prediction_columns, stored_prediction

DATA = Path(__file__).parents[1] / "data" / "demo_690ed83"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("prediction")
    for name in ("config.yaml", "plan.csv", "results.csv", "fit.json", "selection.csv"):
        shutil.copy(DATA / name, sweep / name)
    return sweep


def test_the_demos_pick_predicted_by_both_approaches(demo):
    draws = law_draws(demo)
    assert draws.notes == ()  # the bootstrap drawn again is the one fit.json summarised
    fit = json.loads((demo / "fit.json").read_text())
    pick = pd.read_csv(demo / "selection.csv").iloc[0]  # 3e12: L2-h56
    a2, a3 = predict(draws, pick["budget"], pick["member_n"], pick["member_tokens"])
    law = fit["approach3"]
    assert a3.loss == pytest.approx(law["E"] + law["A"] / pick["member_n"] ** law["alpha"]
                                    + law["B"] / pick["member_tokens"] ** law["beta"], rel=1e-12)
    frontier = fit["approach2"]["loss_law"]
    assert a2.loss >= frontier["k"] * pick["budget"] ** frontier["exponent"] * (1 - 1e-12)
    assert a3.low < a3.loss < a3.high and a3.reason == ""
    # 3e12 is past the sweep's largest budget (1e12): Approach 2's frontier has no interval
    # there, and says why; within the sweep it has one
    assert a2.low is None and a2.high is None and "beyond the sweep's largest budget" in \
        a2.reason and a2.inside(a2.loss) is None
    within = predict(draws, 1e12, pick["member_n"], pick["member_tokens"])[0]
    assert within.low < within.loss < within.high and within.reason == ""
    for p in (a2, a3):
        assert 0 < p.scatter_sd < 0.05  # the demo's runs scatter by ~1% around the laws
    # The interval is wider than the run-to-run scatter alone: the law's own spread is in it.
    assert math.log(a3.high / a3.low) > 2 * 1.96 * a3.scatter_sd
    # Stored as columns and read back unchanged.
    row = prediction_columns([a2, a3])
    assert stored_prediction(row, "approach3") == a3
    assert a3.inside(a3.loss) and not a3.inside(a3.high * 1.01)
    assert a3.inside(None) is None


def test_a_changed_results_csv_is_said(demo, tmp_path):
    for name in ("config.yaml", "plan.csv", "fit.json"):
        shutil.copy(demo / name, tmp_path / name)
    results = pd.read_csv(demo / "results.csv")
    results["final_val_loss"] *= 1.0 + 0.01 * (results.index % 3)
    results["best_val_loss"] = results["final_val_loss"]
    results.to_csv(tmp_path / "results.csv", index=False)
    notes = law_draws(tmp_path).notes
    assert any("refit" in n for n in notes)

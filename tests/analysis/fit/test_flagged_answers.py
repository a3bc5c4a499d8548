"""An answer outside the family is named, never silent: budgets whose lowest loss is at an edge
size are "not bracketed" (not "fewer than 3 distinct sizes", whatever the window holds), and picks
far from the law's optimum are flagged in fit.json's warnings, selection.csv, the printed summary
and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.fit.degenerate import far_pick_warnings
from analysis.fit.isoflop import fit_isoflop
from analysis.settings import FitSettings
from jobs import ledger
from sweep.config import read_config, read_plan
from sweep.io import run_dir
from tests.jobs.conftest import flame
from trainers.run import train_run

NOT_BRACKETED = "not bracketed: the lowest loss is at the {} size"


def _budget(budget: float, n: np.ndarray, loss: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"budget": budget, "n": n, "tokens": budget / (6 * n), "loss": loss})


def test_an_edge_minimum_is_not_bracketed_even_when_its_window_holds_two_sizes():
    # Sizes 0.3 decades apart and a +-0.5-decade window: the window around an edge holds two
    # sizes. The reason is the edge (more sizes beyond it would fix it), and no parabola is kept.
    n = np.geomspace(1e8, 1e8 * 10 ** 1.2, 5)
    x = np.log10(n / 1e8)
    frames = [_budget(1e18, n, 3.0 - 0.1 * x),                  # falls to the largest size
              _budget(2e18, n, 3.0 + 0.1 * x),                  # rises from the smallest
              _budget(4e18, n[:2], np.array([3.0, 2.9]))]       # two sizes in all
    fit = fit_isoflop(pd.concat(frames), FitSettings(bootstrap=0))
    reasons = {b.budget: b.reason for b in fit.budgets}
    assert reasons == {1e18: NOT_BRACKETED.format("largest"),
                       2e18: NOT_BRACKETED.format("smallest"),
                       4e18: "fewer than 3 distinct sizes in the window"}
    assert all(b.coef is None and b.window is None and not b.used for b in fit.budgets)


def test_far_picks_are_flagged_beside_an_extrapolation_warning():
    table = pd.DataFrame({"budget": [1e20, 1e21, 1e22], "n_opt": [1e9, 3e9, 1e10],
                          "member": ["a", "b", "b"], "log10_n_ratio": [0.1, -0.31, -0.8],
                          "warning": ["", "", "extrapolation beyond 1.5 decades"]})
    found = far_pick_warnings(table, 0.3)
    assert [w.code for w in found] == ["far_from_optimum"]
    assert "2 of 3 picks" in found[0].message and "0.80 decades below" in found[0].message
    assert "add larger members" in found[0].message
    assert table["warning"].tolist() == [
        "", "far from the optimum: b is 0.31 decades below N_opt (no member within 0.3 decades)",
        "extrapolation beyond 1.5 decades; far from the optimum: b is 0.80 decades below N_opt "
        "(no member within 0.3 decades)"]
    assert far_pick_warnings(table.assign(log10_n_ratio=[0.1, 0.2, np.nan]), 0.3) == []


@pytest.fixture(scope="module")
def demo_on_simulated(tmp_path_factory) -> tuple[Path, str]:
    """The issue's study (`flame run experiment=demo trainer=simulated`), whose law puts every
    budget's optimum above the demo family's largest member: planned, each run trained in this
    process by the simulated trainer (`train_run`, a local worker's call), then collected,
    fitted and reported by the CLI. Local workers would add ~8 s of waiting here."""
    sweep = tmp_path_factory.mktemp("demo_sim")
    flame("plan", "experiment=demo", "trainer=simulated", f"sweep_dir={sweep}")
    config = read_config(sweep)
    rows = read_plan(sweep)
    for row in rows:
        train_run(row, config, run_dir(sweep, row.run_id))
    for state in (ledger.SUBMITTED, ledger.RUNNING, ledger.COMPLETED):
        ledger.transition_many(sweep, [(r.run_id, state, "local-1") for r in rows])
    flame("collect", f"sweep_dir={sweep}")
    out = flame("fit", f"sweep_dir={sweep}", "fit.bootstrap=50", "fit.figures=false")
    flame("report", f"sweep_dir={sweep}")
    return sweep, out.stdout


def test_the_demo_on_the_simulated_trainer_names_its_answer_outside_the_family(
        demo_on_simulated):
    sweep, stdout = demo_on_simulated
    fit = json.loads((sweep / "fit.json").read_text())
    budgets = fit["approach2"]["budgets"]
    assert [b["reason"] for b in budgets] == [NOT_BRACKETED.format("largest")] * len(budgets)
    codes = {w["code"]: w["message"] for w in fit["warnings"]}
    assert f"{len(budgets)} of {len(budgets)} budget(s) are not bracketed" in \
        codes["not_bracketed"] and "add larger members" in codes["not_bracketed"]
    assert "add larger members" in codes["far_from_optimum"]
    selection = pd.read_csv(sweep / "selection.csv", keep_default_na=False)
    far = selection["log10_n_ratio"].abs() > 0.3
    assert far.any() and selection["log10_n_ratio"].min() < -0.6  # the 0.66 decades
    assert selection["warning"].str.contains("far from the optimum").tolist() == far.tolist()
    assert fit["selection"]["warnings"] == [codes["far_from_optimum"].removeprefix(
        "selection: ")]
    # the printed summary: the warnings, the reasons, a flag per far pick
    assert "warning [not_bracketed]" in stdout and "warning [far_from_optimum]" in stdout
    assert "not bracketed: the lowest loss is at the largest" in stdout
    assert stdout.count(" far ") >= int(far.sum())


def test_the_report_shows_the_flags(demo_on_simulated):
    sweep, _ = demo_on_simulated
    html = (sweep / "report.html").read_text()
    assert "warning [not_bracketed]" in html and "warning [far_from_optimum]" in html
    assert html.count("far from the optimum: L2-h80") >= 2  # the picks table and selection.csv's
    assert NOT_BRACKETED.format("largest") in html

"""flame fit end to end: fit.json contract, figures, selection, bare CSVs and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.collect.results import collect_sweep
from analysis.fit.driver import fit_sweep, summary_text
from analysis.fit.result import FitResult, read_fit
from jobs.cli import compose, main
from sweep.errors import ConfigError
from tests.analysis.conftest import DATA, DEMO_LAW

CONTRACT = {"approach2": {"a", "a_ci", "b", "b_ci", "k", "budgets"},
            "approach3": {"E", "A", "B", "alpha", "beta", "a", "b", "objective", "n_points",
                          "ci"}}


def _load(path) -> dict:
    """fit.json as strict JSON: NaN/Infinity are not JSON and other tools would choke."""
    def reject(token):
        raise AssertionError(f"{path} holds {token}")
    return json.loads(path.read_text(), parse_constant=reject)


def _check_contract(fit: dict) -> None:
    assert {"approach2", "approach3", "extrapolation", "n_used", "n_excluded"} <= set(fit)
    for key, fields in CONTRACT.items():
        assert fields <= set(fit[key]), key
    for b in fit["approach2"]["budgets"]:
        assert {"budget", "n_opt", "loss_opt", "used", "reason"} <= set(b)


def test_sweep_fit_writes_everything(demo_sweep, capsys):
    sweep, plan = demo_sweep
    collect_sweep(sweep)
    # Targets on the plan's own budgets: each selected member is planned there, so its
    # iterations can be compared with the planner's.
    targets = "fit.target_budgets=[1e11,3e11,1e12,2e12]"
    assert main(["fit", f"sweep_dir={sweep}", "fit.bootstrap=100", targets]) == 0
    printed = capsys.readouterr().out
    assert "Approach 2" in printed and "Approach 3" in printed and "Selection" in printed
    fit = _load(sweep / "fit.json")
    _check_contract(fit)
    assert fit["n_used"] == len(plan) and fit["n_excluded"] == 0
    # Noise-free losses from a known law: Approach 3 recovers it.
    a3 = fit["approach3"]
    assert a3["alpha"] == pytest.approx(DEMO_LAW.alpha, rel=1e-3)
    assert a3["E"] == pytest.approx(DEMO_LAW.E, rel=1e-3)
    for name in ("png", "svg"):
        for fig in ("isoflop", "scaling_laws", "loss_frontier", "residuals"):
            assert (sweep / "figures" / f"{fig}.{name}").stat().st_size > 10_000
    selection = pd.read_csv(sweep / "selection.csv")
    assert list(selection["budget"]) == [1e11, 3e11, 1e12, 2e12]
    assert fit["selection"]["applicable"] is True
    # The chosen member's iterations are the planner's for the same member and budget.
    for row in selection.to_dict(orient="records"):
        planned = plan[(plan["member"] == row["member"]) & np.isclose(plan["budget"],
                                                                      row["budget"])]
        assert len(planned) == 1, row
        assert int(row["member_iterations"]) == int(planned["train_iters"].iloc[0])
        others = plan.drop_duplicates("member")["n_active_flame"]
        gap = abs(np.log10(row["member_n"] / row["n_opt"]))
        assert gap <= np.abs(np.log10(others / row["n_opt"])).min() + 1e-12


def test_flagged_runs_are_kept_but_excluded(demo_sweep):
    sweep, plan = demo_sweep
    (sweep / "runs" / plan["run_id"][0] / "metrics.jsonl").unlink()
    (sweep / "runs" / plan["run_id"][0] / "train.log").unlink()
    results = collect_sweep(sweep)
    assert len(results) == len(plan)
    cfg = compose([f"sweep_dir={sweep}", "fit.bootstrap=0", "fit.figures=false"])
    fit = fit_sweep(sweep, cfg)
    assert fit.n_used == len(plan) - 1 and fit.n_excluded == 1
    assert fit.excluded == {"flag missing": 1}
    assert fit.approach3.ci == {}
    assert read_fit(sweep) == fit  # what fit_sweep returns is what fit.json reads back


def test_bare_csv_flame_moe(tmp_path, flame48, capsys):
    csv = tmp_path / "flame48.csv"
    flame48[["budget", "n", "loss"]].to_csv(csv, index=False)
    out = tmp_path / "out"
    assert main(["fit", "experiment=flame_sweep", f"results={csv}", f"sweep_dir={out}",
                 "fit.bootstrap=200", "fit.figures=false"]) == 0
    fit = _load(out / "fit.json")
    _check_contract(fit)
    assert fit["approach3"]["objective"] <= 0.00063
    assert all(b["used"] for b in fit["approach2"]["budgets"])
    lo, hi = fit["approach2"]["a_ci"]
    assert lo < fit["approach2"]["a"] < hi
    # A plain CSV selects from the composed experiment's family (all 16 sweep shapes).
    assert fit["selection"]["applicable"] is True
    assert fit["selection"]["family"] == "flame"
    assert fit["extrapolation"]["held_out_budget"] == pytest.approx(3e19)
    assert "members of family flame (all members at each budget)" in capsys.readouterr().out
    selection = pd.read_csv(out / "selection.csv")
    assert len(selection) == 7  # predictions for the FLAME budgets
    assert selection["member"].notna().all() and selection["released_name"].notna().all()
    assert "approach3" in summary_text(FitResult.from_json(fit))


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    csv = tmp_path / "bad.csv"
    csv.write_text("flops,params,loss\n1e18,1e8,3.0\n")
    assert main(["fit", f"results={csv}", f"sweep_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "missing columns ['budget', 'n']" in err
    assert main(["fit", f"sweep_dir={tmp_path}"]) == 2
    assert "results.csv does not exist" in capsys.readouterr().err
    assert main(["fit", f"sweep_dir={tmp_path}", "fit.n_column=n_active"]) == 2
    assert "fit.n_column='n_active'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="fit.bootstrap"):
        fit_sweep(tmp_path, compose([f"sweep_dir={tmp_path}", "fit.bootstrap=-1"]), csv)
    assert not (tmp_path / "fit.json").exists()


def test_bare_csv_chinchilla_bucketed(tmp_path):
    raw = pd.read_csv(DATA / "chinchilla_epoch_svg_extracted_data.csv")
    csv = tmp_path / "chinchilla.csv"
    pd.DataFrame({"budget": raw["Training FLOP"], "n": raw["Model Size"],
                  "loss": raw["loss"]}).to_csv(csv, index=False)
    out = tmp_path / "out"
    assert main(["fit", f"results={csv}", f"sweep_dir={out}", "fit.bootstrap=100",
                 "fit.drop_highest_loss=5", "fit.figures=false"]) == 0
    fit = _load(out / "fit.json")
    assert fit["n_used"] == 240 and fit["n_excluded"] == 5
    assert "bucketed" in fit["approach2"]["note"]
    assert 0.4 < fit["approach2"]["a"] < 0.6
    assert fit["approach3"]["alpha"] == pytest.approx(0.3473, abs=0.002)
    assert fit["extrapolation"]["approach3"]["n_opt_log10_error"] is not None
    # no experiment= or family= named: no family member is guessed from the default experiment
    assert not fit["selection"]["applicable"]
    assert "experiment=" in fit["selection"]["reason"]


def test_figures_draw_a_said_sample_of_many_runs():
    from analysis.fit.plots import PLOT_MAX_POINTS, plotted_sample
    drawn, note = plotted_sample(100)
    assert list(drawn) == list(range(100)) and note == ""
    drawn, note = plotted_sample(100_000)
    assert drawn.size == PLOT_MAX_POINTS == np.unique(drawn).size
    assert note == f"markers: a random {PLOT_MAX_POINTS:,} of the 100,000 runs"

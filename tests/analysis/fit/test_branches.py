"""Branch studies (planner.strategy=branches) through collect and fit: results.csv carries
role, parent and branch_step; trunks are listed but never fitted; branches are ordinary
(N, D, loss) points (the fit is the one their independent twins give); the figures mark them
and the summary says how many there are and from which trunks."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from analysis.fit.isoflop import budget_groups
from analysis.fit.plots import (
    BRANCH_LABEL,
    BRANCH_MARKER,
    BudgetColours,
    frontier_figure,
    isoflop_figure,
)
from analysis.fit.points import TRUNK_REASON
from analysis.fit.porian import fit_approach2
from analysis.fit.result import FitResult
from analysis.fit.summary import branch_line
from analysis.settings import FitSettings
from jobs.cli import main
from sweep.io import PLAN_CSV, atomic_write_text, run_dir
from sweep.law import Law
from tests.analysis.conftest import DEMO_LAW
from trainers.run import train_run


def test_figures_mark_branch_points():
    rng = np.random.default_rng(0)
    budgets = np.repeat([1e17, 1e18, 1e19], 5)
    n = np.tile(np.geomspace(1e7, 1e8, 5), 3) * np.repeat([1, 3, 10], 5)
    points = pd.DataFrame({"budget": budgets, "n": n, "tokens": budgets / (6 * n),
                           "role": np.where(rng.random(15) < 0.5, "branch", ""),
                           "used": True})
    points["loss"] = DEMO_LAW.loss(points["n"], points["tokens"])
    settings = FitSettings(bootstrap=0)
    iso = fit_approach2(points, settings)
    groups, _ = budget_groups(points["budget"].to_numpy(float), settings.bucket_decades)
    for fig in (isoflop_figure(points, groups, iso, None, BudgetColours(groups)),
                frontier_figure(points, groups, iso, None, BudgetColours(groups), None)):
        ax = fig.axes[0]
        drawn = [c for c in ax.collections if len(c.get_offsets())]
        triangles = sum(len(c.get_offsets()) for c in drawn
                        if c.get_paths()[0].vertices.shape[0] == 4)  # ^: a closed triangle
        assert triangles == (points["role"] == "branch").sum()
        assert BRANCH_LABEL in [t.get_text() for t in ax.get_legend().get_texts()]
    assert BRANCH_MARKER == "^" and TRUNK_REASON.startswith("trunk:")


# demo_branches' own law (its design.law: the demo's fit), so its sizes bracket the optima.
DEMO_BRANCHES_LAW = ("trainer.law.E=0.5003", "trainer.law.A=19.7363", "trainer.law.B=92.7538",
                     "trainer.law.alpha=0.3401", "trainer.law.beta=0.348")


def test_a_simulated_branch_study_collects_and_fits_on_the_law(tmp_path, capsys):
    """experiment=demo_branches on the simulated trainer (trunks first, each branch from its
    trunk's checkpoint): collect lists the trunks with their stable-lr losses, the fit uses the
    branches and finds the simulated law's exponent."""
    sweep = tmp_path / "sweep"
    assert main(["plan", f"sweep_dir={sweep}", "experiment=demo_branches",
                 "trainer=simulated", "trainer.noise=0.01", *DEMO_BRANCHES_LAW]) == 0
    cfg = OmegaConf.to_container(OmegaConf.load(sweep / "config.yaml"))
    rows = list(csv.DictReader(open(sweep / PLAN_CSV)))
    assert [r["role"] for r in rows] == sorted((r["role"] for r in rows), reverse=True)
    for row in rows:  # plan order: trunks first, as the jobs order them
        train_run(row, cfg, run_dir(sweep, row["run_id"]))
        atomic_write_text(run_dir(sweep, row["run_id"]) / "state.json", json.dumps(
            {"run_id": row["run_id"], "state": "completed", "job_ids": ["1"], "attempts": 1}))
    assert main(["collect", f"sweep_dir={sweep}"]) == 0
    results = pd.read_csv(sweep / "results.csv", dtype={"run_id": str}, keep_default_na=False)
    assert (results["flag"] == "ok").all()
    trunks = results[results["role"] == "trunk"]
    law = Law(**cfg["trainer"]["law"])
    stable = trunks["final_val_loss"] / law.loss(trunks["n_active_flame"], trunks["tokens"])
    assert stable.median() == pytest.approx(1.03, abs=0.01)  # listed at the stable lr's loss
    capsys.readouterr()
    assert main(["fit", f"sweep_dir={sweep}", "fit.figures=false", "fit.bootstrap=0"]) == 0
    fit = json.loads((sweep / "fit.json").read_text())
    branches = results[results["role"] == "branch"]
    assert fit["n_used"] == len(branches) and fit["excluded"] == {"trunk": len(trunks)}
    assert set(fit["branches"]["from_trunks"]) == set(trunks["run_id"])
    # Approach 2 buckets branches by their isoFLOP budget; a trunk's own FLOPs are no budget.
    assert [b["budget"] for b in fit["approach2"]["budgets"]] == sorted(set(branches["budget"]))
    assert fit["approach3"]["a"] == pytest.approx(law.a, abs=0.03)
    printed = " ".join(capsys.readouterr().out.split())
    assert f"{len(branches)} of {len(branches)} fitted points are branches (cooldowns) of " \
           f"{len(trunks)} trunk(s)" in printed
    # Branch points are ordinary points: the same rows as a plain CSV (no role, no trunks)
    # fit to the same law.
    plain = tmp_path / "plain.csv"
    branches.rename(columns={"n_active_flame": "n", "final_val_loss": "loss"})[
        ["budget", "n", "tokens", "loss"]].to_csv(plain, index=False)
    assert main(["fit", f"sweep_dir={tmp_path / 'plain'}", f"results={plain}",
                 "fit.figures=false", "fit.bootstrap=0"]) == 0
    twin = json.loads((tmp_path / "plain" / "fit.json").read_text())
    assert twin["approach2"]["a"] == pytest.approx(fit["approach2"]["a"], rel=1e-12)
    assert twin["approach3"]["a"] == pytest.approx(fit["approach3"]["a"], rel=1e-9)
    assert twin["branches"]["points"] == 0 and branch_line(FitResult.from_json(twin)) == ""

"""Branch studies (planner.strategy=branches) through collect and fit: results.csv carries
role, parent and branch_step; trunks are listed but never fitted; branches are ordinary
(N, D, loss) points (the fit is the one their independent twins give); the figures mark them
and the summary says how many there are and from which trunks."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from analysis.data import TRUNK_REASON
from analysis.plots import BRANCH_LABEL, BRANCH_MARKER, frontier_figure, isoflop_figure
from analysis.isoflop import budget_groups
from analysis.plots import BudgetColours
from analysis.porian import fit_approach2
from analysis.settings import FitSettings
from analysis.summary import branch_line
from jobs.cli import main
from sweep.io import PLAN_CSV
from sweep.planrow import PlanRow

from .conftest import DEMO_LAW, plan_sweep, write_run


def _as_branches(sweep, cooldown: float = 0.2) -> tuple[list[PlanRow], list[PlanRow]]:
    """Rewrite the demo's plan.csv by hand as the contract's branch plan: per member one trunk
    (to its largest branch step, budget = its own FLOPs) and every run a branch of it."""
    rows = [PlanRow.from_csv(r) for r in csv.DictReader(open(sweep / PLAN_CSV))]
    branches, trunks = [], []
    for member in sorted({r.member for r in rows}):
        mine = [r for r in rows if r.member == member]
        steps = [r.train_iters - round(cooldown * r.train_iters) for r in mine]
        top = max(mine, key=lambda r: r.train_iters)
        iters = max(steps)
        tokens = top.tokens * iters // top.train_iters
        trunk = dataclasses.replace(top, run_id=f"trunk-{member}", role="trunk",
                                    train_iters=iters, tokens=tokens, warmup_iters=2,
                                    budget=top.flops_per_token * tokens,
                                    save_steps=tuple(sorted(steps)))
        trunks.append(trunk)
        branches += [dataclasses.replace(r, role="branch", parent=trunk.run_id, branch_step=s,
                                         warmup_iters=2) for r, s in zip(mine, steps)]
    with open(sweep / PLAN_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PlanRow.columns())
        writer.writeheader()
        writer.writerows(r.to_csv() for r in trunks + branches)
    return trunks, branches


def test_trunks_listed_not_fitted_branches_fitted_as_their_independent_twins(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    plan_sweep(sweep)
    trunks, branches = _as_branches(sweep)
    for row in pd.read_csv(sweep / PLAN_CSV, dtype={"run_id": str}).to_dict(orient="records"):
        stable = 0.03 if row["role"] == "trunk" else 0.0  # a trunk has not cooled down
        write_run(sweep, row, losses=lambda it, row=row, s=stable: s + float(
            DEMO_LAW.loss(row["n_active_flame"], max(it, 1) * row["global_batch_size"]
                          * row["seq_length"])))
    assert main(["collect", f"sweep_dir={sweep}"]) == 0
    results = pd.read_csv(sweep / "results.csv", dtype={"run_id": str}, keep_default_na=False)
    listed = results[results["role"] == "trunk"]
    assert sorted(listed["run_id"]) == sorted(t.run_id for t in trunks)
    assert (listed["flag"] == "ok").all() and (listed["status"] == "completed").all()
    by_id = results.set_index("run_id")
    for b in branches:
        assert by_id.loc[b.run_id, "parent"] == b.parent
        assert int(by_id.loc[b.run_id, "branch_step"]) == b.branch_step
    capsys.readouterr()
    assert main(["fit", f"sweep_dir={sweep}", "fit.figures=false", "fit.bootstrap=0"]) == 0
    fit = json.loads((sweep / "fit.json").read_text())
    assert fit["n_used"] == len(branches) and fit["excluded"] == {"trunk": len(trunks)}
    assert fit["branches"]["points"] == len(branches)
    assert fit["branches"]["from_trunks"] == {
        t.run_id: sum(b.parent == t.run_id for b in branches) for t in trunks}
    # The trunks' own FLOPs never become an isoFLOP budget: the budgets are the branches'.
    assert [b["budget"] for b in fit["approach2"]["budgets"]] == sorted(
        {b.budget for b in branches})
    printed = capsys.readouterr().out
    assert f"{len(branches)} of {len(branches)} fitted points are branches (cooldowns) of " \
           f"{len(trunks)} trunk(s)" in " ".join(printed.split())
    # Branch points are ordinary points: the same rows without role/parent (independent runs)
    # and without the trunks fit to the same law.
    plain = tmp_path / "plain.csv"
    ordinary = results[results["role"] != "trunk"].drop(columns=["role", "parent",
                                                                "branch_step"])
    ordinary.rename(columns={"n_active_flame": "n", "final_val_loss": "loss"})[
        ["budget", "n", "tokens", "loss"]].to_csv(plain, index=False)
    assert main(["fit", f"sweep_dir={tmp_path / 'plain'}", f"results={plain}",
                 "fit.figures=false", "fit.bootstrap=0"]) == 0
    twin = json.loads((tmp_path / "plain" / "fit.json").read_text())
    assert twin["approach2"]["a"] == pytest.approx(fit["approach2"]["a"], rel=1e-12)
    assert twin["approach3"]["a"] == pytest.approx(fit["approach3"]["a"], rel=1e-9)
    assert twin["branches"]["points"] == 0 and branch_line(twin) == ""


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

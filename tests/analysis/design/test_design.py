"""`flame design`: bad input exits 2 before anything is written; a target gives a plan that
`flame launch` runs unchanged on cluster=local with the simulated trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conf.study import load_sweep_config, plan_from_cfg
from jobs import ledger
from jobs.cli import compose, main
from jobs.status import wait_until_terminal
from sweep.config import read_plan
from tests.jobs.conftest import flame

# The demo study's own Approach 3 law (README: "The demo"; its fit.json) and a noise level.
LAW = "design.law={E:0.5003,A:19.7363,B:92.7538,alpha:0.3401,beta:0.348}"
# A small search: few replications and candidates (the suite's time budget).
SMALL = ("design.replications=40", "design.members_per_budget=[3,5]", "design.spans=[0.3,0.6]",
         "design.confirm=3", "design.min_budgets=4")
FAST = (*SMALL, "design.seeds=[1,2]", "design.branches=false")


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "d"
    no_law = tmp_path / "fit.json"
    no_law.write_text(json.dumps({"input": {"results": "r.csv", "kind": "csv", "n_column": "n"},
                                  "approach2": {}, "n_used": 6, "n_excluded": 0,
                                  "approach3": {"E": None, "A": None, "reason": "2 budgets"}}))
    err = _one_line_error(capsys, ["design", f"sweep_dir={sweep}", f"design.prior={no_law}"])
    assert "design.prior" in err and "E, A, B, alpha, beta" in err
    err = _one_line_error(capsys, ["design", f"sweep_dir={sweep}", LAW, "design.noise=0"])
    assert "design.noise=0" in err and "> 0" in err
    err = _one_line_error(capsys, ["design", f"sweep_dir={sweep}",
                                   "experiment=demo_adaptive"])  # an experiment without prior
    assert "design.prior" in err
    err = _one_line_error(capsys, ["design", f"sweep_dir={sweep}", LAW, "design.noise=0.02",
                                   "design.law.beta=-1"])
    assert "beta" in err
    err = _one_line_error(capsys, ["design", f"sweep_dir={sweep}", LAW, "design.noise=0.02",
                                   "design.seeds=[0,2]"])
    assert "design.seeds=[0, 2]" in err and ">= 1" in err
    err = _one_line_error(capsys, ["design", f"sweep_dir={sweep}", LAW, "design.noise=0.02",
                                   "design.target_halfwidth=0.001", *FAST])
    assert "design.target_halfwidth=0.001" in err and "best reachable" in err
    best = float(err.split("half-width of a is ")[1].split()[0])
    assert best > 0.001
    assert not sweep.exists()


def test_target_writes_a_plan_that_launch_runs(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "d"
    common = ["trainer=simulated", f"sweep_dir={sweep}"]
    # Two seeds per (budget, member) in every candidate: the plan carries the replicates.
    assert main(["design", *common, LAW, "design.noise=0.02", "design.target_halfwidth=0.3",
                 *SMALL, "design.seeds=[2]", "design.branches=false"]) == 0
    out = capsys.readouterr().out
    assert "demo_grid plan" in out and "chosen" in out  # the default experiment's plan
    report = json.loads((sweep / "design.json").read_text())
    plan_entry, chosen = report["designs"][0], report["designs"][1]
    assert chosen["name"] == report["chosen"]
    assert chosen["a_halfwidth"]["approach3"] <= 0.3
    for entry in (plan_entry, chosen):
        assert {"runs", "flops", "gpu_hours", "a_halfwidth", "a_bias", "p_member"} <= set(entry)
        assert set(entry["a_halfwidth"]) == {"approach2", "approach3"}
        assert set(entry["p_member"]) == {"3e+12", "1e+13", "3e+13"}  # the demo's targets
    assert plan_entry["runs"] == 32 and chosen["flops"] < plan_entry["flops"]
    assert (sweep / "figures" / "design.png").stat().st_size > 0
    assert (sweep / "figures" / "design.svg").stat().st_size > 0
    rows = read_plan(sweep)
    assert len(rows) == chosen["runs"] and chosen["params"]["seeds"] == 2
    assert sorted({r.budget for r in rows}) == chosen["budgets"]
    assert [r.replicate for r in rows] == [0, 1] * (len(rows) // 2)
    assert len({r.run_id for r in rows}) == len(rows)
    assert load_sweep_config(sweep)["planner"]["seeds"] == 2
    # The written config plans exactly this plan again, and `flame launch` runs it as it is.
    again, _ = plan_from_cfg(load_sweep_config(sweep))
    assert [r.run_id for r in again.runs] == [r.run_id for r in rows]
    launched = flame("launch", f"sweep_dir={sweep}", "cluster=local", "cluster.poll_s=0.3")
    assert f"submitted {len(rows)} runs" in launched.stdout
    cfg = compose([f"sweep_dir={sweep}", "cluster=local", "cluster.poll_s=0.3"])
    final = wait_until_terminal(sweep, cfg, poll_s=0.3, progress=False)
    assert final.counts.get("completed") == len(rows), final.summary()
    assert {r.run_id for r in rows} == set(ledger.read_all(sweep))
    # replicates are runs of their own: the same (budget, member), other losses
    losses = [json.loads((sweep / "runs" / r.run_id / "summary.json").read_text())
              ["final_val_loss"] for r in rows]
    assert all(a != b for a, b in zip(losses[::2], losses[1::2]))


def test_unreachable_cap_names_the_cheapest(tmp_path: Path, capsys) -> None:
    err = _one_line_error(capsys, ["design", f"sweep_dir={tmp_path / 'd'}", LAW,
                                   "design.noise=0.02", "design.max_flops=1e9", *FAST])
    assert "design.max_flops" in err and "cheapest" in err


@pytest.mark.parametrize("path", ["analysis/data/flame_moe_prior/fit.json"])
def test_shipped_prior_is_flame_moe_approach3(path: str) -> None:
    fit = json.loads((Path(__file__).parents[3] / path).read_text())
    assert fit["approach3"]["n_points"] == 48
    assert fit["approach3"]["a"] == pytest.approx(0.78, abs=0.01)


def test_seeded_screen_is_the_single_seed_screen_over_sqrt_r() -> None:
    """screen_all's shortcut for replicated designs equals solving them in full."""
    from analysis.design.search import candidate_runs, candidates, linear_halfwidth, screen_all
    from analysis.design.simulate import load_prior
    from conf.study import hash_context, settings_from_cfg, study_config
    from sweep.family import build_family
    study = study_config(compose(["sweep_dir=unused", *SMALL, "design.seeds=[1,4]"]))
    prior = load_prior(study.design, study.fit)
    runs = candidate_runs(study.budgets.flops, build_family(study.family),
                          settings_from_cfg(study), hash_context(study), seeds=4)
    every = candidates(prior, runs, study.design, study.fit.n_column)
    pool = [d for d in every if d.params["seeds"] == 1][:3] + [
        d for d in every if d.params["seeds"] == 4][:3]
    assert len(pool) == 6 and {r.replicate for r in pool[3].runs} == {0, 1, 2, 3}
    fast = screen_all(pool, prior, study.design, study.fit)
    slow = [linear_halfwidth(d, prior, study.fit) for d in pool]
    assert fast == pytest.approx(slow, rel=1e-9)


def test_branch_designs_cost_the_same_points_as_trunks_and_cooldowns(tmp_path: Path,
                                                                      capsys) -> None:
    """experiment=demo_branches: its points (the branches, not the trunks) are simulated as any
    design's; each design's branch cost is what `flame plan` plans for those points."""
    sweep = tmp_path / "d"
    assert main(["design", f"sweep_dir={sweep}", "experiment=demo_branches", *FAST,
                 "design.replications=20", "design.confirm=1", "design.seeds=[1]",
                 "design.branches=true"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    report = json.loads((sweep / "design.json").read_text())
    own, chosen = report["designs"][0], report["designs"][1]
    planned, _ = plan_from_cfg(compose([f"sweep_dir={sweep}", "experiment=demo_branches"]))
    trunks = [r for r in planned.runs if r.role == "trunk"]
    assert own["runs"] == len(planned.runs) - len(trunks)  # points: the branches only
    assert own["flops"] == pytest.approx(sum(r.flops for r in planned.runs
                                             if r.role == "branch"), rel=1e-12)
    branch = own["branches"]
    assert branch["flops"] == pytest.approx(sum(r.own_flops for r in planned.runs), rel=1e-12)
    assert branch["trunks"] == len(trunks) and branch["fraction_of_independent"] < 0.8
    assert chosen["branches"]["flops"] < chosen["flops"]
    # the plan as branches is simulated too, with the noise its trunks' branches share
    as_branches = next(e for e in report["designs"] if e["trained_as"] == "branches")
    assert as_branches["name"] == "demo_branches plan, as branches"
    assert as_branches["flops"] == pytest.approx(branch["flops"], rel=1e-12)
    assert as_branches["branch_cost"]["trunks"] == len(trunks)
    assert "trunks" in out and "design.branch_shared" in out


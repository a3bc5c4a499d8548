"""Trunks and branches on the simulated trainer (issue 14): the schedule's effect on the loss
(Hägele et al. 2024: a constant-lr trunk sits above the law, a cooled-down branch ends on it),
the trunk's checkpoints at its branch steps, a branch's start from them."""

from __future__ import annotations

import json

import pytest

from sweep.law import Law
from sweep.planrow import PlanRow
from tests.trainers.conftest import make_plan
from trainers.artifacts import branch_ready
from trainers.run import train_run
from trainers.simulated import STABLE_EXCESS


def test_trunk_above_the_law_branches_on_it(tmp_path):
    rows, cfg = make_plan(tmp_path / "sweep", "trainer=simulated", "trainer.noise=0",
                          "planner.strategy=branches", "trainer.eval_points=20")
    rows = [PlanRow.from_csv(r) for r in rows]
    law = Law(**cfg["trainer"]["law"])
    runs = tmp_path / "sweep" / "runs"
    trunk = max((r for r in rows if r.role == "trunk"), key=lambda t: len(t.save_steps))
    kids = [r for r in rows if r.parent == trunk.run_id]
    assert len(kids) >= 2
    with pytest.raises(RuntimeError, match="has no checkpoint at iteration"):
        train_run(kids[0].to_csv(), cfg, runs / kids[0].run_id)
    done = train_run(trunk.to_csv(), cfg, runs / trunk.run_id)
    assert done["final_val_loss"] == pytest.approx(
        law.loss(trunk.n_active, trunk.tokens) * (1 + STABLE_EXCESS), rel=1e-12)
    assert all(branch_ready(runs / trunk.run_id, s, "simulated") for s in trunk.save_steps)
    for kid in kids:
        run_dir = runs / kid.run_id
        summary = train_run(kid.to_csv(), cfg, run_dir)
        assert summary["final_val_loss"] == pytest.approx(law.loss(kid.n_active, kid.tokens),
                                                          rel=1e-12)
        lines = (run_dir / "train.log").read_text().splitlines()
        assert lines[0] == f" branching from trunk {trunk.run_id} at iteration {kid.branch_step}"
        evals = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
        assert min(e["iteration"] for e in evals if "iteration" in e) > kid.branch_step
        # until its decay ends the branch is above the law, by less and less
        excess = [e["val_loss"] / law.loss(kid.n_active, e["consumed_tokens"]) - 1
                  for e in evals if e["kind"] == "eval" and not e["final"]]
        assert excess and all(0 < x < STABLE_EXCESS for x in excess)
        assert excess == sorted(excess, reverse=True)

"""planner.strategy=branches: trunks and branches per the contract of issue 14, their cost, and
the bad inputs (exit 2, one line, nothing written)."""

import math

import pytest

from sweep.branches import branch_step, layout
from sweep.errors import ConfigError
from sweep.family import build_family
from sweep.planner import plan
from sweep.planrow import PlanRow
from tests.sweep.test_planner import FAMILY, settings

BUDGETS = [1e12, 3e12, 1e13]


def branch_plan(**changes):
    members = build_family(FAMILY)
    s = settings(strategy="branches", warmup_fraction=0.02, **changes)
    return plan(BUDGETS, members, s, {"training": {"lr": 1e-3}}), s


def test_branches_are_the_independent_runs_with_a_trunk_per_member():
    independent = plan(BUDGETS, build_family(FAMILY), settings(), {"training": {"lr": 1e-3}})
    the_plan, _ = branch_plan()
    trunks = [r for r in the_plan.runs if r.role == "trunk"]
    branches = [r for r in the_plan.runs if r.role == "branch"]
    assert the_plan.runs == trunks + branches  # trunks first
    assert [(r.budget, r.member.name, r.tokens, r.train_iters) for r in branches] == [
        (r.budget, r.member.name, r.tokens, r.train_iters) for r in independent.runs]
    assert {r.run_id for r in branches}.isdisjoint(r.run_id for r in independent.runs)
    assert len(trunks) == len({r.member.name for r in independent.runs})
    by_id = {t.run_id: t for t in trunks}
    for b in branches:
        trunk = by_id[b.parent]
        cooldown = round(0.2 * b.train_iters)
        assert b.branch_step == b.train_iters - cooldown and b.branch_step in trunk.save_steps
        assert b.warmup_iters == trunk.warmup_iters and trunk.member == b.member
        assert b.own_flops == pytest.approx(b.flops * cooldown / b.train_iters)
    for t in trunks:
        kids = [b for b in branches if b.parent == t.run_id]
        assert t.train_iters == max(b.branch_step for b in kids)
        assert t.save_steps == tuple(sorted({b.branch_step for b in kids}))
        assert t.warmup_iters == max(1, round(0.02 * min(b.train_iters for b in kids)))
        assert t.tokens == t.train_iters * 8 * 64 and t.budget == t.flops == t.own_flops
    # what branching saves: each trunk once, each branch only its cooldown
    own = sum(r.own_flops for r in the_plan.runs)
    assert own < sum(b.flops for b in branches)
    cooldowns = sum(b.flops * (b.train_iters - b.branch_step) / b.train_iters for b in branches)
    assert own == pytest.approx(sum(t.flops for t in trunks) + cooldowns)


def test_rows_round_trip_and_ids_are_stable():
    the_plan, s = branch_plan()
    again, _ = branch_plan()
    assert [r.run_id for r in the_plan.runs] == [r.run_id for r in again.runs]
    for run in the_plan.runs[:2] + the_plan.runs[-2:]:
        row = run.to_row(s)
        assert PlanRow.from_csv({k: str(v) for k, v in row.to_csv().items()}) == row
        assert (row.role, row.parent, row.branch_step, row.save_steps) == (
            run.role, run.parent, run.branch_step, run.save_steps)
    # another cooldown changes every branch's and trunk's id
    other, _ = branch_plan(cooldown_fraction=0.3)
    assert not {r.run_id for r in other.runs} & {r.run_id for r in the_plan.runs}


def test_branch_steps_round_down_to_the_multiple_and_replicates_get_their_own_trunk():
    assert branch_step(1037, 0.2, 1) == 830 and branch_step(1037, 0.2, 100) == 800
    the_plan, _ = branch_plan(branch_step_multiple=10, seeds=2)
    trunks = [r for r in the_plan.runs if r.role == "trunk"]
    assert all(step % 10 == 0 for t in trunks for step in t.save_steps)
    assert {t.replicate for t in trunks} == {0, 1}
    for b in (r for r in the_plan.runs if r.role == "branch"):
        parent = next(t for t in trunks if t.run_id == b.parent)
        assert parent.replicate == b.replicate and b.train_iters - b.branch_step >= 1


def test_a_cooldown_that_rounds_to_nothing_removes_the_run():
    members = build_family(FAMILY)
    s = settings(strategy="branches", cooldown_fraction=0.001, min_iters=1)
    the_plan = plan(BUDGETS, members, s)
    gone = [r for r in the_plan.removed if r.constraint == "planner.cooldown_fraction"]
    assert gone and all(r.train_iters * 0.001 >= 0.5 for r in the_plan.runs if r.role == "branch")


def test_a_branch_before_the_warmup_ends_is_a_config_error():
    with pytest.raises(ConfigError, match="planner.cooldown_fraction=0.9.*warmup"):
        layout([100, 1000], 0.9, 1, 0.2, ["a", "b"])
    assert layout([100, 1000], 0.2, 1, 0.02, ["a", "b"]).save_steps == (80, 800)


@pytest.mark.parametrize("changes, expected", [
    ({"strategy": "both"}, "planner.strategy='both'"),
    ({"cooldown_fraction": 0.0}, "planner.cooldown_fraction=0.0: must be in (0, 1)"),
    ({"cooldown_fraction": 1.0}, "planner.cooldown_fraction=1.0: must be in (0, 1)"),
    ({"branch_step_multiple": 0}, "planner.branch_step_multiple=0"),
    ({"strategy": "branches", "adaptive": True}, "planner.adaptive=true"),
])
def test_bad_planner_keys(changes, expected):
    with pytest.raises(ConfigError) as err:
        settings(**changes)
    assert expected in str(err.value)


@pytest.mark.parametrize("overrides, expected", [
    (["planner.cooldown_fraction=1.5"], "planner.cooldown_fraction=1.5: must be in (0, 1)"),
    (["planner.cooldown_fraction=0.97"], "not after the shared warmup"),
    (["training.min_lr=3e-3"], "training.min_lr=0.003 is not below training.lr"),
    (["trainer=megatron", "+trainer.extra_args=['--lr-decay-style cosine']"],
     "--lr-decay-style cosine is not WSD"),
    (["trainer=megatron", "+trainer.extra_args=['--lr-wsd-decay-iters=5']"],
     "--lr-wsd-decay-iters would replace"),
])
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, overrides,
                                                           expected):
    from jobs.cli import main
    sweep = tmp_path / "s"
    assert main(["plan", f"sweep_dir={sweep}", "planner.strategy=branches", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not sweep.exists()


def test_demo_ids_stay_pinned_and_demo_branches_saves_flops():
    from pathlib import Path

    from conf.study import plan_from_cfg
    from jobs.cli import compose
    pinned = (Path(__file__).parent / "data" / "demo_run_ids.txt").read_text().split()
    demo, _ = plan_from_cfg(compose(["sweep_dir=unused", "experiment=demo_grid",
                                     "planner.cooldown_fraction=0.2",
                                     "planner.branch_step_multiple=1"]))
    assert [r.run_id for r in demo.runs] == pinned  # the new keys at their defaults
    branches, _ = plan_from_cfg(compose(["sweep_dir=unused", "experiment=demo_branches"]))
    own = sum(r.own_flops for r in branches.runs)
    assert own <= 0.6 * sum(r.flops for r in demo.runs)
    assert {r.role for r in branches.runs} == {"trunk", "branch"}
    assert not math.isnan(own)

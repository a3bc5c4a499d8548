import math

import pytest

from sweep.errors import ConfigError
from sweep.family import build_family
from sweep.planner import PlannerSettings, Prior, plan, validate_budgets

FAMILY = {
    "base": {"num_attention_heads": 4, "num_experts": 8, "moe_router_topk": 2,
             "first_dense_layers": 1, "vocab_size": 256, "seq_length": 64},
    "ffn_ratio": 2.5, "moe_ffn_ratio": 0.5, "shared_expert_ratio": 1.0,
    "grid": {"hidden_size": [32, 64, 128, 256], "num_layers": [2, 4]},
}


def settings(**changes):
    return PlannerSettings(**{"global_batch_size": 8, "min_iters": 10, "accounting": "flame",
                              "flops_formula": "6n", "device_peak_flops": 989e12,
                              "assumed_mfu": 0.35, **changes})


def test_grid_family_and_ratios():
    members = build_family(FAMILY)
    assert len(members) == 8
    m = members[0].arch
    assert (m.hidden_size, m.ffn_hidden_size, m.moe_ffn_hidden_size, m.shared_expert_size) == (
        32, 80, 16, 16)


def test_iterations_tokens_and_order():
    result = plan([1e12, 1e11], build_family(FAMILY), settings())
    assert [r.budget for r in result.runs] == sorted(r.budget for r in result.runs)
    for run in result.runs:
        per_iter = run.flops_per_token * 8 * 64
        assert run.train_iters == math.ceil(run.budget / per_iter)
        assert run.tokens == run.train_iters * 8 * 64
        assert run.tokens * run.flops_per_token >= run.budget


def test_constraints_remove_and_report():
    members = build_family(FAMILY)
    full = plan([1e12], members, settings())
    capped = plan([1e12], members, settings(max_tokens=2e6))
    assert len(capped.runs) < len(full.runs)
    assert {r.constraint for r in capped.removed} == {"planner.max_tokens"}
    # the full plan spans 0.03 to 140 tokens per parameter: the window cuts both ends
    window = plan([1e12], members, settings(min_tokens_per_param=1, max_tokens_per_param=100))
    for run in window.runs:
        assert 1 <= run.tokens / run.n_active <= 100
    assert len(window.runs) + len(window.removed) == len(full.runs)
    assert {r.constraint for r in window.removed} == {"planner.min_tokens_per_param",
                                                     "planner.max_tokens_per_param"}


def test_prior_centres_sizes_on_predicted_optimum():
    members = build_family(FAMILY)
    n_opt = 0.1 * 1e12 ** 0.5  # 1e5
    centred = plan([1e12], members, settings(prior=Prior(k=0.1, a=0.5, span_log10=0.3)))
    assert centred.runs and centred.removed
    for run in centred.runs:
        assert abs(math.log10(run.n_active / n_opt)) <= 0.3
    assert all(r.constraint == "planner.prior" for r in centred.removed)


def test_budget_too_small_for_min_iters_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"budgets.flops.*too small.*planner.min_iters"):
        plan([1e6], build_family(FAMILY), settings())


@pytest.mark.parametrize("budgets, match", [
    ([-1e18], r"budgets.flops\[0\].*positive"), ([float("nan")], r"budgets.flops\[0\]"),
    (["abc"], r"not a number"), ([], "empty"), ([1e18, 1e18], "duplicate")])
def test_bad_budgets(budgets, match):
    with pytest.raises(ConfigError, match=match):
        validate_budgets(budgets)


def test_run_ids_are_stable_and_depend_on_result_inputs():
    members = build_family(FAMILY)
    a = plan([1e12], members, settings(), {"training": {"lr": 1e-3}})
    b = plan([1e12], members, settings(), {"training": {"lr": 1e-3}})
    c = plan([1e12], members, settings(), {"training": {"lr": 2e-3}})
    ids = [r.run_id for r in a.runs]
    assert ids == [r.run_id for r in b.runs]
    assert len(set(ids)) == len(ids)
    assert not set(ids) & {r.run_id for r in c.runs}


def test_family_errors_name_the_member():
    bad = {**FAMILY, "grid": None, "members": [{"hidden_size": 30, "num_layers": 2}]}
    with pytest.raises(ConfigError, match=r"family.members\[0\].*num_attention_heads"):
        build_family(bad)
    with pytest.raises(ConfigError, match="unknown config key .*num_heads.*MemberConfig"):
        build_family({**FAMILY, "grid": None, "members": [{"hidden_size": 32, "num_layers": 2,
                                                           "num_heads": 4}]})


def test_round_to_nearest_iterations():
    members = build_family(FAMILY)
    ceil_plan = plan([1e12], members, settings())
    round_plan = plan([1e12], members, settings(iters_rounding="round"))
    for c, r in zip(ceil_plan.runs, round_plan.runs):
        exact = c.budget / (c.flops_per_token * 8 * 64)
        assert c.train_iters == math.ceil(exact) and r.train_iters == round(exact)
    with pytest.raises(ConfigError, match="planner.iters_rounding"):
        settings(iters_rounding="floor")


def test_replicates_keep_replicate_0_ids_and_get_their_own():
    members = build_family(FAMILY)
    ctx = {"training": {"lr": 1e-3}}
    single = plan([1e12], members, settings(), ctx).runs
    tripled = plan([1e12], members, settings(seeds=3), ctx).runs
    assert len(tripled) == 3 * len(single)
    assert [r.run_id for r in tripled if r.replicate == 0] == [r.run_id for r in single]
    assert len({r.run_id for r in tripled}) == len(tripled)
    # each (budget, member) in replicate order, the copies identical but for id and replicate
    assert [r.replicate for r in tripled[:3]] == [0, 1, 2]
    assert len({(r.member.name, r.tokens, r.train_iters) for r in tripled[:3]}) == 1
    # the cost counts every replicate
    assert sum(r.gpu_hours for r in tripled) == pytest.approx(3 * sum(r.gpu_hours
                                                                      for r in single))


def test_plan_csv_carries_the_replicate_and_old_files_read_as_0():
    from sweep.planrow import PlanRow
    run = plan([1e12], build_family(FAMILY), settings(seeds=2)).runs[1]
    row = run.to_row(settings(seeds=2))
    text = {k: str(v) for k, v in row.to_csv().items()}
    assert text["replicate"] == "1" and PlanRow.from_csv(text) == row
    assert row.seed(1234) == 1235
    old = {k: v for k, v in text.items() if k != "replicate"}  # a plan.csv from before seeds
    assert PlanRow.from_csv(old).replicate == 0 and PlanRow.from_csv(old).seed(1234) == 1234


def test_seeds_below_1_exit_2_naming_the_field(tmp_path, capsys):
    from jobs.cli import main
    assert main(["plan", f"sweep_dir={tmp_path / 's'}", "planner.seeds=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "planner.seeds=0" in err and ">= 1" in err
    assert not (tmp_path / "s").exists()


def test_demo_ids_stay_pinned_with_replicates():
    from pathlib import Path

    from conf.study import plan_from_cfg
    from jobs.cli import compose
    pinned = (Path(__file__).parent / "data" / "demo_run_ids.txt").read_text().split()
    the_plan, _ = plan_from_cfg(compose(["sweep_dir=unused", "experiment=demo_grid",
                                         "planner.seeds=2"]))
    assert [r.run_id for r in the_plan.runs if r.replicate == 0] == pinned
    assert len({r.run_id for r in the_plan.runs}) == 2 * len(pinned)

"""`flame design` under the law's misfit: a per-shape offset shared by every budget and seed of
a shape, seed noise per run, and branches of one trunk sharing part of it."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from pathlib import Path

import numpy as np
import pytest

from analysis.design.noise import NoiseModel, draw_log_errors, resolve
from analysis.design.search import (
    asymptotic_halfwidth,
    candidate_runs,
    candidates,
    linear_halfwidth,
    screen_all,
    search_seeds,
    variance_pieces,
)
from analysis.design.simulate import Design, load_prior, simulate
from conf.study import hash_context, plan_from_cfg, settings_from_cfg, study_config
from jobs.cli import compose, main
from sweep.errors import ConfigError
from sweep.family import build_family

SMALL = ("design.replications=40", "design.members_per_budget=[3,5]", "design.spans=[0.3,0.6]",
         "design.confirm=3", "design.min_budgets=4")
MISFIT = ("design.shape_sd=0.02", "design.seed_sd=0.012")


def test_noise_split_from_keys_prior_or_iid(tmp_path: Path) -> None:
    assert resolve(0.018, 0.013, None, 0.5, None).seed_sd == pytest.approx(
        math.sqrt(0.018 ** 2 - 0.013 ** 2))
    assert resolve(0.018, None, 0.012, 0.5, None).shape_sd == pytest.approx(
        math.sqrt(0.018 ** 2 - 0.012 ** 2))
    iid = resolve(0.02, None, None, 0.5, None)
    assert iid.shape_sd == 0 and iid.seed_sd == 0.02 and not iid.known
    measured = resolve(0.02, None, None, 0.5, {"shape_sd": 0.015, "seed_sd": 0.01})
    assert measured.known and measured.total == pytest.approx(0.02)  # shares at the total
    with pytest.raises(ConfigError, match="design.shape_sd"):
        resolve(0.01, 0.02, None, 0.5, None)
    # a prior fit.json with variance_components carries the split into flame design
    shipped = json.loads((Path(__file__).parents[3] / "analysis/data/flame_moe_prior/fit.json")
                         .read_text())
    shipped["variance_components"] = {"seed_sd": 0.01, "shape_sd": 0.015, "n_shapes": 16,
                                      "n_replicated_points": 8, "method": "test"}
    prior_path = tmp_path / "fit.json"
    prior_path.write_text(json.dumps(shipped))
    study = study_config(compose(["experiment=flame_sweep", f"design.prior={prior_path}",
                                  "design.noise=null", "design.shape_sd=null", "sweep_dir=x"]))
    prior = load_prior(study.design, study.fit)
    assert (prior.split.shape_sd, prior.split.seed_sd) == pytest.approx((0.015, 0.01))
    assert prior.noise == pytest.approx(math.hypot(0.015, 0.01))
    assert search_seeds(study.design, prior) == [1, 2, 4, 8]  # the split is known
    iid_study = study_config(compose(["sweep_dir=x"]))  # the demo: no split, seeds not searched
    assert search_seeds(iid_study.design, load_prior(iid_study.design, iid_study.fit)) == [1]


def test_errors_share_a_shape_offset_and_a_trunk_draw() -> None:
    noise = NoiseModel(0.02, 0.01, 0.6, "test")
    shape = np.array([0, 0, 1, 1])
    trunk = np.array([0, 0, 1, -1])  # the last run: independent
    err = draw_log_errors(noise, shape, trunk, 200_000, np.random.default_rng(0))
    cov = np.cov(err.T)
    assert cov[0, 0] == pytest.approx(noise.total ** 2, rel=0.02)
    assert cov[0, 1] == pytest.approx(0.02 ** 2 + 0.6 * 0.01 ** 2, rel=0.03)  # one trunk
    assert cov[2, 3] == pytest.approx(0.02 ** 2, rel=0.03)      # one shape, not one trunk
    assert abs(cov[0, 2]) < 2e-6                                # other shapes: independent


def _pool(extra=()):
    study = study_config(compose(["sweep_dir=unused", *SMALL, "design.seeds=[1,4]", *extra]))
    prior = load_prior(study.design, study.fit)
    runs = candidate_runs(study.budgets.flops, build_family(study.family),
                          settings_from_cfg(study), hash_context(study), seeds=4)
    return study, prior, candidates(prior, runs, study.design, study.fit.n_column)


def test_seeds_do_not_average_the_misfit_away() -> None:
    study, prior, pool = _pool(MISFIT)
    one = next(d for d in pool if d.params["seeds"] == 1)
    vv, ss = variance_pieces(one, prior, study.fit)
    floor = 1.96 * 0.02 * math.sqrt(ss)  # infinitely many seeds: the shapes' part is left
    many = asymptotic_halfwidth(vv, ss, prior, study.fit, seeds=10_000)
    assert many == pytest.approx(floor, rel=0.02)
    iid = dataclasses.replace(prior, model=NoiseModel(0.0, prior.noise, 0.5, "iid"))
    assert asymptotic_halfwidth(vv, ss, iid, study.fit, seeds=10_000) < 0.05 * many
    # the shortcut for replicated and branch designs equals the sandwich solved in full
    picked = [d for d in pool if d.params["seeds"] == 1][:2] + [
        d for d in pool if d.params["seeds"] == 4][:2]
    branched = [dataclasses.replace(d, branches=True) for d in picked]
    fast = screen_all(picked + branched, prior, study.design, study.fit)
    slow = [linear_halfwidth(d, prior, study.fit) for d in picked + branched]
    assert fast == pytest.approx(slow, rel=1e-9)
    # a shared trunk changes it (wider or narrower: a's influences of one member's budgets
    # may cancel a common error)
    assert slow[4:] != pytest.approx(slow[:4], rel=1e-3)


def test_simulated_spread_matches_the_screen_under_misfit() -> None:
    """The screen (a linearised sandwich) and the simulation (refits of drawn studies) agree
    on the demo's plan under misfit (150 replications estimate a half-width to ~12%)."""
    study = study_config(compose(["sweep_dir=unused", *MISFIT, "design.replications=150"]))
    prior = load_prior(study.design, study.fit)
    the_plan, _ = plan_from_cfg(study)
    plan = Design("plan", tuple(the_plan.runs))
    screened = linear_halfwidth(plan, prior, study.fit)
    got = simulate(plan, prior, study.design, study.fit, None, approach3=True)
    assert got["a_halfwidth"]["approach3"] == pytest.approx(screened, rel=0.3)


def test_output_names_budgets_usable_fractions_cautions_and_the_plan_command(
        tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "d"
    args = ["design", f"sweep_dir={sweep}", *SMALL, *MISFIT, "design.seeds=[1,2]",
            "design.replications=20", "design.confirm=2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    report = json.loads((sweep / "design.json").read_text())
    assert report["prior"]["shape_sd"] == 0.02 and report["seeds_searched"] == [1, 2]
    assert "Budgets and shapes (members) of each design:" in out
    assert "shapes (" in report["chosen"] and "at the largest" in report["chosen"]
    for entry in report["designs"]:
        assert f"({entry['usable']['approach2']:.0%})" in " ".join(out.split()) or \
            entry["usable"]["approach2"] < 0.01 or entry["usable"]["approach2"] > 0.99
    assert "plan it: flame design" in out and report["plan_command"].startswith("flame design")
    assert any("selection picks" in c or "Approach 2" in c for c in report["cautions"]) or \
        not report["cautions"]


def test_the_printed_command_plans_the_chosen_design(tmp_path: Path, capsys) -> None:
    """Without a target or cap nothing is written; the command it prints (the same search
    with the cap it used) chooses the same design and writes it as a plan."""
    sweep = tmp_path / "d"
    assert main(["design", f"sweep_dir={sweep}", *SMALL, *MISFIT, "design.replications=20",
                 "design.confirm=2"]) == 0
    report = json.loads((sweep / "design.json").read_text())
    assert report["plan"] is None
    command = shlex.split(report["plan_command"])
    assert main(command[1:]) == 0
    again = json.loads((Path(command[-1].split("=", 1)[1]) / "design.json").read_text())
    assert again["chosen"] == report["chosen"] and again["plan"]
    assert (Path(again["plan"])).is_file()


def test_a_branch_design_is_written_as_a_branch_plan(tmp_path: Path) -> None:
    """A searched design trained as branches becomes planner.strategy=branches: the plan has
    one trunk per shape and its points as branches, and costs what the search said."""
    from analysis.design.branches import BranchCoster
    from analysis.design.plan import write_design_plan
    from conf.study import load_sweep_config
    from sweep.config import read_plan
    study = study_config(compose(["sweep_dir=unused", *SMALL, "design.seeds=[1]"]))
    prior = load_prior(study.design, study.fit)
    runs = candidate_runs(study.budgets.flops, build_family(study.family),
                          settings_from_cfg(study), hash_context(study))
    coster = BranchCoster(settings_from_cfg(study), hash_context(study))
    pool = candidates(prior, runs, study.design, study.fit.n_column, coster)
    design = next(d for d in pool if d.branches)
    independent_flops = sum(r.flops_per_token * r.tokens for r in design.runs)
    assert design.flops < independent_flops  # kept only where branches are cheaper
    write_design_plan(tmp_path, study, design)
    rows = read_plan(tmp_path)
    assert load_sweep_config(tmp_path)["planner"]["strategy"] == "branches"
    points = [r for r in rows if r.role != "trunk"]
    assert {(r.member, r.budget) for r in points} == {(r.member.name, r.budget)
                                                      for r in design.runs}
    assert sum(r.role == "trunk" for r in rows) == design.branch_cost["trunks"]

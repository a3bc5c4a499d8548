"""Is `flame design` honest, also when the law does not fit exactly? For FLAME-MoE's plan and
designs `flame design` wrote, compare the predicted 95% half-width of a (`flame design`'s
simulation) with the spread observed over many simulated studies fitted by `flame fit`'s own
code, and count how often `flame fit`'s 95% intervals cover the true a: under iid noise and
under the law's misfit (a log-loss offset shared by every budget and seed of a shape, plus
seed noise), both approaches.

    .venv/bin/python benchmarks/bench_design_honesty.py [--studies 100] [--bootstrap 200]
        [--sweep DIR ...] [--json out.json] [hydra overrides, default experiment=flame_sweep]

``--sweep DIR``: a design `flame design` wrote (plan.csv + config.yaml, e.g. with
``design.max_flops=...``); its plan's points are the design (as branches when its
planner.strategy is branches). The worlds: "iid" (every run's error independent, SD the
prior's total noise) and "misfit" (the experiment's design.shape_sd / seed_sd; flame_sweep:
0.013 + 0.0124, total 0.018). A study's losses are drawn here, independently of `flame
design`'s simulator (this file's ``draw_study``), and fitted with
``analysis.fit.intervals.fit_intervals``: the law, the noise structure and the bootstraps of
``flame fit`` (where a shape has several runs, Approach 2's resamples come from the law and
its interval is the pivot, withheld where flame fit withholds it: counted). Targets: observed /
predicted half-width within 0.8-1.25 and coverage 90-98% in the misfit world.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.design.branches import independent  # noqa: E402
from analysis.design.noise import NoiseModel  # noqa: E402
from analysis.design.simulate import Design, Points, PriorLaw, load_prior, simulate  # noqa: E402
from analysis.fit.intervals import fit_intervals  # noqa: E402
from conf.study import StudyConfig, load_sweep_config, plan_from_cfg  # noqa: E402
from jobs.cli import compose  # noqa: E402
from sweep.family import build_family  # noqa: E402


def sweep_design(path: str) -> tuple[Design, StudyConfig]:
    """The points of the plan a `flame design` run wrote into ``path``."""
    study = StudyConfig.from_cfg(load_sweep_config(path))
    the_plan, planner = plan_from_cfg(study)
    branches = planner.strategy == "branches"
    trunks = sum(r.role == "trunk" for r in the_plan.runs)
    cost = {"flops": float(sum(r.own_flops for r in the_plan.runs)),
            "gpu_hours": float(sum(r.gpu_hours for r in the_plan.runs)), "trunks": trunks}
    runs = independent(the_plan.runs)
    name = f"{path}: {len(runs)} points" + (f" as branches of {trunks} trunks" if branches
                                            else "")
    return Design(name, runs, branches=branches, branch_cost=cost if branches else None), study


def draw_study(design: Design, prior: PriorLaw, noise: NoiseModel, n_column: str,
               rng: np.random.Generator) -> pd.DataFrame:
    """One study's points: the law's loss times exp(shape offset + trunk share + own noise)."""
    pts = Points.of(design, prior.law, n_column)
    shapes = [r.member.name for r in design.runs]
    offset = {s: noise.shape_sd * rng.standard_normal() for s in dict.fromkeys(shapes)}
    share = noise.branch_shared if design.branches else 0.0
    trunk = {key: rng.standard_normal() for key in
             dict.fromkeys((r.member.name, r.replicate) for r in design.runs)}
    err = np.array([offset[r.member.name] + noise.seed_sd * (
        math.sqrt(share) * trunk[(r.member.name, r.replicate)]
        + math.sqrt(1 - share) * rng.standard_normal()) for r in design.runs])
    return pd.DataFrame({"budget": pts.budget, "n": pts.n, "tokens": pts.tokens,
                         "loss": pts.loss * np.exp(err), "shape": shapes})


def halfwidth(values: np.ndarray) -> float:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(hi - lo) / 2


def measure(design: Design, prior: PriorLaw, study: StudyConfig, studies: int, bootstrap: int,
            members) -> dict:
    """Predicted (flame design) against observed (flame fit over ``studies`` studies)."""
    predicted = simulate(design, prior, study.design, study.fit, members)
    fit = dataclasses.replace(study.fit, bootstrap=bootstrap, figures=False)
    rng = np.random.default_rng(12345)
    rows = []
    for s in range(studies):
        points = draw_study(design, prior, prior.split, study.fit.n_column, rng)
        rows.append(fit_intervals(points, dataclasses.replace(fit, seed=s)))
    out = {"design": design.name, "runs": len(design.runs), "flops": design.flops,
           "trained_as": predicted["trained_as"], "shapes": predicted["shapes"]}
    truth = prior.law.a
    for name, key in (("approach2", "a2"), ("approach3", "a3")):
        a = np.array([getattr(r, key) for r in rows if getattr(r, key) is not None], float)
        a = a[np.isfinite(a)]
        cis = [getattr(r, f"{key}_ci") for r in rows if getattr(r, f"{key}_ci")]
        want = predicted["a_halfwidth"].get(name, math.nan)
        seen = halfwidth(a) if a.size >= 10 else math.nan
        out[name] = {
            "predicted_halfwidth": want, "observed_halfwidth": seen,
            "ratio": seen / want if want and math.isfinite(want) else math.nan,
            "usable_predicted": predicted["usable"].get(name), "usable_observed":
                a.size / studies, "coverage": float(np.mean([c[0] <= truth <= c[1]
                                                             for c in cis])) if cis else
                math.nan, "intervals": len(cis),
            "mean_interval_halfwidth": float(np.mean([(c[1] - c[0]) / 2 for c in cis]))
                if cis else math.nan,
            "withheld": sum(bool(r.a2_withheld) for r in rows) if name == "approach2" else 0,
            "withheld_two_budgets": sum(r.a2_withheld.startswith("only") for r in rows)
                if name == "approach2" else 0}
    return out


def _withheld(count: int, two_budgets: int) -> str:
    """How many studies' Approach 2 intervals flame fit withholds: with a law from only 2
    budgets (fit.min_interval_budgets), or as unusable in most law-drawn resamples."""
    if not count:
        return ""
    return f" ({count} withheld: {two_budgets} with 2 budgets, {count - two_budgets} biased)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--sweep", action="append", default=[],
                        help="a design flame design wrote (repeatable)")
    parser.add_argument("--worlds", default="iid,misfit")
    parser.add_argument("--json", default=None)
    parser.add_argument("--skip-plan", action="store_true",
                        help="measure only the --sweep designs (the plan is the compute base)")
    args, overrides = parser.parse_known_args()
    study = StudyConfig.from_cfg(compose([*(overrides or ["experiment=flame_sweep"]),
                                          "sweep_dir=unused"]))
    prior = load_prior(study.design, study.fit)
    the_plan, _ = plan_from_cfg(study)
    designs = [(Design(f"{study.root.experiment_name} plan", independent(the_plan.runs)),
                build_family(study.family))]
    for path in args.sweep:
        design, own = sweep_design(path)
        designs.append((design, build_family(own.family)))
    misfit = prior.split
    worlds = {"iid": NoiseModel(0.0, misfit.total, misfit.branch_shared, "iid"),
              "misfit": misfit}
    base = designs[0][0].flops
    results, began = [], time.time()
    print(f"true a {prior.law.a:.4f}; misfit world: shape {misfit.shape_sd:.4g} + seed "
          f"{misfit.seed_sd:.4g} (branches share {misfit.branch_shared:g}); iid world: "
          f"{misfit.total:.4g}; {args.studies} studies each, fit.bootstrap={args.bootstrap}",
          flush=True)
    print("| design | world | compute | approach | predicted ±a | observed ±a (ratio) | "
          "usable (pred / obs) | flame fit's mean ±a | intervals covering a |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for world in args.worlds.split(","):
        world_prior = dataclasses.replace(prior, noise=worlds[world].total, model=worlds[world])
        for design, members in designs[1:] if args.skip_plan else designs:
            row = measure(design, world_prior, study, args.studies, args.bootstrap, members)
            row["world"] = world
            results.append(row)
            for name in ("approach2", "approach3"):
                m = row[name]
                print(f"| {design.name} ({row['runs']} points, {row['shapes']} shapes, "
                      f"{row['trained_as']}) | {world} | {row['flops'] / base:.0%} | {name} | "
                      f"{m['predicted_halfwidth']:.3f} | {m['observed_halfwidth']:.3f} "
                      f"({m['ratio']:.2f}) | {m['usable_predicted']:.0%} / "
                      f"{m['usable_observed']:.0%} | {m['mean_interval_halfwidth']:.3f} | "
                      f"{m['coverage']:.0%} of {m['intervals']}"
                      f"{_withheld(m['withheld'], m['withheld_two_budgets'])} |", flush=True)
    print(f"({time.time() - began:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()

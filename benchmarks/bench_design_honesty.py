"""Is `flame design` honest? Train one design many times with the simulated trainer (real
`flame launch` on cluster=local, one trainer.seed per study, then `flame collect` and `flame
fit`) and compare the observed spread of a with the predicted 95% half-width, and count how
often flame fit's 95% intervals cover the true a.

    .venv/bin/python benchmarks/bench_design_honesty.py [--studies 20] [--bootstrap 200]
        [--target 0.11] [--out /tmp/honesty] [hydra overrides, e.g. experiment=flame_sweep]

Studies already fitted under --out are reused (more --studies adds to them). The design is the
experiment's own plan, or with --target the cheapest searched design that
meets it (as `flame design design.target_halfwidth=T`). The simulated trainer draws from the
prior law with the prior's noise. Targets (issue 13): observed/predicted half-width within
0.8-1.2, coverage 90-98%. Prints the ratios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from analysis.design.plan import design_config  # noqa: E402
from analysis.design.search import candidate_runs, candidates, optimise  # noqa: E402
from analysis.design.simulate import Design, load_prior, simulate  # noqa: E402
from analysis.fit.result import read_fit  # noqa: E402
from conf.study import (  # noqa: E402
    StudyConfig,
    hash_context,
    plan_from_cfg,
    study_config,
    write_plan,
)
from jobs.cli import compose  # noqa: E402
from sweep.family import build_family  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def flame(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "jobs.cli", *argv], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)


def chosen_design(cfg, target: float | None) -> Design:
    study = StudyConfig.from_cfg(cfg)
    prior = load_prior(study.design, study.fit)
    the_plan, planner = plan_from_cfg(study)
    if target is None:
        return Design(f"{study.root.experiment_name} plan", tuple(the_plan.runs))
    members = build_family(study.family)
    by_budget = candidate_runs(sorted(study.design.budgets or study.budgets.flops), members,
                               planner, hash_context(study))
    pool = candidates(prior, by_budget, study.design, study.fit.n_column)
    return optimise(prior, pool, study.design, study.fit, members, target, None).design


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--target", type=float, default=None)
    parser.add_argument("--out", default="/tmp/flame_design_honesty")
    args, overrides = parser.parse_known_args()
    overrides = overrides or ["experiment=flame_sweep"]
    first = StudyConfig.from_cfg(compose([*overrides, "trainer=simulated", "cluster=local"]))
    prior = load_prior(first.design, first.fit)
    law = prior.law
    given = ",".join(f"{k}:{getattr(law, k)!r}" for k in ("E", "A", "B", "alpha", "beta"))
    cfg = compose([*overrides, "trainer=simulated", "cluster=local",
                   f"trainer.law={{{given}}}", f"trainer.noise={prior.noise!r}"])
    study = StudyConfig.from_cfg(cfg)
    design = chosen_design(cfg, args.target)
    predicted = simulate(design, prior, study.design, study.fit, build_family(study.family))
    print(f"design: {design.name}, {len(design.runs)} runs, {design.flops:.3g} FLOPs; true a "
          f"{law.a:.4f}, noise {prior.noise}; predicted half-width "
          f"{predicted['a_halfwidth']}, bias {predicted['a_bias']}", flush=True)
    fits, began = [], time.time()
    for seed in range(args.studies):
        sweep = Path(args.out) / f"seed{seed}"
        if (sweep / "fit.json").is_file():  # a study of an earlier, interrupted run: reuse it
            fits.append(read_fit(sweep))
            continue
        seeded = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        seeded.trainer.seed = seed
        config = design_config(study_config(seeded), design)
        the_plan, planner = plan_from_cfg(config)
        sweep.mkdir(parents=True, exist_ok=True)
        write_plan(sweep, the_plan, planner, config)
        common = [f"sweep_dir={sweep}", *overrides]
        flame("launch", *common, "cluster=local", "cluster.parallelism=2")
        flame("status", "--watch", *common, "cluster=local", "cluster.poll_s=0.5")
        flame("collect", *common)
        flame("fit", *common, f"fit.bootstrap={args.bootstrap}", f"fit.seed={seed}")
        fits.append(read_fit(sweep))
        print(f"  study {seed}: approach2 a={fits[-1].approach2.a}, approach3 "
              f"a={fits[-1].approach3.a} ({time.time() - began:.0f} s)", flush=True)
    for name, ci_of in (("approach2", lambda f: f.approach2.a_ci),
                        ("approach3", lambda f: f.approach3.ci.get("a"))):
        a = np.array([getattr(f, name).a for f in fits if getattr(f, name).a is not None], float)
        cis = [ci_of(f) for f in fits if ci_of(f)]
        lo, hi = np.percentile(a, [2.5, 97.5])
        want = predicted["a_halfwidth"][name]
        covered = np.mean([c[0] <= law.a <= c[1] for c in cis]) if cis else float("nan")
        print(f"{name}: predicted half-width {want:.4f}; observed {len(a)} studies: percentile "
              f"half-width {(hi - lo) / 2:.4f} (ratio {(hi - lo) / 2 / want:.2f}), 1.96 sd "
              f"{1.96 * a.std(ddof=1):.4f} (ratio {1.96 * a.std(ddof=1) / want:.2f}); bias "
              f"observed {np.median(a) - law.a:+.4f} vs predicted "
              f"{predicted['a_bias'][name]:+.4f}; 95% intervals cover the true a in "
              f"{covered:.0%} of {len(cis)}")


if __name__ == "__main__":
    main()

"""Do `flame fit`'s 95% intervals cover the true a when the law misfits each shape?

    .venv/bin/python benchmarks/bench_fit_coverage.py [--studies 100] [--bootstrap 200]
        [--designs flame80,replicated] [--structures shapes,iid] [--first-seed 1000]

Simulates FLAME-MoE's own law (the shipped prior, analysis/data/flame_moe_prior/fit.json)
on two designs: FLAME's 80-run grid (16 shapes, each at all 5 budgets, one seed;
tests/sweep/data/sweep_grid_80.csv) and a replicated one of the same size (every other
shape, 2 seeds a point). Two noise worlds with FLAME's total log-loss SD of 0.018: iid (every
run independent) and misfit (a per-shape offset of SD 0.013 shared by every budget and seed
of the shape, plus run noise of SD 0.012). Each study is fitted as `flame fit` fits it
(``analysis.fit.intervals.fit_intervals``), with the structured bootstrap
(fit.bootstrap_structure=shapes, the default) and with the iid one it replaces. Prints, per
design, world, bootstrap and approach: the median interval half-width, the observed 95%
half-width of the estimates (half their 2.5-97.5 percentile range), their ratio, the
coverage of the true a, and the median estimated components. Target (issue 25): coverage
90-98% in the misfit world.

    .venv/bin/python benchmarks/bench_fit_coverage.py --compare [--studies 100]

instead measures `flame compare`'s per-budget intervals on synthetic pairs with a known
multiplier (Epoch's Chinchilla law, 5 budgets 1e18-1e20, 7 sizes +-0.6 decades, 0.5% noise):
B at half A's effective compute (2 at every budget), and B with a smaller parameter exponent
(1.92 at 1e18 rising to 2.26 at 1e20). Prints per budget the truth, the median estimate, the
median interval (hi/lo) and its coverage.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.compare.multiplier import compare, multipliers, study_of  # noqa: E402
from analysis.design.synthetic import Law, isoflop_sweep  # noqa: E402
from analysis.fit.intervals import fit_intervals, misfit_losses  # noqa: E402
from analysis.fit.result import read_fit  # noqa: E402
from analysis.settings import FitSettings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
WORLDS = {"iid": (0.0, 0.018), "misfit": (0.013, 0.012)}  # (shape SD, seed SD)


def flame_grid() -> pd.DataFrame:
    """FLAME-MoE's 80 runs: budget, N (their sheet's active count), tokens, shape."""
    g = pd.read_csv(REPO / "tests/sweep/data/sweep_grid_80.csv")
    return pd.DataFrame({"budget": g["flops"].astype(float),
                         "n": g["active_params_sheet"].astype(float),
                         "tokens": g["tokens"].astype(float),
                         "shape": g["num_layers"].astype(str) + "x" + g["hidden_size"].astype(str)})


def replicated(grid: pd.DataFrame, seeds: int = 2) -> pd.DataFrame:
    """Every other shape of ``grid`` (by N), ``seeds`` runs a point: the same run count."""
    shapes = grid.groupby("shape")["n"].min().sort_values().index[::seeds]
    kept = grid[grid["shape"].isin(shapes)]
    return pd.concat([kept] * seeds, ignore_index=True)


def run(design: pd.DataFrame, world: str, structure: str, studies: int, bootstrap: int,
        law, first_seed: int = 1000) -> dict:
    shape_sd, seed_sd = WORLDS[world]
    rows = []
    for study in range(studies):
        rng = np.random.default_rng(first_seed + study)  # the same for both bootstraps
        points = design.assign(loss=misfit_losses(law, design["n"].to_numpy(),
                                                  design["tokens"].to_numpy(),
                                                  design["shape"].to_numpy(), shape_sd,
                                                  seed_sd, rng))
        fit = fit_intervals(points, FitSettings(bootstrap=bootstrap, seed=study,
                                                bootstrap_structure=structure))
        vc = vars(fit.components) if fit.components is not None else {}
        rows.append({"a2": fit.a2, "a3": fit.a3, **{f"cover_{k}": v for k, v in
                                                     fit.covers(law.a).items()},
                     **{f"half_{k}": v for k, v in fit.halfwidths().items()},
                     "shape_sd": vc.get("shape_sd"), "run_sd": vc.get("run_sd"),
                     "seed_sd": vc.get("seed_sd")})
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame, truth: float) -> list[str]:
    lines = []
    for short, name in (("a2", "approach2"), ("a3", "approach3")):
        estimates = table[short].dropna().to_numpy(float)
        covered = table[f"cover_{name}"].dropna()
        half = table[f"half_{name}"].dropna()
        lo, hi = np.percentile(estimates, [2.5, 97.5]) if estimates.size >= 10 else (np.nan,) * 2
        observed = (hi - lo) / 2
        lines.append(f"{name:9s}  interval half-width {half.median():.3f}  observed "
                     f"{observed:.3f}  ratio {half.median() / observed:.2f}  coverage "
                     f"{covered.mean():.0%} of {covered.size}  bias "
                     f"{np.median(estimates) - truth:+.3f}")
    return lines


EPOCH = Law(E=1.82, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
PAIRS = {"constant 2": Law(E=1.82, A=482.01 * 2 ** (0.3478 / 2), B=2085.43 * 2 ** (0.3658 / 2),
                           alpha=0.3478, beta=0.3658),
         "changing with C": Law(E=1.82, A=482.01 * 0.8, B=2085.43, alpha=0.33, beta=0.36)}


def compare_coverage(pairs: int, bootstrap: int) -> None:
    budgets = np.geomspace(1e18, 1e20, 5)
    sweep = dict(per_budget=7, span_decades=0.6, noise=0.005)
    for name, law_b in PAIRS.items():
        truth = multipliers(EPOCH.theta[None], law_b.theta[None], budgets)[0]
        found = []
        start = time.perf_counter()
        for pair in range(pairs):
            settings = FitSettings(bootstrap=bootstrap, seed=pair)
            a = study_of(Path("a"), isoflop_sweep(EPOCH, budgets, seed=2 * pair, **sweep),
                         settings, "A")
            b = study_of(Path("b"), isoflop_sweep(law_b, budgets, seed=2 * pair + 1, **sweep),
                         settings, "B")
            found.append(pd.DataFrame(compare(a, b)["budgets"]))
        took = time.perf_counter() - start
        table = pd.concat(found, keys=range(pairs), names=["pair", "row"]).reset_index()
        print(f"\n{name}: {pairs} pairs, {bootstrap} resamples ({took:.0f} s)")
        for j, c in enumerate(budgets):
            rows = table[table["row"] == j]
            lo, hi = rows["multiplier_lo"].to_numpy(), rows["multiplier_hi"].to_numpy()
            print(f"  {c:.0e}: truth {truth[j]:.3f}  median estimate "
                  f"{rows['multiplier'].median():.3f}  median hi/lo {np.median(hi / lo):.3f}  "
                  f"coverage {np.mean((lo <= truth[j]) & (truth[j] <= hi)):.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--designs", default="flame80,replicated")
    parser.add_argument("--structures", default="shapes,iid")
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--first-seed", type=int, default=1000,
                        help="study i draws its losses from seed first_seed + i")
    args = parser.parse_args()
    if args.compare:
        compare_coverage(args.studies, args.bootstrap)
        return
    law = read_fit(REPO / "analysis/data/flame_moe_prior/fit.json").law()
    grid = flame_grid()
    designs = {"flame80": grid, "replicated": replicated(grid)}
    print(f"true a = {law.a:.4f}; {args.studies} studies (seeds {args.first_seed}-"
          f"{args.first_seed + args.studies - 1}), {args.bootstrap} resamples each")
    for name in args.designs.split(","):
        design = designs[name]
        for world in WORLDS:
            for structure in args.structures.split(","):
                start = time.perf_counter()
                table = run(design, world, structure, args.studies, args.bootstrap, law,
                            args.first_seed)
                took = time.perf_counter() - start
                comps = table[["shape_sd", "run_sd", "seed_sd"]].astype(float).median()
                print(f"\n{name} ({len(design)} runs, {design['shape'].nunique()} shapes), "
                      f"{world} world {WORLDS[world]}, {structure} bootstrap ({took:.0f} s); "
                      f"median estimated shape_sd {comps['shape_sd']:.4f}, run_sd "
                      f"{comps['run_sd']:.4f}, seed_sd {comps['seed_sd']:.4f}")
                for line in summary(table, law.a):
                    print("  " + line)


if __name__ == "__main__":
    main()

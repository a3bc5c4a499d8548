"""Benchmark: adaptive budgets against a static plan when the prior misplaces the optimum 3x.

experiment=demo_adaptive (simulated trainer, cluster=local: real `flame run` end to end), for
each simulator seed given: static (planner.adaptive=false), static with the prior's window
twice as wide (span_log10 1.0: bracketing by brute force), and adaptive. Prints, per
study: budgets bracketed by Approach 2, runs and training FLOPs spent, waves, the exponent a
of both approaches with 95% intervals (the simulated law's is 0.4516), and the largest error of
a bracketed budget's N_opt against the simulated law's optimum. Run by hand (~1 min a seed):

    .venv/bin/python benchmarks/bench_adaptive.py [--seeds 1234 1 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
TRUE_K, TRUE_A = 0.5987, 0.4516  # the simulated law's optimum (conf/experiment/demo_adaptive)


MODES = {"static": ["planner.adaptive=false"],
         "static, wide": ["planner.adaptive=false", "planner.prior.span_log10=1.0"],
         "adaptive": []}


def study(sweep_dir: Path, seed: int, mode: str) -> dict:
    """One `flame run`; what it spent and what its fit found."""
    started = time.monotonic()
    adaptive = mode == "adaptive"
    out = subprocess.run([sys.executable, "-m", "jobs.cli", "run", "experiment=demo_adaptive",
                          f"sweep_dir={sweep_dir}", f"trainer.seed={seed}", *MODES[mode]],
                         cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"flame run failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    plan = pd.read_csv(sweep_dir / "plan.csv")
    fit = json.loads((sweep_dir / "fit.json").read_text())
    budgets = fit["approach2"]["budgets"]
    errors = [abs(math.log10(b["n_opt"] / (TRUE_K * b["budget"] ** TRUE_A)))
              for b in budgets if b["used"]]
    waves = len(list((sweep_dir / "adaptive").glob("decision_*.json"))) - 1 if adaptive else 1
    return {"seed": seed, "mode": mode,
            "bracketed": f"{sum(b['used'] for b in budgets)}/{len(budgets)}",
            "unbracketed": ", ".join(f"{b['budget']:.0e}" for b in budgets if not b["used"]),
            "runs": len(plan), "flops": float((plan["flops_per_token"] * plan["tokens"]).sum()),
            "waves": waves, "a2": fit["approach2"]["a"], "a2_ci": fit["approach2"]["a_ci"],
            "a3": fit["approach3"]["a"], "a3_ci": (fit["approach3"]["ci"] or {}).get("a"),
            "n_err": max(errors) if errors else None, "seconds": time.monotonic() - started}


def _a(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1234, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="keep the sweeps here")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="bench-adaptive-"))
    rows = [study(root / f"{mode.replace(', ', '-')}-{seed}", seed, mode)
            for seed in args.seeds for mode in MODES]
    table = Table(title=f"prior N_opt 3x the simulated law's; a = {TRUE_A} (sweeps in {root})")
    for col in ("seed", "plan", "bracketed", "not bracketed", "runs", "FLOPs", "waves",
                "a, Approach 2", "a, Approach 3", "max |log10 N_opt err|", "wall s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["seed"]), r["mode"], r["bracketed"], r["unbracketed"] or "-",
                      str(r["runs"]), f"{r['flops']:.3g}", str(r["waves"]),
                      _a(r["a2"], r["a2_ci"]), _a(r["a3"], r["a3_ci"]),
                      "-" if r["n_err"] is None else f"{r['n_err']:.3f}",
                      f"{r['seconds']:.0f}")
    Console(width=200).print(table)
    for seed in args.seeds:
        s, w, a = (next(r for r in rows if r["seed"] == seed and r["mode"] == m) for m in MODES)
        print(f"seed {seed}: adaptive / static: runs {a['runs'] / s['runs']:.2f}, FLOPs "
              f"{a['flops'] / s['flops']:.2f}; adaptive / static wide: runs "
              f"{a['runs'] / w['runs']:.2f}, FLOPs {a['flops'] / w['flops']:.2f}")


if __name__ == "__main__":
    main()

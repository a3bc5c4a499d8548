"""Branch vs scratch on the embedded trainer (issue 14): for (size, budget) pairs of the demo,
the final validation loss of a WSD cooldown branch (planner.strategy=branches: the size's trunk
at the constant learning rate, then the branch's 20% cooldown) beside an independent WSD run of
the same length, each from ``--seeds`` seeds (planner.seeds: a trunk per seed). Two checks: the
branch of seed 0 against the independent run of seed 0 (same init and data order), within 2 SD
of the independent runs' seed scatter; the branches' mean against the independent runs' mean,
within 2 standard errors of their difference. A size's
shortest branch has the independent run's schedule exactly (same warmup, same cooldown, same
init and data order), so it matches replicate 0 to the last digit; the longer branches differ by
their shorter warmup (the trunk's: training.warmup_fraction of the shortest branch).

    .venv/bin/python benchmarks/bench_branches.py [--pairs 8@3e10 8@1e11 ...] [--seeds 3]
        [--out DIR] [--cache-dir DIR]

Plans are made by the real planner from the real configs (experiment=demo_branches and
experiment=demo, restricted to the pairs' sizes and budgets) and trained one run at a time on
FLAME_THREADS threads (default 1). Runs finished in ``--out`` are not trained again.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from conf.study import plan_from_cfg, write_plan
from jobs.cli import compose
from sweep.planrow import PlanRow
from trainers.run import train_run


def pairs_overrides(pairs: list[str]) -> list[str]:
    """``hidden@budget`` pairs as family.members and budgets.flops overrides."""
    budgets: dict[int, list[float]] = defaultdict(list)
    for pair in pairs:
        hidden, budget = pair.split("@")
        budgets[int(hidden)].append(float(budget))
    heads = {h: 2 if h in (4, 8, 12, 20) else 4 for h in budgets}  # conf/family/demo.yaml
    members = ",".join(f"{{hidden_size:{h},num_attention_heads:{heads[h]},budgets:"
                       f"[{','.join(repr(b) for b in sorted(bs))}]}}"
                       for h, bs in sorted(budgets.items()))
    flops = sorted({b for bs in budgets.values() for b in bs})
    return [f"family.members=[{members}]", f"budgets.flops=[{','.join(map(repr, flops))}]"]


def planned(sweep: Path, experiment: str, overrides: list[str]) -> tuple[list[PlanRow], dict]:
    """Plan ``experiment`` into ``sweep`` and read the rows and config back, as a job does."""
    cfg = compose([f"sweep_dir={sweep}", f"experiment={experiment}", *overrides])
    the_plan, settings = plan_from_cfg(cfg)
    write_plan(sweep, the_plan, settings, cfg)
    stored = OmegaConf.to_container(OmegaConf.load(sweep / "config.yaml"))
    return [r.to_row(settings) for r in the_plan.runs], stored


def train_all(rows: list[PlanRow], cfg: dict, sweep: Path, console: Console) -> dict[str, float]:
    """Final validation loss per run_id (trunks first: the plan's order)."""
    out = {}
    for row in rows:
        began = time.perf_counter()
        summary = train_run(row.to_csv(), cfg, sweep / "runs" / row.run_id)
        out[row.run_id] = summary["final_val_loss"]
        console.print(f"  {row.role or 'independent'} {row.member} C={row.budget:.3g} "
                      f"r{row.replicate}: {row.own_iters} iterations, val "
                      f"{summary['final_val_loss']:.4f} ({time.perf_counter() - began:.0f} s)")
    return out


def comparison(branches: list[float], independent: list[float]) -> list[str]:
    """Table cells: replicate 0 of each (the same seed: same init and data order) against the
    independent runs' seed scatter, and the two means against their standard error."""
    sd_b, sd_i = statistics.stdev(branches), statistics.stdev(independent)
    diff0 = branches[0] - independent[0]
    diff = statistics.mean(branches) - statistics.mean(independent)
    se = (sd_b ** 2 / len(branches) + sd_i ** 2 / len(independent)) ** 0.5
    return [f"{branches[0]:.4f}", f"{independent[0]:.4f}",
            f"{statistics.mean(branches):.4f} ({sd_b:.4f})",
            f"{statistics.mean(independent):.4f} ({sd_i:.4f})",
            f"{diff0:+.4f} / {sd_i:.4f}", "yes" if abs(diff0) <= 2 * sd_i else "NO",
            f"{diff:+.4f} / {se:.4f}", "yes" if abs(diff) <= 2 * se else "NO"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=["8@3e10", "8@1e11", "12@3e10", "12@1e11",
                                                      "16@3e10",
                                                       "16@1e11"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_branches."))
    common = pairs_overrides(args.pairs) + (
        [f"trainer.cache_dir={args.cache_dir}"] if args.cache_dir else [])
    console = Console(width=None if Console().is_terminal else 160)
    seeds = [f"planner.seeds={args.seeds}"]
    branch_rows, bcfg = planned(out / "branches", "demo_branches", common + seeds)
    indep_rows, icfg = planned(out / "independent", "demo", common + seeds)
    began = time.perf_counter()
    branch_loss = train_all(branch_rows, bcfg, out / "branches", console)
    indep_loss = train_all(indep_rows, icfg, out / "independent", console)
    table = Table(title=f"branch vs scratch, embedded trainer, demo recipe, {args.seeds} seeds "
                        f"each ({time.perf_counter() - began:.0f} s)")
    for col in ("size", "budget", "iters", "branch at", "branch r0", "independent r0",
                "branch mean (SD)", "independent mean (SD)", "r0: diff / SD", "r0 within 2 SD",
                "means: diff / SE", "means within 2 SE"):
        table.add_column(col, justify="right")
    for b in (r for r in branch_rows if r.role == "branch" and r.replicate == 0):
        mine = [branch_loss[r.run_id] for r in branch_rows
                if r.role == "branch" and r.member == b.member and r.budget == b.budget]
        seeds = [indep_loss[r.run_id] for r in indep_rows
                 if r.member == b.member and r.budget == b.budget]
        table.add_row(b.member, f"{b.budget:.3g}", str(b.train_iters), str(b.branch_step),
                      *comparison(mine, seeds))
    own = sum(r.own_flops for r in branch_rows if r.replicate == 0)
    scratch = sum(r.flops for r in branch_rows if r.role == "branch" and r.replicate == 0)
    console.print(table)
    console.print(f"FLOPs: branches {own:.3g} (trunks once + cooldowns) vs {scratch:.3g} for the "
                  f"same runs from scratch ({own / scratch:.0%}); runs kept in {out}")


if __name__ == "__main__":
    main()

"""``flame plan``: write the study's plan and show it."""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from sweep.config import plan_from_cfg, read_plan, write_plan
from sweep.io import PLAN_CSV
from sweep.planner import Plan, PlannerSettings


def plan(cfg: DictConfig, args: argparse.Namespace | None = None) -> int:
    """Plan the study of ``cfg`` into ``cfg.sweep_dir``; print the table and removals."""
    the_plan, settings = plan_from_cfg(cfg)  # raises ConfigError before anything is written
    sweep_dir = Path(cfg.sweep_dir)
    previous = _previous_ids(sweep_dir)
    write_plan(sweep_dir, the_plan, settings, cfg)
    console = Console(width=None if Console().is_terminal else 150)
    console.print(plan_table(the_plan, settings, cfg))
    for r in the_plan.removed:
        console.print(f"  removed {r.member} at C={r.budget:.3g}: {r.constraint} ({r.detail})")
    if previous is not None:
        now = {r.run_id for r in the_plan.runs}
        console.print(f"  vs. the previous plan: {len(now - previous)} new runs, "
                      f"{len(previous - now)} no longer planned")
    console.print(f"wrote {sweep_dir / PLAN_CSV}")
    return 0


def _previous_ids(sweep_dir: Path) -> set[str] | None:
    if not (sweep_dir / PLAN_CSV).exists():
        return None
    return {row["run_id"] for row in read_plan(sweep_dir)}


def plan_table(the_plan: Plan, settings: PlannerSettings, cfg: DictConfig) -> Table:
    n_col = f"N active ({settings.accounting})"
    table = Table(title=f"plan: {cfg.experiment_name} ({len(the_plan.runs)} runs)",
                  show_footer=True)
    total_flops = sum(r.flops_per_token * r.tokens for r in the_plan.runs)
    total_hours = sum(r.gpu_hours for r in the_plan.runs)
    columns = [("run_id", f"{len(the_plan.runs)} runs"), ("budget", f"{total_flops:.3g} FLOPs"),
               ("arch", ""), (n_col, ""), ("N total", ""), ("tokens", ""), ("iters", ""),
               ("tok/param", ""), ("GPU-h", f"{total_hours:,.1f}")]
    for header, footer in columns:
        table.add_column(header, footer=footer, justify="left" if header == "run_id" else "right")
    from sweep.accounting import param_counts
    for r in the_plan.runs:
        total = param_counts(r.member.arch, settings.accounting).total
        table.add_row(r.run_id, f"{r.budget:.3g}", r.member.name, _human(r.n_active),
                      _human(total), _human(r.tokens), str(r.train_iters),
                      f"{r.tokens / r.n_active:.1f}", f"{r.gpu_hours:,.2f}")
    return table


def _human(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"

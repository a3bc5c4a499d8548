"""The demo end to end: utilization of the cores, and where the rest of the time goes.

    .venv/bin/python benchmarks/bench_demo.py [--experiment demo] [--budgets 1e11 3e11] [--ops]
        [-- overrides...]

Runs ``flame run experiment=demo`` (or the given budgets of it, a fixed subset of its runs) in
a fresh sweep folder, on this machine's local executor, and prints:

- utilization: planned training FLOPs / (wall time x cores x the fwd+bwd float32 matmul peak
  of one core, measured in this run on one thread, as each worker trains on one);
- the time breakdown in core-seconds (wall x cores, all accounted for): trainer imports and
  start, run set-up (data, model), training steps, evaluation, checkpoints, logging, workers
  waiting (start, claims, the tail when one core has no run left), and what the command does
  besides training (plan, launch, collect, fit, report);
- per run: planned FLOPs, seconds by part, and the steps' own utilization;
- with ``--ops``: what one training step of each member spends its time on (torch profiler,
  ops grouped: matmuls, attention, cross-entropy, optimizer, the rest), the reason the small
  members cannot reach the matmul peak: attention and the output softmax scale with tokens,
  not with the parameters the planned FLOPs count (6N per token).

Timings are wall clock on a machine nobody else uses; read the ratios otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trainer import matmul_peak  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FLAME = [sys.executable, "-m", "jobs.cli"]


def run_study(sweep: Path, experiment: str, budgets: list[str], overrides: list[str]) -> float:
    """``flame run experiment=<experiment>`` into ``sweep``; its wall time in seconds."""
    args = [*FLAME, "run", f"experiment={experiment}", f"sweep_dir={sweep}", *overrides]
    if budgets:
        args.append(f"budgets.flops=[{','.join(budgets)}]")
    began = time.perf_counter()
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def read_runs(sweep: Path) -> list[dict]:
    """Each planned run with its summary (seconds by part, timeline) and its worker."""
    runs = []
    with open(sweep / "plan.csv") as handle:
        for row in csv.DictReader(handle):
            folder = sweep / "runs" / row["run_id"]
            summary = json.loads((folder / "summary.json").read_text())
            state = json.loads((folder / "state.json").read_text())
            own = float(row["flops"]) * (1 - int(row.get("branch_step") or 0)
                                         / int(row["train_iters"]))
            runs.append({"row": row, "summary": summary, "worker": state["job_ids"][-1],
                         "flops": own})
    return runs


def breakdown(runs: list[dict], wall: float, cores: int, began: float) -> dict[str, float]:
    """Core-seconds by where they went; they add up to wall x cores."""
    parts: dict[str, float] = defaultdict(float)
    for run in runs:
        s = run["summary"]
        sec = s["seconds"]
        span = s["ended_at"] - s["began_at"]
        parts["run set-up (data, model)"] += sec["setup"] + sec["restore"]
        parts["training steps"] += sec["steps"]
        parts["evaluation"] += sec["eval"]
        parts["checkpoints"] += sec["checkpoint"]
        inner = sec["steps"] + sec["eval"] + sec["checkpoint"]
        parts["logging, loop"] += s["wall_s"] - inner
        parts["trainer imports and start"] += span - s["wall_s"] - sec["setup"] - sec["restore"]
    by_worker: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_worker[run["worker"]].append(run["summary"])
    ended = began + wall
    for spans in by_worker.values():
        spans.sort(key=lambda s: s["began_at"])
        parts["worker start (launch to first run)"] += spans[0]["began_at"] - began
        parts["between runs (claims)"] += sum(b["began_at"] - a["ended_at"]
                                              for a, b in zip(spans, spans[1:]))
        parts["after its last run (tail, collect, fit, report)"] += ended - spans[-1]["ended_at"]
    for _ in range(cores - len(by_worker)):
        parts["cores without a worker"] += wall
    return dict(parts)


def op_profile(sweep: Path, steps: int = 10) -> Table:
    """One training step per member, its CPU time by op group (torch profiler)."""
    from omegaconf import OmegaConf
    from torch.profiler import ProfilerActivity, profile

    from sweep.planrow import PlanRow
    from trainers.embedded.train import _Loop
    from trainers.settings import Recipe, trainer_config

    cfg = OmegaConf.to_container(OmegaConf.load(sweep / "config.yaml"), resolve=True)
    groups = {"matmul": ("aten::mm", "aten::bmm", "aten::addmm", "aten::matmul"),
              "attention": ("scaled_dot_product",), "cross-entropy": ("softmax", "nll_loss"),
              "optimizer": ("adam", "_foreach")}
    table = Table(title=f"one training step by op group ({steps} steps each, 1 thread)")
    for col in ("member", "ms/step", "planned GFLOP/s", *groups, "the rest"):
        table.add_column(col, justify="right")
    seen = set()
    with open(sweep / "plan.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["member"] not in seen
                and not seen.add(r["member"])]
    for row in rows:
        spec = PlanRow.of(row)
        with tempfile.TemporaryDirectory() as tmp:
            loop = _Loop(spec, Recipe.from_cfg(cfg["training"]), trainer_config(cfg["trainer"]),
                         Path(tmp))
            loop._train_step()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                began = time.process_time()
                for _ in range(steps):
                    loop._train_step()
                step_s = (time.process_time() - began) / steps
        totals: dict[str, float] = defaultdict(float)
        for event in prof.key_averages():
            name = event.key.lower()
            group = next((g for g, keys in groups.items() if any(k in name for k in keys)),
                         "the rest")
            totals[group] += event.self_cpu_time_total
        whole = sum(totals.values()) or 1.0
        planned = spec.flops / spec.train_iters / step_s
        table.add_row(spec.member, f"{step_s * 1e3:.1f}", f"{planned / 1e9:.1f}",
                      *(f"{totals[g] / whole:.0%}" for g in (*groups, "the rest")))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--budgets", nargs="*", default=[], help="a subset of the demo's")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sweep-dir", type=Path, default=None, help="kept when given")
    parser.add_argument("--ops", action="store_true", help="also profile one step per member")
    parser.add_argument("overrides", nargs="*", help="more flame overrides, after --")
    args = parser.parse_args()
    torch.set_num_threads(1)
    peak = matmul_peak()
    sweep = args.sweep_dir or Path(tempfile.mkdtemp(prefix="bench_demo_"))
    began = time.time()
    wall = run_study(sweep, args.experiment, args.budgets, args.overrides)
    runs = read_runs(sweep)
    planned = sum(r["flops"] for r in runs)
    console = Console()
    parts = breakdown(runs, wall, args.cores, began)
    table = Table(title=f"{len(runs)} runs, {planned:.3g} planned FLOPs, {wall:.1f} s wall on "
                        f"{args.cores} cores; one core's matmul peak {peak / 1e9:.1f} GFLOP/s")
    for col in ("where the core-seconds went", "core-s", "share"):
        table.add_column(col, justify="right")
    for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        table.add_row(name, f"{seconds:.1f}", f"{seconds / (wall * args.cores):.1%}")
    table.add_row("total (wall x cores)", f"{sum(parts.values()):.1f}",
                  f"{sum(parts.values()) / (wall * args.cores):.1%}")
    console.print(table)
    per_run = Table(title="per run (seconds)")
    for col in ("budget", "member", "iters", "set-up", "steps", "eval", "ckpt", "steps' util"):
        per_run.add_column(col, justify="right")
    for run in sorted(runs, key=lambda r: (float(r["row"]["budget"]), r["row"]["member"])):
        sec, row = run["summary"]["seconds"], run["row"]
        per_run.add_row(f"{float(row['budget']):.0e}", row["member"], row["train_iters"],
                        f"{sec['setup']:.2f}", f"{sec['steps']:.1f}", f"{sec['eval']:.2f}",
                        f"{sec['checkpoint']:.2f}", f"{run['flops'] / sec['steps'] / peak:.0%}")
    console.print(per_run)
    steps = sum(r["summary"]["seconds"]["steps"] for r in runs)
    console.print(f"utilization end to end: {planned / (wall * args.cores * peak):.1%} "
                  f"(planned FLOPs / (wall x cores x peak)); within the training steps "
                  f"alone: {planned / (steps * peak):.1%}")
    console.print(f"fit: {json.dumps(fit_line(sweep))}")
    if args.ops:
        console.print(op_profile(sweep))


def fit_line(sweep: Path) -> dict:
    """Approach 2's exponent a and its interval from the study's fit.json."""
    fit = json.loads((sweep / "fit.json").read_text())
    a2 = fit.get("approach2") or {}
    return {"a": a2.get("a"), "a_ci": a2.get("a_ci")}


if __name__ == "__main__":
    main()

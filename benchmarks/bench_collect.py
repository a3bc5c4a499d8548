"""Speed of ``flame collect`` on a 1,000-run sweep (target: <= 2 s).

    .venv/bin/python benchmarks/bench_collect.py [--runs 1000] [--evals 10] [--train-lines 50]

Builds a real demo plan (`flame plan`), replicates its rows to ``--runs`` distinct runs, and
writes each run's train.log / metrics.jsonl / state.json with the trainers' own writer. Then
times collect on three layouts: complete runs (metrics.jsonl has the final evaluation),
runs whose metrics.jsonl is gone (train.log parsed), and runs with TensorBoard events only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from analysis.collect import collect_sweep
from jobs.cli import main as flame
from sweep.io import atomic_write_text, run_dir
from trainers.artifacts import RunLog


def build(sweep: Path, runs: int, evals: int, train_lines: int) -> pd.DataFrame:
    flame(["plan", f"sweep_dir={sweep}"])
    plan = pd.read_csv(sweep / "plan.csv", dtype={"run_id": str})
    plan = pd.concat([plan] * (runs // len(plan) + 1)).iloc[:runs].reset_index(drop=True)
    plan["run_id"] = [f"{i:012x}" for i in range(runs)]
    plan.to_csv(sweep / "plan.csv", index=False)
    for row in plan.to_dict(orient="records"):
        log, total = RunLog(run_dir(sweep, row["run_id"])), int(row["train_iters"])
        for k in range(1, train_lines + 1):
            it = max(1, total * k // train_lines)
            log.train(iteration=it, train_iters=total, global_batch_size=16, seq_length=128,
                      lr=1e-3, train_loss=3.0 + 1 / it, aux_loss=0.01, z_loss=1e-3,
                      grad_norm=1.0, tokens_per_s=1e5, elapsed_ms=5.0)
            if k % (train_lines // evals) == 0:
                log.eval(iteration=it, consumed_tokens=it * 2048, val_loss=3.0 + 1 / it,
                         final=it == total)
        atomic_write_text(run_dir(sweep, row["run_id"]) / "state.json",
                          json.dumps({"run_id": row["run_id"], "state": "completed"}))
    return plan


def timed(sweep: Path, repeats: int = 3) -> tuple[float, pd.DataFrame]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = collect_sweep(sweep)
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--evals", type=int, default=10)
    parser.add_argument("--train-lines", type=int, default=50)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    root = Path(tempfile.mkdtemp(prefix="bench_collect."))
    try:
        sweep = root / "sweep"
        start = time.perf_counter()
        plan = build(sweep, args.runs, args.evals, args.train_lines)
        print(f"built {len(plan)} runs in {time.perf_counter() - start:.1f} s")
        t, res = timed(sweep)
        print(f"complete runs (metrics.jsonl): {t:.3f} s for {len(res)} runs, "
              f"{t / 2.0:.2f} of the 2 s target; flags {res['flag'].value_counts().to_dict()}")
        for row in plan.to_dict(orient="records"):
            (run_dir(sweep, row["run_id"]) / "metrics.jsonl").unlink()
        t, res = timed(sweep)
        print(f"train.log only:                {t:.3f} s; sources "
              f"{res['source'].value_counts().to_dict()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

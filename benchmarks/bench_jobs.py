"""Benchmark: plan + submit 1,000 runs to the local SLURM as arrays, and one status poll.

Targets (issue 3): planning + submitting 1,000 runs <= 10 s; one `flame status` poll over
1,000 runs (ledger + one sacct call) <= 2 s. The baseline is one sbatch per run (submitit
without arrays), measured on the first runs and scaled to 1,000. Needs `flame cluster up`.
Everything submitted is cancelled at the end. Run by hand:

    .venv/bin/python benchmarks/bench_jobs.py [--runs-baseline 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from conf.study import plan_from_cfg, write_plan
from jobs import ledger
from jobs.cli import compose
from jobs.cluster import LocalCluster, default_state_dir, is_up
from jobs.executors import slurm_client
from jobs.executors.base import JobId
from jobs.executors.slurm import SlurmSettings, slurm_executor
from jobs.launch import launch_sweep
from jobs.settings import ClusterSettings
from jobs.status import collect, poll
from jobs.task import RunTask

# 10 budgets x 100 demo-family members (10 widths x 10 depths) = 1,000 runs
OVERRIDES = [
    "trainer=simulated", "cluster=slurm_local", "planner.min_iters=1",
    "budgets.flops=[1e11,3e11,1e12,3e12,1e13,3e13,1e14,3e14,1e15,3e15]",
    "family.members=null",
    "family.grid={hidden_size:[32,48,64,80,96,112,128,144,160,176],"
    "num_layers:[2,3,4,5,6,7,8,9,10,11]}",
    "cluster.array_parallelism=2",  # the two local CPUs; the bench measures submission
]
TARGET_SUBMIT_S, TARGET_POLL_S = 10.0, 2.0


def per_run_baseline(sweep_dir: Path, cfg, run_ids: list[str]) -> float:
    """Seconds for one sbatch per run (held, then cancelled) over ``run_ids``."""
    settings = SlurmSettings.from_cluster(ClusterSettings.from_cfg(cfg))
    t0 = time.perf_counter()
    jobs = []
    for run_id in run_ids:
        executor = slurm_executor(settings, sweep_dir / "baseline", f"flame-{run_id}")
        jobs.append(executor.submit(RunTask(str(sweep_dir), run_id, 1)))
    took = time.perf_counter() - t0
    slurm_client.scancel(job.job_id for job in jobs)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-baseline", type=int, default=20)
    args = parser.parse_args()
    cluster = LocalCluster(default_state_dir())
    if not is_up(cluster):
        print("the local SLURM is not up: run `flame cluster up`", file=sys.stderr)
        return 2
    os.environ.setdefault("SLURM_CONF", str(cluster.slurm_conf))
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench_jobs_") as tmp:
        sweep_dir = Path(tmp) / "sweep"
        t0 = time.perf_counter()
        cfg = compose([f"sweep_dir={sweep_dir}", *OVERRIDES])
        the_plan, settings = plan_from_cfg(cfg)
        write_plan(sweep_dir, the_plan, settings, cfg)
        t_plan = time.perf_counter() - t0
        report = launch_sweep(sweep_dir, cfg)
        t_submit = time.perf_counter() - t0
        n = len(report.submitted)
        t1 = time.perf_counter()
        status = poll(sweep_dir, cfg)
        t_poll = time.perf_counter() - t1
        t2 = time.perf_counter()
        collect(sweep_dir)
        t_ledger = time.perf_counter() - t2
        arrays = {JobId.parse(j).job for j in report.job_ids}
        # stop the sweep: cancel everything still queued or running
        slurm_client.scancel(arrays)
        for run_id in report.submitted:
            ledger.transition(sweep_dir, run_id, ledger.CANCELLED)
        base_ids = [r.run_id for r in the_plan.runs[:args.runs_baseline]]
        t_base = per_run_baseline(sweep_dir, cfg, base_ids) * n / len(base_ids)

    table = Table(title=f"bench_jobs: {n} runs to the local SLURM ({os.cpu_count()} cores)")
    for col in ("measure", "seconds", "target s", "ratio to target"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    table.add_row("plan (compose + planner + plan.csv)", f"{t_plan:.2f}", "", "")
    table.add_row(f"plan + submit ({len(arrays)} array)", f"{t_submit:.2f}",
                  f"{TARGET_SUBMIT_S:.0f}", f"{t_submit / TARGET_SUBMIT_S:.2f}")
    table.add_row(f"one status poll ({status.total} runs, 1 sacct)", f"{t_poll:.2f}",
                  f"{TARGET_POLL_S:.0f}", f"{t_poll / TARGET_POLL_S:.2f}")
    table.add_row("  of which ledger read (1,000 state.json)", f"{t_ledger:.2f}", "", "")
    table.add_row(f"baseline: one sbatch per run (x{n / len(base_ids):.0f} of "
                  f"{len(base_ids)})", f"{t_base:.2f}", "", "")
    console.print(table)
    console.print(f"arrays vs one sbatch per run: {t_base / max(t_submit - t_plan, 1e-9):.1f}x "
                  f"faster submission; states at the poll: {status.summary()}")
    return 0 if t_submit <= TARGET_SUBMIT_S and t_poll <= TARGET_POLL_S else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: 10,000 runs through the executor seams on the local SLURM.

Targets (issue 23): 10,000 runs planned and submitted <= 10 s (held arrays through
``SlurmExecutor.submit``), one status poll <= 2 s (ledger + one sacct + one squeue), collect
<= 5 s (``analysis.collect``: measured here, owned by analysis). The runs never train (the
arrays may begin in an hour and are cancelled at the end), so collect reads
10,000 run directories without logs. Needs `flame cluster up`, and at most one run per ten
minutes: the local slurmctld keeps finished jobs for MinJobAge=600 s and holds at most
MaxJobCount=20000, so a second run within that time is refused ("Resource temporarily
unavailable"). Run by hand:

    .venv/bin/python benchmarks/bench_scale.py
"""

from __future__ import annotations

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
from jobs.executors.registry import executor_for
from jobs.launch import launch_sweep
from jobs.settings import ClusterSettings
from jobs.status import poll

WIDTHS = [32 + 16 * i for i in range(25)]
DEPTHS = list(range(2, 42))
# 10 budgets x 1,000 members (25 widths x 40 depths) = 10,000 runs
OVERRIDES = [
    "trainer=simulated", "cluster=slurm_local", "planner.min_iters=1",
    "budgets.flops=[1e11,3e11,1e12,3e12,1e13,3e13,1e14,3e14,1e15,3e15]",
    "family.members=null",
    f"family.grid={{hidden_size:[{','.join(map(str, WIDTHS))}],"
    f"num_layers:[{','.join(map(str, DEPTHS))}]}}",
    # the bench measures submission, not training: the arrays stay pending (BeginTime) on
    # the shared cluster until they are cancelled at the end
    "+cluster.additional_parameters.begin=now+1hour",
]
TARGETS = {"plan + submit": 10.0, "one status poll": 2.0, "collect": 5.0}


def main() -> int:
    cluster = LocalCluster(default_state_dir())
    if not is_up(cluster):
        print("the local SLURM is not up: run `flame cluster up`", file=sys.stderr)
        return 2
    os.environ.setdefault("SLURM_CONF", str(cluster.slurm_conf))
    from analysis.collect import collect_sweep  # analysis' entry point, measured as is

    console, took = Console(), {}
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        sweep_dir = Path(tmp) / "sweep"
        t0 = time.perf_counter()
        cfg = compose([f"sweep_dir={sweep_dir}", *OVERRIDES])
        executor = executor_for(ClusterSettings.from_cfg(cfg))  # once, as a command does
        the_plan, settings = plan_from_cfg(cfg)
        write_plan(sweep_dir, the_plan, settings, cfg)
        took["plan"] = time.perf_counter() - t0
        report = launch_sweep(sweep_dir, cfg, executor=executor)
        took["plan + submit"] = time.perf_counter() - t0
        arrays = {JobId.parse(j).job for j in report.job_ids}
        try:
            t1 = time.perf_counter()
            status = poll(sweep_dir, executor=executor)
            took["one status poll"] = time.perf_counter() - t1
            t2 = time.perf_counter()
            results = collect_sweep(sweep_dir, cfg)
            took["collect"] = time.perf_counter() - t2
        finally:  # stop the sweep: nothing of it may stay queued on the shared cluster
            slurm_client.scancel(arrays)
            ledger.transition_many(sweep_dir, [(rid, ledger.CANCELLED, None)
                                               for rid in report.submitted])
    n = len(report.submitted)
    table = Table(title=f"bench_scale: {n:,} runs to the local SLURM ({os.cpu_count()} cores)")
    for col in ("measure", "seconds", "target s"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    table.add_row("plan (compose + planner + plan.csv)", f"{took['plan']:.2f}", "")
    table.add_row(f"plan + submit ({len(arrays)} arrays)", f"{took['plan + submit']:.2f}",
                  f"{TARGETS['plan + submit']:.0f}")
    table.add_row(f"one status poll ({status.total:,} runs)", f"{took['one status poll']:.2f}",
                  f"{TARGETS['one status poll']:.0f}")
    table.add_row(f"collect ({len(results):,} rows)", f"{took['collect']:.2f}",
                  f"{TARGETS['collect']:.0f}")
    console.print(table)
    console.print(f"states at the poll: {status.summary()}")
    return 0 if all(took[k] <= t for k, t in TARGETS.items()) else 1


if __name__ == "__main__":
    sys.exit(main())

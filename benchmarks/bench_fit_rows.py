"""Wall time and peak memory of `flame fit` on a large plain CSV (issue 11, item 9).

    .venv/bin/python benchmarks/bench_fit_rows.py [--rows 100000] [--bootstrap 1000]
                                                   [--baseline-rows 1000]

Writes ``--rows`` synthetic points (analysis.design.synthetic: 20 budgets from 1e18 to 1e21 FLOPs,
sizes log-spaced within +-0.8 decades of each budget's true optimum, 0.5% log-normal noise) to
a CSV and runs the real CLI, ``python -m jobs.cli fit results=FILE sweep_dir=DIR``, in a child
process, so the time includes imports, loading, both approaches with the default bootstrap,
the extrapolation check, figures and fit.json. Peak memory is the child's maximum resident
set size (``resource.getrusage(RUSAGE_CHILDREN)``). Targets: <= 30 s and <= 1 GB at 100,000
rows. The baseline is the same command on ``--baseline-rows`` rows: the ratios show how
time and memory grow with the rows (linear growth would be rows / baseline-rows).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from analysis.design.synthetic import Law, isoflop_sweep

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = np.geomspace(1e18, 1e21, 20)
TARGET_SECONDS, TARGET_BYTES = 30.0, 1 << 30


def write_points(path: Path, rows: int) -> None:
    points = isoflop_sweep(Law(), BUDGETS, per_budget=max(3, rows // BUDGETS.size),
                           noise=0.005, seed=0)
    points.iloc[:rows].to_csv(path, index=False)


def run_fit(csv: Path, out: Path, bootstrap: int) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (bytes) of one `flame fit` child process.

    CPU seconds are printed too: on a shared machine wall time also counts waiting for a core.
    """
    cmd = [sys.executable, "-m", "jobs.cli", "fit", f"results={csv}", f"sweep_dir={out}",
           f"fit.bootstrap={bootstrap}"]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    # A fresh process per measurement: RUSAGE_CHILDREN's ru_maxrss is the largest child so
    # far, so measuring the small baseline first keeps the big run's number its own.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"flame fit failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, cpu, after.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--baseline-rows", type=int, default=1000)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bench_fit_rows.") as tmp:
        results = {}
        for rows in (args.baseline_rows, args.rows):
            csv = Path(tmp) / f"points_{rows}.csv"
            write_points(csv, rows)
            results[rows] = run_fit(csv, Path(tmp) / f"fit_{rows}", args.bootstrap)
            seconds, cpu, peak = results[rows]
            print(f"{rows:>7} rows, bootstrap {args.bootstrap}: {seconds:6.1f} s "
                  f"({cpu:.1f} s CPU), peak RSS {peak / 2**20:7.0f} MiB")
    (t0, _, m0), (t1, c1, m1) = results[args.baseline_rows], results[args.rows]
    print(f"ratios {args.rows} / {args.baseline_rows} rows: time {t1 / t0:.1f}x, peak memory "
          f"{m1 / m0:.1f}x (rows {args.rows / args.baseline_rows:.0f}x)")
    print(f"targets at {args.rows} rows: time {t1:.1f} s = {t1 / TARGET_SECONDS:.2f} of 30 s "
          f"(CPU {c1:.1f} s = {c1 / TARGET_SECONDS:.2f}), "
          f"peak {m1 / 2**20:.0f} MiB = {m1 / TARGET_BYTES:.2f} of 1 GiB")


if __name__ == "__main__":
    main()

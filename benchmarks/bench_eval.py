"""The time of ``flame eval`` per run on a trained demo sweep.

    .venv/bin/python benchmarks/bench_eval.py [SWEEP_DIR] [--runs N] [--tasks T]

Copies the sweep's plan, config, ledger and final checkpoints (nothing else) into a scratch
folder, runs ``flame eval`` there in this process (cluster=local: one checkpoint after another,
``FLAME_THREADS`` threads, default 1) and prints: the command's wall time; per checkpoint, the
seconds lm-eval's evaluation took (``flame.seconds`` in each results.json: model load, lm-eval's
task set-up and scoring) by member; and the rest (imports, task checks, collect, the sigmoid's
bootstrap and the figure). The sweep's own results are never touched.

Timings are wall clock on a machine nobody else uses; read the ratios otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def scratch_copy(sweep: Path, into: Path, runs: int | None) -> list[str]:
    """plan.csv, config.yaml, and each completed run's state.json and latest.pt."""
    into.mkdir(parents=True)
    for name in ("plan.csv", "config.yaml"):
        shutil.copy2(sweep / name, into / name)
    copied = []
    for state in sorted(sweep.glob("runs/*/state.json")):
        if json.loads(state.read_text()).get("state") != "completed":
            continue
        if runs is not None and len(copied) == runs:
            break
        run = state.parent.name
        (into / "runs" / run / "checkpoints").mkdir(parents=True)
        shutil.copy2(state, into / "runs" / run / "state.json")
        shutil.copy2(state.parent / "checkpoints" / "latest.pt",
                     into / "runs" / run / "checkpoints" / "latest.pt")
        for log in ("metrics.jsonl", "train.log", "summary.json"):  # collect reads the loss
            if (state.parent / log).is_file():
                shutil.copy2(state.parent / log, into / "runs" / run / log)
        copied.append(run)
    return copied


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", default="out/demo")
    parser.add_argument("--runs", type=int, default=None, help="only the first N completed")
    parser.add_argument("--tasks", default=None)
    args = parser.parse_args()
    from jobs.cli import main as flame

    with tempfile.TemporaryDirectory(prefix="bench_eval.") as tmp:
        sweep = Path(tmp) / "sweep"
        runs = scratch_copy(Path(args.sweep), sweep, args.runs)
        argv = ["eval", f"sweep_dir={sweep}", "--n-boot", "200"]
        argv += ["--tasks", args.tasks] if args.tasks else []
        began = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = flame(argv)
        wall = time.perf_counter() - began
        if code:
            print(f"flame eval exited {code}")
            return code
        plan = {row.split(",")[0]: row for row in (sweep / "plan.csv").read_text().splitlines()}
        seconds = {}
        for run in runs:
            document = json.loads((sweep / "runs" / run / "eval" / "final" /
                                   "results.json").read_text())
            seconds[run] = document["flame"]["seconds"]
        per = list(seconds.values())
        print(f"flame eval on {len(runs)} runs of {args.sweep}: {wall:.1f} s wall")
        print(f"  per checkpoint (lm-eval: load, tasks, scoring): median "
              f"{statistics.median(per):.2f} s, min {min(per):.2f} s, max {max(per):.2f} s, "
              f"sum {sum(per):.1f} s")
        print(f"  the rest (imports, checks, collect, sigmoid + bootstrap, figure): "
              f"{wall - sum(per):.1f} s")
        header = plan.get("run_id", "")
        column = header.split(",").index("member") if "member" in header else None
        for run, value in sorted(seconds.items(), key=lambda kv: kv[1]):
            arch = plan[run].split(",")[column] if column is not None else ""
            print(f"  {run} {arch:>8} {value:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A run trains to the same numbers in a long-lived local worker (after other runs, with the
corpus and imports it kept from them) as in a fresh process of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from jobs import ledger
from jobs.launch import launch_sweep
from jobs.status import wait_until_terminal
from tests.jobs.conftest import make_sweep, plan_ids

ROOT = Path(__file__).resolve().parents[2]
FRESH = """
import json, sys
from pathlib import Path
from jobs.sweepdir import plan_rows, read_config
from trainers.run import train_run
sweep, run_id, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
row = next(r for r in plan_rows(sweep) if r.run_id == run_id)
print(json.dumps(train_run(row, read_config(sweep), out)["final_val_loss"]))
"""


def _evals(run_dir: Path) -> list[tuple[int, float]]:
    records = (json.loads(line) for line in open(run_dir / "metrics.jsonl"))
    return [(r["iteration"], r["val_loss"]) for r in records if r["kind"] == "eval"]


def test_final_loss_same_in_a_worker_and_a_fresh_process(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    cfg = make_sweep(sweep, "family.grid={hidden_size:[8,16],num_layers:[2]}",
                     "budgets.flops=[5e9]", "planner.global_batch_size=16",
                     "trainer.eval_iters=2", "cluster=local", "cluster.parallelism=1",
                     trainer="embedded")
    launch_sweep(sweep, cfg)  # one worker: it trains both runs, one after the other
    status = wait_until_terminal(sweep, cfg, poll_s=0.3, progress=False)
    assert status.counts["completed"] == 2, status.summary()
    ids = plan_ids(sweep)
    records = ledger.read_all(sweep)
    assert len({records[i].job_ids[-1] for i in ids}) == 1  # the same worker process
    summaries = {i: json.loads((sweep / "runs" / i / "summary.json").read_text()) for i in ids}
    second = max(ids, key=lambda i: summaries[i]["began_at"])  # trained after the other
    fresh = subprocess.run([sys.executable, "-c", FRESH, str(sweep), second,
                            str(tmp_path / "fresh")], cwd=ROOT, capture_output=True,
                           text=True, check=True, env={**os.environ, "FLAME_THREADS": "1"})
    assert json.loads(fresh.stdout.splitlines()[-1]) == summaries[second]["final_val_loss"]
    assert _evals(tmp_path / "fresh") == _evals(sweep / "runs" / second)  # bit for bit

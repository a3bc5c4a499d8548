"""cluster=local: the same sweep without SLURM, through submitit's local executor."""

from __future__ import annotations

import json
import time
from pathlib import Path

from jobs import ledger
from jobs.launch import launch_sweep
from jobs.status import poll, wait_until_terminal
from jobs.task import pid_alive
from tests.jobs.conftest import flame, make_sweep, plan_ids


def test_local_sweep_runs_detached_and_once(tmp_path: Path) -> None:
    cfg = make_sweep(tmp_path, "cluster=local", "cluster.parallelism=2", "cluster.poll_s=0.3")
    t0 = time.monotonic()
    out = flame("launch", f"sweep_dir={tmp_path}", "cluster=local", "cluster.parallelism=2")
    assert "submitted 15 runs" in out.stdout  # the launcher process has exited by now ...
    watch = flame("status", "--watch", f"sweep_dir={tmp_path}", "cluster=local",
                  "cluster.poll_s=0.3")  # refreshes until every run is terminal
    # Not a terminal: plain progress lines (no live view), then the table.
    lines = [ln for ln in watch.stdout.splitlines() if ln.startswith("runs finished ")]
    assert lines[-1].startswith("runs finished 15/15  15 completed"), watch.stdout
    assert "completed" in watch.stdout.split(lines[-1])[1]  # the final table follows
    final = wait_until_terminal(tmp_path, cfg, poll_s=0.3, progress=False)
    assert final.counts["completed"] == 15, final.summary()  # ... its workers went on
    records = ledger.read_all(tmp_path)
    workers = {rec.job_ids[-1] for rec in records.values()}
    assert 1 <= len(workers) <= 2  # never more than cluster.parallelism runs at once
    assert all(rec.attempts == 1 and len(rec.job_ids) == 1 for rec in records.values())
    for run_id in plan_ids(tmp_path):  # the trainer's artefacts, written by the real job
        summary = json.loads((tmp_path / "runs" / run_id / "summary.json").read_text())
        assert summary["final_val_loss"] > 0
        assert (tmp_path / "runs" / run_id / "metrics.jsonl").exists()
    again = launch_sweep(tmp_path, cfg)
    assert again.submitted == () and set(again.skipped.values()) == {"completed"}
    assert time.monotonic() - t0 < 120


def test_local_cancel_and_resubmit(tmp_path: Path) -> None:
    cfg = make_sweep(tmp_path, "trainer.seconds_per_run=8", "cluster=local",
                     "cluster.parallelism=1", "budgets.flops=[3e11]")
    cli = (f"sweep_dir={tmp_path}", "cluster=local", "cluster.parallelism=1")
    launch_sweep(tmp_path, cfg)
    deadline = time.monotonic() + 30
    while poll(tmp_path, cfg).counts["running"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    running = [r.run_id for r in poll(tmp_path, cfg).runs if r.state == "running"]
    worker = ledger.read(tmp_path, running[0]).job_ids[-1]
    out = flame("cancel", "--all", *cli)
    assert "cancelled 5 runs" in out.stdout
    status = wait_until_terminal(tmp_path, cfg, poll_s=0.3, progress=False)
    assert status.counts["cancelled"] == 5
    deadline = time.monotonic() + 10  # the worker training the running run was stopped
    while pid_alive(int(worker.removeprefix("local-"))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(int(worker.removeprefix("local-")))
    out = flame("status", *cli)
    assert "cancelled" in out.stdout
    # a named cancelled run can be resubmitted; it runs (8 s of simulated training) again
    out = flame("resubmit", running[0], *cli)
    assert "reset 1 runs" in out.stdout and "submitted 1 runs" in out.stdout
    final = wait_until_terminal(tmp_path, cfg, poll_s=0.3, progress=False)
    assert final.counts == {**final.counts, "completed": 1, "cancelled": 4}
    assert ledger.read(tmp_path, running[0]).attempts == 2

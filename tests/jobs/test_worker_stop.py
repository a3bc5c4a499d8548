"""Local workers and waiting: SIGTERM stops a worker within seconds and leaves its run
resumable; with every worker dead, status says so and `status --watch` ends; Ctrl-C in a
command is one line, exit 130."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from jobs import ledger
from jobs.launch import launch_sweep
from jobs.status import wait_until_terminal
from jobs.task import STOPPED_REASON, pid_alive
from tests.jobs.conftest import make_sweep, plan_ids

TWO_RUNS = ("budgets.flops=[3e11]", "family.grid={hidden_size:[48,64],num_layers:[2]}")


def wait_state(sweep_dir: Path, run_id: str, state: str, limit: float = 60) -> ledger.RunRecord:
    deadline = time.monotonic() + limit
    while (rec := ledger.read(sweep_dir, run_id)) is None or rec.state != state:
        assert time.monotonic() < deadline, f"{run_id} never {state}: {rec}"
        time.sleep(0.05)
    return rec


def running_run(sweep_dir: Path, ids: list[str], limit: float = 60) -> str:
    deadline = time.monotonic() + limit
    while True:
        states = {r: ledger.read(sweep_dir, r) for r in ids}
        found = [r for r, rec in states.items() if rec is not None and rec.state == "running"]
        if found:
            return found[0]
        assert time.monotonic() < deadline, "no run started"
        time.sleep(0.05)


def wait_dead(pid: int, limit: float) -> float:
    began = time.monotonic()
    while pid_alive(pid):
        assert time.monotonic() - began < limit, f"worker {pid} still alive after {limit} s"
        time.sleep(0.05)
    return time.monotonic() - began


def test_sigterm_stops_a_worker_and_its_run_resumes(tmp_path: Path) -> None:
    """SIGTERM to a worker (its job id: submitit's controller, which forwards it to the task)
    mid-run: the worker exits within 10 s without touching the next queued run; its run is
    back in the queue with a checkpoint, and the next worker resumes it to completion."""
    cfg = make_sweep(tmp_path, "cluster=local", "cluster.parallelism=1",
                     "trainer.seconds_per_run=2", *TWO_RUNS)
    ids = plan_ids(tmp_path)
    launch_sweep(tmp_path, cfg)
    first = running_run(tmp_path, ids)
    job = ledger.read(tmp_path, first).job_ids[-1]
    time.sleep(0.6)  # into its training (a checkpoint every tenth of the run)
    os.kill(int(job.removeprefix("local-")), signal.SIGTERM)
    took = wait_dead(int(job.removeprefix("local-")), limit=10)
    back = wait_state(tmp_path, first, "submitted", limit=2)
    assert back.pending_reason == STOPPED_REASON
    (other,) = set(ids) - {first}
    assert ledger.read(tmp_path, other).state == "submitted"  # never claimed
    assert (tmp_path / "runs" / first / "checkpoints").is_dir()
    print(f"worker exited {took:.2f} s after SIGTERM")
    final = wait_until_terminal(tmp_path, cfg, poll_s=0.2, progress=False)  # restarts workers
    assert final.counts["completed"] == 2, final.summary()
    summary = json.loads((tmp_path / "runs" / first / "summary.json").read_text())
    assert summary["resumed_from"] and summary["resumed_from"] > 0

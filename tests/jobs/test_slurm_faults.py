"""cluster=slurm_local under faults (issue 11), on the real local SLURM: a deleted state.json and a
relaunch, a failing `scontrol release`, a running task SLURM puts back in its queue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from jobs import ledger
from jobs.executors.slurm import task_file, unreleased_arrays
from jobs.launch import launch_sweep
from jobs.status import poll, wait_until_terminal
from tests.jobs.conftest import flame, plan_ids

pytestmark = pytest.mark.slurm
ONE_RUN = ("budgets.flops=[3e11]", "family.grid={hidden_size:[64],num_layers:[2]}")


def wait_for(sweep_dir: Path, cfg, run_id: str, check, what: str,
             limit: float = 90) -> ledger.RunRecord:
    """Poll (reconcile with SLURM, then read the ledger) until ``check(record)`` holds."""
    deadline = time.monotonic() + limit
    while True:
        poll(sweep_dir, cfg)
        rec = ledger.read(sweep_dir, run_id)
        if rec is not None and check(rec):
            return rec
        assert time.monotonic() < deadline, f"{run_id}: no {what} after {limit} s: {rec}"
        time.sleep(0.3)


def train_iterations(sweep_dir: Path, run_id: str) -> list[int]:
    lines = (sweep_dir / "runs" / run_id / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["iteration"] for line in lines if '"kind": "train"' in line]


def squeue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r"], capture_output=True,
                         text=True, check=True).stdout
    return next((line for line in out.splitlines() if line.startswith(f"{job_id}|")), "")


def test_deleted_state_json_and_relaunch_never_trains_twice(slurm_sweep) -> None:
    cfg = slurm_sweep(*ONE_RUN, "trainer.seconds_per_run=15")
    sweep_dir = Path(cfg.sweep_dir)
    (run_id,) = plan_ids(sweep_dir)
    launch_sweep(sweep_dir, cfg)
    first = wait_for(sweep_dir, cfg, run_id, lambda r: r.state == "running",
                     "start").job_ids[-1]
    (sweep_dir / "runs" / run_id / "state.json").unlink()
    again = launch_sweep(sweep_dir, cfg)
    assert again.submitted == (run_id,)
    (second,) = again.job_ids
    # the second job starts, finds the first one training the run, and leaves it to it
    rec = wait_for(sweep_dir, cfg, run_id, lambda r: r.job_ids[-1] == first, "adoption")
    assert rec.job_ids == [second, first] and rec.state in ("running", "completed")
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.5, progress=False)
    assert final.counts["completed"] == 1, final.summary()
    iterations = train_iterations(sweep_dir, run_id)
    assert iterations == sorted(set(iterations)), iterations  # one trainer: no interleaving
    err_path = task_file(sweep_dir, second, "0_log.err")
    assert err_path.parent.name == str(second).split("_")[0]  # one folder per array
    err = err_path.read_text()
    assert f"run {run_id} is being trained by job {first}" in err


def failing_release_path(tmp_path: Path) -> dict[str, str]:
    """PATH with an `scontrol` whose `release` fails as a slurmctld that does not answer in
    time would; every other scontrol call goes to the real one (test-side fault injection)."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    real = shutil.which("scontrol")
    (shim / "scontrol").write_text(
        "#!/bin/sh\nif [ \"$1\" = release ]; then\n"
        "  echo 'slurm_suspend error: Socket timed out on send/recv operation' >&2; exit 1\n"
        f"fi\nexec {real} \"$@\"\n")
    (shim / "scontrol").chmod(0o755)
    return {"PATH": f"{shim}:{os.environ['PATH']}"}


def test_failed_release_keeps_the_array_held_and_the_next_launch_releases_it(
        slurm_sweep, tmp_path: Path) -> None:
    cfg = slurm_sweep("budgets.flops=[3e11]")
    sweep_dir = Path(cfg.sweep_dir)
    cli = ("launch", f"sweep_dir={sweep_dir}", "cluster=slurm_local")
    broken = failing_release_path(tmp_path)
    first = flame(*cli, env=broken, check=False)
    assert first.returncode == 2 and "Traceback" not in first.stderr
    assert len(first.stderr.strip().splitlines()) == 1
    assert "still held" in first.stderr and "run `flame launch` again" in first.stderr
    (name,) = unreleased_arrays(sweep_dir)
    records = ledger.read_all(sweep_dir)
    assert {r.state for r in records.values()} == {"submitted"} and len(records) == 5
    job = next(iter(records.values())).job_ids[-1]
    assert "JobHeld" in squeue_state(job)  # still held in SLURM
    status = flame("status", f"sweep_dir={sweep_dir}", "cluster=slurm_local").stdout
    assert "JobHeldUser" in status and "arrays are still held" in status
    retry = flame(*cli, env=broken)  # still failing: warned, kept, nothing resubmitted
    assert "submitted 0 runs" in retry.stdout and "still held" in retry.stderr
    assert unreleased_arrays(sweep_dir) == [name]
    fixed = flame(*cli)  # the scheduler answers again: released
    assert "submitted 0 runs" in fixed.stdout and unreleased_arrays(sweep_dir) == []
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.5, progress=False)
    assert final.counts["completed"] == 5, final.summary()


def test_requeued_running_run_shows_pending_with_the_reason_then_completes(slurm_sweep) -> None:
    """What a node crash does to a running task, here with `scontrol requeuehold`: the job is
    pending again. Status and ledger follow SLURM: submitted, with squeue's reason."""
    cfg = slurm_sweep(*ONE_RUN, "trainer.seconds_per_run=10")
    sweep_dir = Path(cfg.sweep_dir)
    (run_id,) = plan_ids(sweep_dir)
    launch_sweep(sweep_dir, cfg)
    job = wait_for(sweep_dir, cfg, run_id, lambda r: r.state == "running",
                   "start").job_ids[-1]
    time.sleep(2)  # a few steps in
    subprocess.run(["scontrol", "requeuehold", job], check=True)
    rec = wait_for(sweep_dir, cfg, run_id, lambda r: r.state == "submitted", "requeue")
    assert "held" in rec.pending_reason and rec.attempts == 1
    (run,) = poll(sweep_dir, cfg).runs
    assert run.state == "submitted" and run.elapsed_s == 0.0 and "held" in run.reason
    status = flame("status", f"sweep_dir={sweep_dir}", "cluster=slurm_local").stdout
    assert "1 submitted runs pending in the scheduler" in status, status
    assert "scontrol release" in status and run_id in status
    subprocess.run(["scontrol", "release", job], check=True)
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.5, progress=False)
    assert final.counts["completed"] == 1, final.summary()
    rec = ledger.read(sweep_dir, run_id)
    assert rec.attempts == 2 and rec.job_ids == [job] and rec.pending_reason is None

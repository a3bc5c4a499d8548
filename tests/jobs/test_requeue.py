"""Preemption and time limits on the real local SLURM: the trainer checkpoints on USR2,
submitit requeues the job, the next attempt resumes and ends with the uninterrupted loss."""

from __future__ import annotations

import csv
import json
import subprocess
import time
from pathlib import Path

import pytest

from jobs import ledger
from jobs.launch import launch_sweep
from jobs.status import poll, wait_until_terminal
from jobs.sweepdir import read_config
from tests.jobs.conftest import flame
from trainers.run import train_run

pytestmark = pytest.mark.slurm
ONE_RUN = ("budgets.flops=[3e11]", "family.grid={hidden_size:[64],num_layers:[2]}")


def uninterrupted_final_loss(sweep_dir: Path, run_id: str, tmp: Path) -> float:
    """The same run trained in one go, in this process (the trainer is deterministic)."""
    row = next(r for r in csv.DictReader(open(sweep_dir / "plan.csv")) if r["run_id"] == run_id)
    cfg = read_config(sweep_dir)
    if cfg["trainer"]["name"] == "simulated":
        cfg["trainer"]["seconds_per_run"] = 0.0  # operational: not part of the run's result
    return float(train_run(row, cfg, tmp / "uninterrupted")["final_val_loss"])


def preempt_when_running(sweep_dir: Path, cfg, after_s: float) -> str:
    """USR2 to the job's steps, as SLURM does before a time limit or a preemption."""
    deadline = time.monotonic() + 60
    while poll(sweep_dir, cfg).counts["running"] == 0:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)
    time.sleep(after_s)  # let it train a few steps
    (run_id, rec), = ledger.read_all(sweep_dir).items()
    subprocess.run(["scancel", "--signal=USR2", rec.job_ids[-1]], check=True)
    return run_id


def preempted_once(slurm_sweep, max_attempts: int):
    """One 6-second simulated run launched on SLURM, preempted 2 s in, waited for."""
    cfg = slurm_sweep(*ONE_RUN, "trainer.seconds_per_run=6",
                      f"cluster.max_attempts={max_attempts}")
    sweep_dir = Path(cfg.sweep_dir)
    launch_sweep(sweep_dir, cfg)
    run_id = preempt_when_running(sweep_dir, cfg, after_s=2.0)
    return cfg, sweep_dir, run_id, wait_until_terminal(sweep_dir, cfg, poll_s=0.5, progress=False)


def test_preempted_run_requeues_and_resumes_to_the_same_loss(slurm_sweep, tmp_path) -> None:
    cfg, sweep_dir, run_id, final = preempted_once(slurm_sweep, max_attempts=3)
    assert final.counts["completed"] == 1, final.summary()
    rec = ledger.read(sweep_dir, run_id)
    assert rec.attempts == 2 and len(rec.job_ids) == 1  # requeued: same job, 2 starts
    summary = json.loads((sweep_dir / "runs" / run_id / "summary.json").read_text())
    assert summary["resumed_from"] and summary["resumed_from"] > 0
    assert "resuming from checkpoint" in (sweep_dir / "runs" / run_id / "train.log").read_text()
    expected = uninterrupted_final_loss(sweep_dir, run_id, tmp_path)
    assert abs(summary["final_val_loss"] - expected) <= 1e-6


def test_attempt_cap_marks_timeout_then_resubmit_resumes(slurm_sweep) -> None:
    cfg, sweep_dir, run_id, final = preempted_once(slurm_sweep, max_attempts=1)
    assert final.counts["timeout"] == 1, final.summary()
    rec = ledger.read(sweep_dir, run_id)
    assert rec.attempts == 1 and "cluster.max_attempts=1" in rec.error_tail
    out = flame("resubmit", "--failed", f"sweep_dir={sweep_dir}", "cluster=slurm_local",
                "cluster.max_attempts=1")
    assert "submitted 1 runs" in out.stdout
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.5, progress=False)
    assert final.counts["completed"] == 1
    summary = json.loads((sweep_dir / "runs" / run_id / "summary.json").read_text())
    assert summary["resumed_from"] > 0 and len(ledger.read(sweep_dir, run_id).job_ids) == 2


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_time_limit_requeues_and_resumes_embedded(slurm_sweep, tmp_path) -> None:
    """A real SLURM time limit (2 min, USR2 90 s before: it lands 30-45 s into each attempt;
    launch refuses a lead under SLURM's 60 s signal resolution, jobs.resources.signal_lead_s)
    on a real run of the embedded trainer (~1,150 iterations, 25-90 s on one thread):
    requeued, resumed, and it ends with the same final loss as in one go."""
    cfg = slurm_sweep("budgets.flops=[1.5e12]", "family.grid={hidden_size:[64],num_layers:[2]}",
                      "cluster.timeout_min=2", "cluster.signal_delay_s=90",
                      "cluster.max_attempts=30", trainer="embedded")
    sweep_dir = Path(cfg.sweep_dir)
    launch_sweep(sweep_dir, cfg)
    final = wait_until_terminal(sweep_dir, cfg, poll_s=1.0, progress=False)
    assert final.counts["completed"] == 1, final.summary()
    (run_id, rec), = ledger.read_all(sweep_dir).items()
    assert rec.attempts >= 2
    summary = json.loads((sweep_dir / "runs" / run_id / "summary.json").read_text())
    expected = uninterrupted_final_loss(sweep_dir, run_id, tmp_path)
    assert abs(summary["final_val_loss"] - expected) <= 1e-6

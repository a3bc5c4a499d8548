"""A SLURM task whose trainer stopped on SIGTERM (``Preempted``: submitit only logs SIGTERM)
never records ``failed``: a job squeue still shows RUNNING (``scancel --signal=TERM``) is
requeued through submitit's USR2 handler; a job SLURM is ending (preemption, ``scontrol
requeue``: COMPLETING) exits and leaves the run ``running`` for SLURM's own requeue. Outside
SLURM a rerun resumes, and the run is recorded failed as before. Fast: no scheduler."""

from __future__ import annotations

import signal

import pytest

from jobs import ledger, task
from jobs.executors import slurm_client
from trainers.signals import Preempted


@pytest.fixture
def preempted_run(tmp_path, monkeypatch):
    """A running run whose trainer raises Preempted(SIGTERM) at iteration 12."""
    ledger.transition(tmp_path, "r1", ledger.SUBMITTED, job_id="7_0")
    ledger.transition(tmp_path, "r1", ledger.RUNNING, job_id="7_0")
    monkeypatch.setattr(task, "_job_id", lambda: "7_0")

    def stopped(*args):
        raise Preempted(signal.SIGTERM, 12)
    monkeypatch.setattr("trainers.run.train_run", stopped)
    monkeypatch.setattr(task, "plan_rows", lambda sweep: [type("Row", (), {"run_id": "r1"})()])
    monkeypatch.setattr(task, "read_config", lambda sweep: {})
    requeues: list[int] = []

    def usr2_handler(signum, frame):  # what submitit's checkpoint_and_try_requeue ends with
        requeues.append(signum)
        raise SystemExit(-1)
    previous = signal.signal(signal.SIGUSR2, usr2_handler)
    yield tmp_path, requeues
    signal.signal(signal.SIGUSR2, previous)


@pytest.mark.parametrize("state, requeued", [("RUNNING", True), ("COMPLETING", False),
                                             (None, False)])
def test_sigterm_in_a_slurm_job_ends_in_a_requeue_never_failed(preempted_run, monkeypatch,
                                                               state, requeued):
    sweep, requeues = preempted_run
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setattr(slurm_client, "job_state", lambda job: state)
    with pytest.raises(SystemExit):
        task.train_one(sweep, "r1")
    assert requeues == ([signal.SIGUSR2] if requeued else [])
    assert ledger.read(sweep, "r1").state == ledger.RUNNING


def test_outside_slurm_a_preempted_run_is_recorded_for_a_rerun(preempted_run, monkeypatch):
    sweep, requeues = preempted_run
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(Preempted):
        task.train_one(sweep, "r1")
    rec = ledger.read(sweep, "r1")
    assert rec.state == ledger.FAILED and "run again to resume" in rec.error_tail
    assert requeues == []

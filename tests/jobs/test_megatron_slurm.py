"""trainer=megatron on the real local SLURM (`flame cluster up`) with the stand-in of Megatron-LM
core_v0.16.1's pretrain_gpt.py under the real torchrun and c10d rendezvous: a run whose
train_iters (103) is not a multiple of the log interval (5), preempted once mid-run, is
requeued, resumes from its checkpoint, completes, and collect reads its final validation loss,
the same as an uninterrupted run's."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.collect import collect_sweep
from conf.study import plan_from_cfg, write_plan
from jobs import ledger
from jobs.cli import compose
from jobs.launch import launch_sweep
from jobs.status import poll, wait_until_terminal
from jobs.sweepdir import read_config
from tests.jobs.conftest import flame
from tests.trainers.conftest import STANDIN, standin_overrides
from trainers.megatron import argv_of

pytestmark = pytest.mark.slurm


def _uninterrupted_final_loss(row: dict, cfg: dict, tmp: Path) -> float:
    """The stand-in run in one go, directly (it is deterministic)."""
    argv = argv_of(row, cfg, tmp / "uninterrupted")
    out = subprocess.run([sys.executable, str(STANDIN), *argv], capture_output=True, text=True,
                         env={"FLAME_STANDIN_STEP_S": "0", "PATH": "/usr/bin:/bin"}, check=True)
    line = next(x for x in out.stdout.splitlines() if "on validation set" in x)
    return float(line.split("lm loss value:")[1].split("|")[0])


def _preempt_once_training(sweep_dir: Path, cfg) -> None:
    """USR2 to the job's steps (as SLURM does before a time limit) once iteration 20 is logged."""
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the job never reached iteration 20"
        if poll(sweep_dir, cfg).counts["running"]:
            log = next(sweep_dir.glob("runs/*/train.log"), None)
            if log is not None and "iteration       20/" in log.read_text():
                break
        time.sleep(0.2)
    (run_id, rec), = ledger.read_all(sweep_dir).items()
    subprocess.run(["scancel", "--signal=USR2", rec.job_ids[-1]], check=True)


@pytest.mark.timeout(150)
def test_preempted_megatron_run_requeues_resumes_completes_and_is_collected(
        slurm_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("FLAME_STANDIN_STEP_S", "0.1")  # 103 iterations, ~10 s
    sweep_dir = tmp_path / "sweep"
    cfg = compose([f"sweep_dir={sweep_dir}", "experiment=megatron_smoke", "cluster=slurm_local",
                   *standin_overrides(tmp_path / "megatron")])
    write_plan(sweep_dir, *plan_from_cfg(cfg), cfg)
    try:
        launch_sweep(sweep_dir, cfg)
        _check_preempted_run(sweep_dir, cfg, tmp_path)
    finally:
        flame("cancel", "--all", f"sweep_dir={sweep_dir}", "cluster=slurm_local", check=False)


def _check_preempted_run(sweep_dir: Path, cfg, tmp_path: Path) -> None:
    _preempt_once_training(sweep_dir, cfg)
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.5, progress=False)
    assert final.counts["completed"] == 1, final.summary()
    (run_id, rec), = ledger.read_all(sweep_dir).items()
    assert rec.attempts == 2 and len(rec.job_ids) == 1  # requeued: one job, two starts
    log = (sweep_dir / "runs" / run_id / "train.log").read_text()
    assert "[exiting program after receiving SIGTERM.]" in log
    assert "loading distributed checkpoint" in log
    assert "validation loss at iteration 103 on validation set" in log
    results = collect_sweep(sweep_dir, cfg)
    (row,) = results.to_dict(orient="records")
    assert row["flag"] == "ok" and row["iterations_done"] == 103
    plan_row = next(csv.DictReader(open(sweep_dir / "plan.csv")))
    expected = _uninterrupted_final_loss(plan_row, read_config(sweep_dir), tmp_path)
    assert abs(row["final_val_loss"] - expected) <= 1e-6 * expected
    assert row["gpu_hours_spent"] > 0


def test_two_nodes_rendezvous_by_c10d_into_one_world(slurm_cluster, tmp_path,
                                                              monkeypatch):
    """One run on 2 "nodes" x 1 rank, both on this machine, as SLURM starts them (one task per
    node: SLURM_NNODES=2, SLURM_NODEID 0 and 1): each task runs launch.sh, whose torchruns meet
    by c10d rendezvous on the first node of SLURM_JOB_NODELIST; node 1's task only runs its
    launcher (jobs.task.run_other_node) and exits 0; node 0's task ends with the summary. Uses the
    local cluster's scontrol (hostnames)."""
    sweep_dir = tmp_path / "sweep"
    cfg = compose([f"sweep_dir={sweep_dir}", "experiment=megatron_smoke",
                   *standin_overrides(tmp_path / "megatron"), "trainer.nodes=2"])
    write_plan(sweep_dir, *plan_from_cfg(cfg), cfg)
    (run_id,) = [r["run_id"] for r in csv.DictReader(open(sweep_dir / "plan.csv"))]
    job = {"SLURM_JOB_ID": str(90000 + (time.time_ns() // 1000) % 9000), "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "localhost", "SLURM_NTASKS_PER_NODE": "1"}
    node1 = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from jobs.task import "
         "run_other_node; run_other_node(Path(sys.argv[1]), sys.argv[2])", str(sweep_dir),
         run_id], cwd=Path(__file__).resolve().parents[2],
        env={**__import__("os").environ, **job, "SLURM_NODEID": "1", "SLURM_PROCID": "1"})
    for key, value in {**job, "SLURM_NODEID": "0", "SLURM_PROCID": "0"}.items():
        monkeypatch.setenv(key, value)
    from trainers.run import train_run
    row = next(csv.DictReader(open(sweep_dir / "plan.csv")))
    summary = train_run(row, read_config(sweep_dir), sweep_dir / "runs" / run_id)
    assert node1.wait(timeout=60) == 0
    assert summary["iterations"] == 103 and summary["final_val_loss"] > 2.0
    log = (sweep_dir / "runs" / run_id / "train.log").read_text()
    # rank 0 (node 0) saves; the last rank (node 1) prints the training and validation lines
    assert "successfully saved checkpoint from iteration     103" in log
    assert "validation loss at iteration 103 on validation set" in log
    assert "throughput per GPU" in log
    # one world of 2 ranks, not two worlds of 1: each line once
    assert log.count("iteration        1/     103 |") == 1
    assert log.count("successfully saved checkpoint from iteration     103") == 1

"""trainer=megatron on the real local SLURM (`flame cluster up`) with the stand-in of Megatron-LM
core_v0.16.1's pretrain_gpt.py under the real torchrun and its rendezvous: a run whose
train_iters (103) is not a multiple of the log interval (5), stopped by a signal in Megatron's
start-up, a SIGTERM to the whole step and an ``scontrol requeue``, is requeued each time,
resumes from its checkpoint, completes, and collect reads its final validation loss, the same
as an uninterrupted run's; two nodes meet in one world, each writing its own log."""

from __future__ import annotations

import csv
import json
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
from jobs.status import wait_until_terminal
from jobs.sweepdir import read_config
from tests.jobs.conftest import flame
from tests.trainers.conftest import STANDIN, standin_overrides
from trainers.logformat import parse_lines
from trainers.megatron import argv_of
from trainers.readers import LAUNCH_MARK

pytestmark = pytest.mark.slurm


def _uninterrupted_final_loss(row: dict, cfg: dict, tmp: Path) -> float:
    """The stand-in run in one go, directly (it is deterministic)."""
    argv = argv_of(row, cfg, tmp / "uninterrupted")
    out = subprocess.run([sys.executable, str(STANDIN), *argv], capture_output=True, text=True,
                         env={"FLAME_STANDIN_STEP_S": "0", "PATH": "/usr/bin:/bin"}, check=True)
    line = next(x for x in out.stdout.splitlines() if "on validation set" in x)
    return float(line.split("lm loss value:")[1].split("|")[0])


def _run_log(sweep_dir: Path) -> str:
    log = next(sweep_dir.glob("runs/*/train.log"), None)
    return log.read_text(errors="replace") if log is not None else ""


def _starts(sweep_dir: Path) -> list[str]:
    """The run's log, one text per start of launch.sh (flame's mark before each)."""
    return _run_log(sweep_dir).split(LAUNCH_MARK)[1:]


def _when(sweep_dir: Path, seen: set[str], ready, what: str, timeout_s: float = 90) -> str:
    """Poll until ``ready(starts)``; the job id of the run's job then. Every ledger state seen
    on the way goes into ``seen``."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = ledger.read_all(sweep_dir)
        seen.update(rec.state for rec in records.values())
        if records and ready(_starts(sweep_dir)):
            (rec,) = records.values()
            return rec.job_ids[-1]
        assert time.monotonic() < deadline, f"never saw {what}:\n{_run_log(sweep_dir)[-3000:]}"
        time.sleep(0.1)


def _training(start: str, lines: int) -> bool:
    return len(parse_lines(start.splitlines()).train) >= lines


@pytest.mark.timeout(300)
def test_signal_in_start_up_sigterm_and_scontrol_requeue_each_end_in_a_requeue_never_failed(
        slurm_cluster, tmp_path, monkeypatch):
    """One run, four starts of one job, each ended by what a cluster does: (1) the time limit's
    USR2 while Megatron starts up, before its handler exists (the ranks die of the forwarded
    SIGTERM, torchrun exits 1); (2) SIGTERM to every process of the step mid-run
    (``scancel --signal=TERM``, as preemption sends it: torchrun stops, the ranks save);
    (3) ``scontrol requeue`` mid-run (SLURM's SIGTERM, then its own requeue). Each ends in a
    requeue, never ``failed``; the fourth start completes with the uninterrupted run's loss,
    and collect reads it. The acceptance test of these paths on the real local SLURM."""
    monkeypatch.setenv("FLAME_STANDIN_STEP_S", "0.05")  # 103 iterations, ~5 s
    monkeypatch.setenv("FLAME_STANDIN_STARTUP_S", "3")  # the window before the handler
    sweep_dir = tmp_path / "sweep"
    cfg = compose([f"sweep_dir={sweep_dir}", "experiment=megatron_smoke", "cluster=slurm_local",
                   "cluster.max_attempts=5", *standin_overrides(tmp_path / "megatron")])
    write_plan(sweep_dir, *plan_from_cfg(cfg), cfg)
    seen: set[str] = set()
    try:
        launch_sweep(sweep_dir, cfg)
        job = _when(sweep_dir, seen, lambda s: len(s) == 1 and "> building" in s[0],
                    "the first start's tokenizer line")
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        job = _when(sweep_dir, seen, lambda s: len(s) == 2 and _training(s[1], 3),
                    "the second start training")
        subprocess.run(["scancel", "--signal=TERM", job], check=True)
        job = _when(sweep_dir, seen, lambda s: len(s) == 3 and _training(s[2], 3),
                    "the third start training")
        subprocess.run(["scontrol", "requeue", job], check=True)
        final = wait_until_terminal(sweep_dir, cfg, poll_s=0.5, progress=False)
        seen.update(rec.state for rec in ledger.read_all(sweep_dir).values())
        _check_requeued_run(sweep_dir, cfg, tmp_path, final, seen)
    finally:
        flame("cancel", "--all", f"sweep_dir={sweep_dir}", "cluster=slurm_local", check=False)


def _check_requeued_run(sweep_dir: Path, cfg, tmp_path: Path, final, seen: set[str]) -> None:
    assert final.counts["completed"] == 1, final.summary()
    assert "failed" not in seen and "timeout" not in seen, seen
    (run_id, rec), = ledger.read_all(sweep_dir).items()
    assert rec.attempts == 4 and len(rec.job_ids) == 1  # requeued: one job, four starts
    starts = _starts(sweep_dir)
    assert len(starts) == 4
    # 1: killed in start-up (no handler yet): no training, no save
    assert "> building" in starts[0] and not _training(starts[0], 1)
    assert "exiting program" not in starts[0]
    # 2 and 3: Megatron's handler saved and exited; 3 resumed from 2's checkpoint
    for start in starts[1:3]:
        assert "[exiting program after receiving SIGTERM.]" in start
    assert "loading distributed checkpoint" in starts[2]
    assert "loading distributed checkpoint" in starts[3]
    assert "validation loss at iteration 103 on validation set" in starts[3]
    results = collect_sweep(sweep_dir, cfg)
    (row,) = results.to_dict(orient="records")
    assert row["flag"] == "ok" and row["iterations_done"] == 103
    plan_row = next(csv.DictReader(open(sweep_dir / "plan.csv")))
    expected = _uninterrupted_final_loss(plan_row, read_config(sweep_dir), tmp_path)
    assert abs(row["final_val_loss"] - expected) <= 1e-6 * expected
    assert row["gpu_hours_spent"] > 0


def test_two_nodes_rendezvous_into_one_world(slurm_cluster, tmp_path,
                                                              monkeypatch):
    """One run on 2 "nodes" x 1 rank, both on this machine, as SLURM starts them (one task per
    node: SLURM_NNODES=2, SLURM_NODEID 0 and 1): each task runs launch.sh, whose torchruns meet
    on the first node of SLURM_JOB_NODELIST, ranks in node order (static rendezvous: with c10d,
    both on one host, the order followed which torchrun started first); node 1's task only runs its
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
    # node 1's launcher first, so that its torchrun has the smaller pid: the order in which
    # c10d (ranks by host, then pid) would have made node 1 rank 0 and left train.log empty
    started = sweep_dir / "runs" / run_id / "train.log"
    deadline = time.monotonic() + 60
    while not started.exists() and node1.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    from trainers.run import train_run
    row = next(csv.DictReader(open(sweep_dir / "plan.csv")))
    summary = train_run(row, read_config(sweep_dir), sweep_dir / "runs" / run_id)
    assert node1.wait(timeout=60) == 0
    assert summary["iterations"] == 103 and summary["final_val_loss"] > 2.0
    run = sweep_dir / "runs" / run_id
    log, node0 = (run / "train.log").read_text(), (run / "train.node0.log").read_text()
    # one log per node: the last rank (node 1) prints the training and validation lines into
    # train.log, the one flame parses; rank 0 (node 0) saves, into train.node0.log
    assert "validation loss at iteration 103 on validation set" in log
    assert "throughput per GPU" in log
    assert "successfully saved checkpoint from iteration     103" in node0
    assert "iteration        1/" not in node0 and "saved checkpoint" not in log
    assert json.loads((run / "train.node1.exit").read_text())["code"] == 0
    # one world of 2 ranks, not two worlds of 1: each line once
    assert log.count("iteration        1/     103 |") == 1
    assert node0.count("successfully saved checkpoint from iteration     103") == 1

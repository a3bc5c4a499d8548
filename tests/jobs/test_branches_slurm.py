"""WSD cooldown branches on the real local SLURM (issue 14): each trunk's branches are one held
array that depends on the trunk's task (``afterok:<job>_<task>``, through submitit); a
preempted (requeued) trunk keeps them pending, a failed one leaves them pending with
``DependencyNeverSatisfied`` and `flame status` says why; `flame resubmit <trunk>` cancels their
old jobs and submits them again with a fresh dependency."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from analysis.collect import collect_sweep
from jobs import ledger
from jobs.launch import launch_sweep
from jobs.status import poll, wait_until_terminal
from tests.jobs.conftest import flame
from tests.jobs.test_branches_local import ONE_TRUNK, cli_run, rewrite_plan, rows_by_role
from trainers.artifacts import branch_checkpoint

pytestmark = pytest.mark.slurm


def manifests(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text())
            for p in sorted((sweep_dir / "jobs" / "launches").glob("*.json"))]


def dependency(job_id: str) -> str:
    """``afterok:12_0(unfulfilled)``: what slurmctld holds as the job's dependency."""
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True,
                         check=True).stdout
    return re.search(r"Dependency=(\S+)", out).group(1)


def wait_until(check, what: str, limit: float = 60, period: float = 0.2):
    deadline = time.monotonic() + limit
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not after {limit} s"
        time.sleep(period)
    return value


def check_started_from_checkpoints(sweep_dir: Path, trunk, branches) -> None:
    """Every run completed; each branch trained once, after its trunk ended, from its trunk's
    checkpoint at its branch step (the simulated trainer says so in train.log)."""
    trunk_rec = ledger.read(sweep_dir, trunk.run_id)
    for b in branches:
        rec = ledger.read(sweep_dir, b.run_id)
        assert rec.state == "completed" and rec.attempts == 1, rec
        assert ledger.seconds_between(trunk_rec.ended_at, rec.started_at) >= 0
        assert branch_checkpoint(sweep_dir / "runs" / trunk.run_id, b.branch_step,
                                 "simulated").is_file()
        log = (sweep_dir / "runs" / b.run_id / "train.log").read_text()
        assert f"branching from trunk {trunk.run_id} at iteration {b.branch_step}" in log


@pytest.mark.slow  # 7 s; the failed-trunk test below covers the dependency in the default suite
def test_branch_array_depends_on_its_trunk_task(slurm_sweep) -> None:
    cfg = slurm_sweep(*ONE_TRUNK, "trainer.seconds_per_run=2")
    sweep_dir = Path(cfg.sweep_dir)
    trunk, branches = rows_by_role(sweep_dir)
    launch_sweep(sweep_dir, cfg)
    trunk_job = ledger.read(sweep_dir, trunk.run_id).job_ids[-1]
    first, second = manifests(sweep_dir)[0], manifests(sweep_dir)
    by_runs = {tuple(sorted(m["run_ids"])): m for m in second}
    arr = by_runs[tuple(sorted(b.run_id for b in branches))]
    assert arr["dependency"] == f"afterok:{trunk_job}" and arr["released"]
    assert "dependency" not in by_runs[(trunk.run_id,)] and first
    branch_job = ledger.read(sweep_dir, branches[0].run_id).job_ids[-1]
    assert dependency(branch_job).startswith(f"afterok:{trunk_job}")
    status = flame("status", f"sweep_dir={sweep_dir}", "cluster=slurm_local").stdout
    assert f"2 branches waiting for trunk {trunk.run_id}: " in status, status
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.3, progress=False)
    assert final.counts["completed"] == 3, final.summary()
    check_started_from_checkpoints(sweep_dir, trunk, branches)


@pytest.mark.slow  # ~40 s: a requeue waits out the cluster's credential expiry
def test_preempted_trunk_holds_its_branches_then_all_three_complete(slurm_sweep) -> None:
    """The acceptance test: a trunk with two branches, the trunk preempted once (USR2, as
    SLURM signals before a preemption: the trainer checkpoints, submitit requeues the task);
    the branches stay pending on their dependency throughout, then run from the trunk's
    checkpoints, all three end completed, and collect lists the branches with their parent."""
    cfg = slurm_sweep(*ONE_TRUNK, "trainer.seconds_per_run=6", "cluster.max_attempts=3")
    sweep_dir = Path(cfg.sweep_dir)
    trunk, branches = rows_by_role(sweep_dir)
    launch_sweep(sweep_dir, cfg)
    trunk_job = wait_until(lambda: (r := ledger.read(sweep_dir, trunk.run_id)).state
                           == "running" and r.job_ids[-1], "trunk started")
    time.sleep(1)  # a few steps in (its branch steps: 184 and 614 of 614 iterations)
    subprocess.run(["scancel", "--signal=USR2", trunk_job], check=True)
    requeued = wait_until(lambda: poll(sweep_dir, cfg).runs[0].state == "submitted"
                          and poll(sweep_dir, cfg), "trunk requeued")
    last = max(branches, key=lambda b: b.branch_step)  # its checkpoint cannot be there yet
    waits = {r.run_id: r.wait.line() for r in requeued.runs if r.wait}
    assert waits[last.run_id] == f"waiting for trunk {trunk.run_id}: queued", waits
    assert not requeued.all_terminal  # a requeued trunk's branches are waited for
    pending = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r"], capture_output=True,
                             text=True, check=True).stdout
    for b in branches:
        job = ledger.read(sweep_dir, b.run_id).job_ids[-1]
        assert f"{job}|PENDING|Dependency" in pending, pending
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.5, progress=False)
    assert final.counts["completed"] == 3, final.summary()
    rec = ledger.read(sweep_dir, trunk.run_id)
    assert rec.attempts == 2 and rec.job_ids == [trunk_job]  # requeued, same task
    summary = json.loads((sweep_dir / "runs" / trunk.run_id / "summary.json").read_text())
    assert summary["resumed_from"] > 0
    check_started_from_checkpoints(sweep_dir, trunk, branches)
    results = collect_sweep(sweep_dir).set_index("run_id")  # collected with their parent
    for b in branches:
        assert results.loc[b.run_id, "status"] == "completed"
        assert results.loc[b.run_id, "parent"] == trunk.run_id
        assert results.loc[b.run_id, "role"] == "branch"


def test_failed_trunk_holds_its_branches_and_resubmit_gives_them_a_fresh_dependency(
        slurm_sweep) -> None:
    cfg = slurm_sweep(*ONE_TRUNK)
    sweep_dir = Path(cfg.sweep_dir)
    trunk, branches = rows_by_role(sweep_dir)
    cli = (f"sweep_dir={sweep_dir}", "cluster=slurm_local")

    def break_trunk(rows):  # the simulated trainer refuses N = 0: the trunk fails for real
        next(r for r in rows if r["run_id"] == trunk.run_id)["n_active_flame"] = "0"
    good = rewrite_plan(sweep_dir, break_trunk)
    launch_sweep(sweep_dir, cfg)
    old = {b.run_id: ledger.read(sweep_dir, b.run_id).job_ids[-1] for b in branches}
    old_trunk = ledger.read(sweep_dir, trunk.run_id).job_ids[-1]
    arrays = {tuple(sorted(m["run_ids"])): m for m in manifests(sweep_dir)}
    assert arrays[tuple(sorted(old))]["dependency"] == f"afterok:{old_trunk}"
    assert all(dependency(job).startswith(f"afterok:{old_trunk}") for job in old.values())
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.3, progress=False)
    assert final.counts["failed"] == 1 and final.blocked == 2, final.summary()
    wait_until(lambda: all(dependency(j).endswith("(failed)") for j in old.values()),
               "dependency never satisfied")
    code, status, _ = cli_run("status", *cli)
    assert code == 0 and (f"2 branches waiting for trunk {trunk.run_id}: failed; `flame resubmit "
            f"{trunk.run_id}` trains it again and resubmits them") in status, status
    assert "DependencyNeverSatisfied" not in status  # the wait line says it better
    (sweep_dir / "plan.csv").write_text(good)
    code, out, _ = cli_run("resubmit", trunk.run_id, *cli)
    assert code == 0 and "reset 1 runs to planned, and 2 branches of their trunks" in out
    new_trunk = ledger.read(sweep_dir, trunk.run_id).job_ids[-1]
    for b in branches:
        job = ledger.read(sweep_dir, b.run_id).job_ids[-1]
        assert job != old[b.run_id]
        assert dependency(job).startswith(f"afterok:{new_trunk}")
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.3, progress=False)
    assert final.counts["completed"] == 3, final.summary()
    check_started_from_checkpoints(sweep_dir, trunk, branches)
    gone = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j",
                           ",".join(sorted({j.split("_")[0] for j in old.values()}))],
                          capture_output=True, text=True, check=True).stdout
    assert gone and all("CANCELLED" in line for line in gone.splitlines()), gone

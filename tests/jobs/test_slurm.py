"""cluster=slurm_local on the real local SLURM (`flame cluster up`): arrays, idempotence, crash
safety, failures, cancel, one launcher per sweep."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path

import pytest

from jobs import ledger
from jobs.launch import launch_sweep
from jobs.status import poll, wait_until_terminal
from tests.jobs.conftest import BUDGETS_20, REPO, flame, plan_ids

pytestmark = pytest.mark.slurm


def sacct_tasks(job_ids: set[str]) -> list[tuple[str, str, str]]:
    """(task id, job name, state) of every array task of these jobs, from SLURM's accounting."""
    bases = sorted({j.split("_")[0] for j in job_ids})
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,JobName,State", "-j",
                          ",".join(bases)], capture_output=True, text=True, check=True).stdout
    rows = [tuple(line.split("|")) for line in out.splitlines() if line]
    return [row for row in rows if row[0] in job_ids or row[0].split("_")[0] in job_ids]


def sacct_settled(job_ids: set[str], expected: int, limit: float = 30) -> list:
    """sacct's tasks once accounting has caught up (slurmdbd records jobs a few seconds late)
    with every task in an end state; fails if more than ``expected`` tasks ever appear."""
    deadline = time.monotonic() + limit
    while True:
        tasks = sacct_tasks(job_ids)
        assert len(tasks) <= expected, tasks
        ended = all(t[2].split()[0] not in ("PENDING", "RUNNING", "COMPLETING") for t in tasks)
        if (len(tasks) == expected and ended) or time.monotonic() > deadline:
            return tasks
        time.sleep(0.5)


def wait_for_state(sweep_dir: Path, cfg, state: str, count: int = 1, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while poll(sweep_dir, cfg).counts[state] < count:
        assert time.monotonic() < deadline, f"no {state} run after {limit} s"
        time.sleep(0.3)


def test_sweep_of_20_completes_once(slurm_sweep) -> None:
    cfg = slurm_sweep(BUDGETS_20)
    sweep_dir = Path(cfg.sweep_dir)
    out = flame("launch", f"sweep_dir={sweep_dir}", "cluster=slurm_local")
    assert "submitted 20 runs (slurm_local), skipped 0" in out.stdout
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.5, progress=False)
    assert final.counts["completed"] == 20, final.summary()
    again = flame("launch", f"sweep_dir={sweep_dir}", "cluster=slurm_local")
    assert "submitted 0 runs" in again.stdout and "skipped 20 completed" in again.stdout
    records = ledger.read_all(sweep_dir)
    job_ids = {rec.job_ids[0] for rec in records.values()}
    assert all(len(rec.job_ids) == 1 and rec.attempts == 1 for rec in records.values())
    tasks = sacct_settled(job_ids, 20)
    assert len(tasks) == 20 and {t[0] for t in tasks} == job_ids  # one accepted job per run
    assert {t[2] for t in tasks} == {"COMPLETED"} and len({t[1] for t in tasks}) == 1
    status = flame("status", f"sweep_dir={sweep_dir}", "cluster=slurm_local").stdout
    assert "completed" in status and "20" in status


def test_launcher_killed_mid_submission_loses_and_duplicates_nothing(slurm_sweep) -> None:
    cfg = slurm_sweep(BUDGETS_20, "cluster.max_array_size=4")
    sweep_dir = Path(cfg.sweep_dir)
    args = ("launch", f"sweep_dir={sweep_dir}", "cluster=slurm_local", "cluster.max_array_size=4")
    # SIGKILLed after 9 runs were recorded (the 3rd array of 4 held, one of its runs recorded),
    # by a test-only wrapper
    killed = subprocess.run([sys.executable, "-m", "tests.jobs.kill_after", "9", *args],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    states = ledger.read_all(sweep_dir)
    assert sum(rec.state != "planned" for rec in states.values()) == 9
    again = flame(*args)
    assert "recovered 3 runs" in again.stdout and "submitted 8 runs" in again.stdout
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.5, progress=False)
    assert final.counts["completed"] == 20, final.summary()
    records = ledger.read_all(sweep_dir)
    assert sorted(records) == sorted(plan_ids(sweep_dir))
    job_ids = [rec.job_ids[0] for rec in records.values()]
    assert all(len(rec.job_ids) == 1 for rec in records.values())
    tasks = sacct_settled(set(job_ids), 20)
    assert len(tasks) == 20 and sorted(t[0] for t in tasks) == sorted(job_ids)  # 0 duplicates
    assert flame(*args).stdout.count("submitted 0 runs") == 1


def test_failed_run_keeps_its_error_and_resubmit_reruns_it(slurm_sweep) -> None:
    cfg = slurm_sweep("budgets.flops=[3e11]")
    sweep_dir = Path(cfg.sweep_dir)
    plan = (sweep_dir / "plan.csv").read_text()
    rows = list(csv.DictReader(plan.splitlines()))
    bad = rows[2]["run_id"]  # break one row: the simulated trainer refuses N = 0
    rows[2]["n_active_flame"] = "0"
    with open(sweep_dir / "plan.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    launch_sweep(sweep_dir, cfg)
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.5, progress=False)
    assert final.counts["completed"] == 4 and final.counts["failed"] == 1
    rec = ledger.read(sweep_dir, bad)
    assert rec.state == "failed" and "n_active_<accounting> missing" in rec.error_tail
    assert "Traceback" in rec.error_tail and rec.ended_at
    assert sacct_settled({rec.job_ids[0]}, 1)[0][2] == "FAILED"
    status = flame("status", f"sweep_dir={sweep_dir}", "cluster=slurm_local").stdout
    assert bad in status and "n_active_<accounting> missing" in status
    (sweep_dir / "plan.csv").write_text(plan)  # fixed: resubmit runs it again
    out = flame("resubmit", "--failed", f"sweep_dir={sweep_dir}", "cluster=slurm_local")
    assert "reset 1 runs" in out.stdout and "submitted 1 runs" in out.stdout
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.5, progress=False)
    assert final.counts["completed"] == 5
    rec = ledger.read(sweep_dir, bad)
    assert len(rec.job_ids) == 2 and rec.error_tail is None


def test_cancel_scancels_and_marks_cancelled(slurm_sweep) -> None:
    cfg = slurm_sweep("budgets.flops=[3e11]", "trainer.seconds_per_run=120")
    sweep_dir = Path(cfg.sweep_dir)
    launch_sweep(sweep_dir, cfg)
    wait_for_state(sweep_dir, cfg, "running", 2)
    out = flame("cancel", "--all", f"sweep_dir={sweep_dir}", "cluster=slurm_local")
    assert "cancelled 5 runs" in out.stdout
    records = ledger.read_all(sweep_dir)
    assert {rec.state for rec in records.values()} == {"cancelled"}
    job_ids = {rec.job_ids[0] for rec in records.values()}
    deadline = time.monotonic() + 30
    while {t[2].split()[0] for t in sacct_tasks(job_ids)} != {"CANCELLED"}:
        assert time.monotonic() < deadline, sacct_tasks(job_ids)
        time.sleep(0.5)
    assert poll(sweep_dir, cfg).counts["cancelled"] == 5  # stays cancelled


def test_two_concurrent_launchers_submit_once(slurm_sweep) -> None:
    cfg = slurm_sweep("budgets.flops=[3e11,1e12]")
    sweep_dir = Path(cfg.sweep_dir)
    cmd = ["launch", f"sweep_dir={sweep_dir}", "cluster=slurm_local"]
    from tests.jobs.conftest import FLAME, REPO
    procs = [subprocess.Popen([*FLAME, *cmd], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    submitted = [o for o, _ in outs if "submitted 10 runs" in o]
    assert len(submitted) == 1, outs  # exactly one submits ...
    loser = [(p.returncode, o, e) for p, (o, e) in zip(procs, outs) if "submitted 10" not in o][0]
    # ... the other was refused by the lock (naming the holder) or came after it: 0 new runs
    assert (loser[0] == 2 and "another flame launch" in loser[2] and "pid " in loser[2]) or \
        (loser[0] == 0 and "submitted 0 runs" in loser[1]), (codes, loser)
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.5, progress=False)
    assert final.counts["completed"] == 10
    assert len(sacct_settled({r.job_ids[0] for r in ledger.read_all(sweep_dir).values()},
                             10)) == 10


def test_relaunch_recovers_held_arrays_by_job_name(slurm_sweep) -> None:
    """What a launcher killed right after sbatch (or right before it) leaves behind."""
    from jobs.executors.slurm import (
        SlurmSettings,
        _write_manifest,
        slurm_executor,
        unreleased_arrays,
    )
    from jobs.settings import ClusterSettings
    from jobs.sweepdir import jobs_dir
    from jobs.task import RunTask

    cfg = slurm_sweep("budgets.flops=[3e11]")
    sweep_dir = Path(cfg.sweep_dir)
    ids = plan_ids(sweep_dir)
    # died after sbatch: its manifest has no job id, its array waits held in SLURM
    _write_manifest(sweep_dir, {"name": "flame-orphan-test", "run_ids": ids[:3],
                                "job_id": None, "released": False})
    executor = slurm_executor(SlurmSettings.from_cluster(ClusterSettings.from_cfg(cfg)),
                              jobs_dir(sweep_dir) / "logs", "flame-orphan-test")
    with executor.batch():
        jobs = [executor.submit(RunTask(str(sweep_dir), rid, 3)) for rid in ids[:3]]
    # died before sbatch: nothing of it reached SLURM
    _write_manifest(sweep_dir, {"name": "flame-never-submitted", "run_ids": ids[3:],
                                "job_id": None, "released": False})
    assert len(unreleased_arrays(sweep_dir)) == 2
    status = flame("status", f"sweep_dir={sweep_dir}", "cluster=slurm_local").stdout
    assert "2 arrays are still held" in status
    report = launch_sweep(sweep_dir, cfg)
    assert sorted(report.recovered) == sorted(ids[:3])
    assert sorted(report.submitted) == sorted(ids[3:])
    assert [ledger.read(sweep_dir, rid).job_ids for rid in ids[:3]] == \
        [[job.job_id] for job in jobs]
    assert unreleased_arrays(sweep_dir) == []
    final = wait_until_terminal(sweep_dir, cfg, poll_s=0.5, progress=False)
    assert final.counts["completed"] == 5, final.summary()
    all_ids = {rec.job_ids[0] for rec in ledger.read_all(sweep_dir).values()}
    assert len(all_ids) == 5 and len(sacct_settled(all_ids, 5)) == 5


def test_a_job_the_scheduler_forgot_fails_instead_of_waiting_forever(slurm_sweep) -> None:
    """A job id neither sacct nor squeue knows (its cluster's state was reset) ends the wait."""
    from datetime import datetime, timedelta

    from jobs.executors.slurm import FORGOTTEN_AFTER_S
    from sweep.records import write_record

    cfg = slurm_sweep("budgets.flops=[3e11]")
    sweep_dir = Path(cfg.sweep_dir)
    old, recent = plan_ids(sweep_dir)[:2]
    for run_id, age_s in ((old, FORGOTTEN_AFTER_S + 60), (recent, 5)):
        ledger.transition(sweep_dir, run_id, ledger.SUBMITTED, job_id="9999999", strict=True)
        rec = ledger.read(sweep_dir, run_id)
        stamp = datetime.now(UTC) - timedelta(seconds=age_s)
        rec.updated_at = stamp.isoformat(timespec="seconds")
        write_record(sweep_dir, rec)
    status = poll(sweep_dir, cfg)
    states = {r.run_id: r for r in status.runs}
    assert states[old].state == ledger.FAILED and "no record of job 9999999" in states[old].error
    assert states[recent].state == ledger.SUBMITTED  # sacct may simply not have it yet

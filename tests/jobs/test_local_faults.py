"""cluster=local under misuse and faults (issue 11): a deleted or truncated state.json, a
cancel of a run that waits in the queue, `cancel --all` before a launch, a piped launch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from jobs import ledger
from jobs.launch import launch_sweep
from jobs.status import poll, wait_until_terminal
from jobs.task import pid_alive
from sweep.planrow import PlanRow
from tests.jobs.conftest import FLAME, REPO, flame, make_sweep, plan_ids

ONE_RUN = ("budgets.flops=[3e11]", "family.grid={hidden_size:[64],num_layers:[2]}")


def wait_running(sweep_dir: Path, cfg, run_id: str, limit: float = 60) -> dict:
    deadline = time.monotonic() + limit
    while (rec := ledger.read(sweep_dir, run_id)) is None or rec.state != "running":
        assert time.monotonic() < deadline, f"{run_id} never started: {rec}"
        time.sleep(0.1)
    return rec


def train_iterations(sweep_dir: Path, run_id: str) -> list[int]:
    lines = (sweep_dir / "runs" / run_id / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["iteration"] for line in lines if '"kind": "train"' in line]


def test_deleted_state_json_and_relaunch_never_trains_a_run_twice(tmp_path: Path) -> None:
    cfg = make_sweep(tmp_path, *ONE_RUN, "trainer.seconds_per_run=6", "cluster=local",
                     "cluster.parallelism=2")
    (run_id,) = plan_ids(tmp_path)
    launch_sweep(tmp_path, cfg)
    first = wait_running(tmp_path, cfg, run_id).job_ids[-1]
    (tmp_path / "runs" / run_id / "state.json").unlink()  # a user "resets" a running run
    again = launch_sweep(tmp_path, cfg)
    assert again.submitted == (run_id,) and len(again.job_ids) == 1  # a second worker starts
    final = wait_until_terminal(tmp_path, cfg, poll_s=0.3, progress=False)
    assert final.counts["completed"] == 1, final.summary()
    iterations = train_iterations(tmp_path, run_id)
    assert iterations == sorted(set(iterations)), iterations  # one trainer: no interleaving
    rec = ledger.read(tmp_path, run_id)
    assert rec.job_ids[-1] == first  # the ledger follows the worker that trained it
    second_log = next((tmp_path / "jobs" / "logs" / again.job_ids[0].removeprefix("local-"))
                      .glob("*_log.err")).read_text()
    assert f"run {run_id} is being trained by job {first}" in second_log


def test_truncated_state_json_is_named_and_the_other_runs_go_on(tmp_path: Path) -> None:
    cfg = make_sweep(tmp_path, "cluster=local", "cluster.parallelism=2")
    cli = (f"sweep_dir={tmp_path}", "cluster=local", "cluster.parallelism=2")
    broken = plan_ids(tmp_path)[3]
    path = tmp_path / "runs" / broken / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text(ledger.new_record(broken).text()[:40])  # a write cut short
    before = path.read_bytes()
    out = flame("launch", *cli)
    assert "submitted 14 runs" in out.stdout and "skipped 1 corrupt" in out.stdout
    assert out.stderr.count("\n") == 1 and str(path) in out.stderr and "delete it" in out.stderr
    final = wait_until_terminal(tmp_path, cfg, poll_s=0.3, progress=False)  # does not hang
    assert final.counts["completed"] == 14 and final.counts["corrupt"] == 1
    status = flame("status", *cli)
    assert "corrupt" in status.stdout and str(path) in status.stderr
    assert path.read_bytes() == before  # never overwritten
    path.unlink()  # the fix the message names
    assert "submitted 1 runs" in flame("launch", *cli).stdout
    assert wait_until_terminal(tmp_path, cfg, poll_s=0.3,
                               progress=False).counts["completed"] == 15


def break_first_claimed(sweep_dir: Path) -> tuple[str, str, str]:
    """Make the run a local worker claims first (the largest: jobs.task.claim_next) fail at
    once (the simulated trainer refuses N = 0); returns the plan's original text, that run's
    id and the id of the run claimed next."""
    text = (sweep_dir / "plan.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    first, second = sorted(rows, key=lambda r: -PlanRow.from_csv(r).own_flops)[:2]
    first["n_active_flame"] = "0"
    with open(sweep_dir / "plan.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return text, first["run_id"], second["run_id"]


def test_cancel_of_a_queued_resubmitted_run_spares_its_old_worker(tmp_path: Path) -> None:
    cfg = make_sweep(tmp_path, "budgets.flops=[3e11]", "trainer.seconds_per_run=10",
                     "cluster=local", "cluster.parallelism=1")
    cli = (f"sweep_dir={tmp_path}", "cluster=local", "cluster.parallelism=1")
    _, failing, second = break_first_claimed(tmp_path)
    launch_sweep(tmp_path, cfg)
    worker = wait_running(tmp_path, cfg, second).job_ids[-1]  # the worker that failed run 1
    assert ledger.read(tmp_path, failing).job_ids == [worker]
    out = flame("resubmit", failing, *cli)  # queued behind the busy worker, still naming it
    assert "submitted 1 runs" in out.stdout
    assert ledger.read(tmp_path, failing).state == "submitted"
    assert "cancelled 1 runs" in flame("cancel", failing, *cli).stdout
    time.sleep(1.0)
    assert pid_alive(int(worker.removeprefix("local-")))  # not SIGINTed
    assert ledger.read(tmp_path, second).state in ("running", "completed")
    final = wait_until_terminal(tmp_path, cfg, poll_s=0.3, progress=False)
    assert final.counts["completed"] == 4 and final.counts["cancelled"] == 1, final.summary()


def test_cancel_all_before_launch_leaves_runs_planned_and_launch_starts_them(
        tmp_path: Path) -> None:
    cfg = make_sweep(tmp_path, "cluster=local")
    cli = (f"sweep_dir={tmp_path}", "cluster=local")
    out = flame("cancel", "--all", *cli)
    assert "cancelled 0 runs" in out.stdout and "15 never launched stay planned" in out.stdout
    assert ledger.read_all(tmp_path) == {}
    assert "submitted 15 runs" in flame("launch", *cli).stdout
    assert wait_until_terminal(tmp_path, cfg, poll_s=0.3,
                               progress=False).counts["completed"] == 15


def test_piped_launch_returns_without_waiting_for_its_workers(tmp_path: Path) -> None:
    """`flame launch | tail` ends when the launcher does: workers do not hold its stdout."""
    cfg = make_sweep(tmp_path, *ONE_RUN, "trainer.seconds_per_run=15", "cluster=local")
    t0 = time.monotonic()
    proc = subprocess.run([*FLAME, "launch", f"sweep_dir={tmp_path}", "cluster=local"],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=60)  # pipes: EOF only once every holder of them closed
    took = time.monotonic() - t0
    assert proc.returncode == 0 and "submitted 1 runs" in proc.stdout
    assert took < 10, f"{took:.1f} s: the pipe stayed open after the launcher exited"
    assert poll(tmp_path, cfg).counts["running"] + poll(tmp_path, cfg).counts["submitted"] == 1
    flame("cancel", "--all", f"sweep_dir={tmp_path}", "cluster=local")


def test_plan_files_get_the_usual_file_mode(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    assert flame("plan", f"sweep_dir={tmp_path}").returncode == 0
    for name in ("plan.csv", "config.yaml"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


@pytest.mark.slow  # 8 s; a fault of the submitit controller alone, rare
def test_a_worker_whose_controller_was_killed_alone_keeps_its_run(tmp_path: Path) -> None:
    """SIGKILL to a local worker's job id (submitit's controller process) leaves the task it
    started training: reconcile sees the run's train.lock still held and does not fail it."""
    import signal

    cfg = make_sweep(tmp_path, "cluster=local", "cluster.parallelism=1",
                     "trainer.seconds_per_run=4", *ONE_RUN)
    (run_id,) = plan_ids(tmp_path)
    launch_sweep(tmp_path, cfg)
    job = wait_running(tmp_path, cfg, run_id).job_ids[-1]
    os.kill(int(job.removeprefix("local-")), signal.SIGKILL)
    time.sleep(0.5)
    assert poll(tmp_path, cfg).runs[0].state == "running"  # reconciled: not failed
    assert ledger.lock_holder(tmp_path, run_id) == job
    final = wait_until_terminal(tmp_path, cfg, poll_s=0.3, progress=False)
    assert final.counts["completed"] == 1, final.summary()

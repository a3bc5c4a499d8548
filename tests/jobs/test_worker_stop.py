"""Local workers and waiting: SIGTERM stops a worker within seconds and leaves its run
resumable; with every worker dead, status says so and `status --watch` ends; Ctrl-C in a
command is one line, exit 130."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from jobs import ledger
from jobs.cli import compose
from jobs.launch import launch_sweep
from jobs.status import wait_until_terminal
from jobs.task import STOPPED_REASON, pid_alive
from tests.jobs.conftest import FLAME, GRID_FAMILY, REPO, flame, make_sweep, plan_ids

TWO_RUNS = ("budgets.flops=[3e11]", "family.grid={hidden_size:[48,64],num_layers:[2]}")
GRID_FAMILY_TWO = (GRID_FAMILY[0], TWO_RUNS[1])


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
    """SIGTERM mid-run to a worker's process group (its job id: submitit's controller, which
    forwards it, and the task, which so gets it twice): the worker exits within 10 s without
    touching the next queued run; its run is back in the queue with a checkpoint, and the
    next worker resumes it to completion."""
    cfg = make_sweep(tmp_path, "cluster=local", "cluster.parallelism=1",
                     "trainer.seconds_per_run=2", *TWO_RUNS)
    ids = plan_ids(tmp_path)
    launch_sweep(tmp_path, cfg)
    first = running_run(tmp_path, ids)
    job = ledger.read(tmp_path, first).job_ids[-1]
    checkpoints = tmp_path / "runs" / first / "checkpoints"
    deadline = time.monotonic() + 30
    while not (checkpoints.is_dir() and any(checkpoints.iterdir())):  # into its step loop
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    os.killpg(int(job.removeprefix("local-")), signal.SIGTERM)  # the controller and its task
    took = wait_dead(int(job.removeprefix("local-")), limit=10)
    back = wait_state(tmp_path, first, "submitted", limit=2)
    assert back.pending_reason == STOPPED_REASON
    (other,) = set(ids) - {first}
    assert ledger.read(tmp_path, other).state == "submitted"  # never claimed
    print(f"worker exited {took:.2f} s after SIGTERM")
    final = wait_until_terminal(tmp_path, cfg, poll_s=0.2, progress=False)  # restarts workers
    assert final.counts["completed"] == 2, final.summary()
    summary = json.loads((tmp_path / "runs" / first / "summary.json").read_text())
    assert summary["resumed_from"] and summary["resumed_from"] > 0


@pytest.mark.parametrize("command,target", [("status", "jobs.commands.poll"),
                                            ("collect", "analysis.commands.collect"),
                                            ("run", "jobs.study.run")])
def test_ctrl_c_is_one_line_and_exit_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         command: str, target: str) -> None:
    """KeyboardInterrupt anywhere under a command: one line (what keeps running, how to go
    on), exit 130, no traceback."""
    module, _, name = target.rpartition(".")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    # in the module itself, where the command looks the name up when it runs
    monkeypatch.setattr(importlib.import_module(module), name, interrupted)
    out = flame(command, f"sweep_dir={tmp_path}", check=False)
    assert out.returncode == 130, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert f"flame {command}: interrupted" in out.stderr
    assert f"`flame status --watch sweep_dir={tmp_path}`" in out.stderr
    if command != "status":
        assert f"`flame {command} sweep_dir={tmp_path}` again resumes" in out.stderr


def test_ctrl_c_of_flame_run_leaves_its_workers_training(tmp_path: Path) -> None:
    """A terminal's Ctrl-C (SIGINT to the launcher's process group) ends `flame run` with one
    line and exit 130; the local workers it started are in groups of their own and finish
    the runs."""
    cli_argv = [*FLAME, "run", f"sweep_dir={tmp_path}", "cluster=local",
                "cluster.parallelism=1", "trainer=simulated", "trainer.seconds_per_run=1.5",
                "planner.min_iters=1", *GRID_FAMILY_TWO, "budgets.flops=[3e11]"]
    proc = subprocess.Popen(cli_argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        ids = wait_planned(tmp_path)
        running_run(tmp_path, ids)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "flame run: interrupted" in err, err
    cfg = compose([f"sweep_dir={tmp_path}", "cluster=local", "trainer=simulated"])
    final = wait_until_terminal(tmp_path, cfg, poll_s=0.2, progress=False)
    assert final.counts["completed"] == 2, final.summary()
    assert all(len(ledger.read(tmp_path, r).job_ids) == 1 for r in ids)  # never restarted


def wait_planned(sweep_dir: Path, limit: float = 60) -> list[str]:
    deadline = time.monotonic() + limit
    while not (sweep_dir / "plan.csv").exists():
        assert time.monotonic() < deadline, "never planned"
        time.sleep(0.05)
    time.sleep(0.1)  # written atomically, but wait for the launch to record the runs
    return plan_ids(sweep_dir)


def test_status_says_when_no_worker_serves_the_queue(tmp_path: Path) -> None:
    """Every local worker SIGKILLed (each with its task) while runs are queued: the next
    `flame status` says so and what restarts them; `status --watch` ends at once, exit 1."""
    cfg = make_sweep(tmp_path, "cluster=local", "cluster.parallelism=1",
                     "trainer.seconds_per_run=5", *TWO_RUNS)
    ids = plan_ids(tmp_path)
    launch_sweep(tmp_path, cfg)
    running_run(tmp_path, ids)
    served = flame("status", f"sweep_dir={tmp_path}")
    assert "no local worker" not in served.stdout
    registry = json.loads((tmp_path / "jobs" / "local-workers.json").read_text())
    for pid in registry:
        os.killpg(int(pid), signal.SIGKILL)  # its process group: the controller and its task
    for pid in registry:
        wait_dead(int(pid), limit=5)
    out = flame("status", f"sweep_dir={tmp_path}")
    said = " ".join(out.stdout.split())
    assert "1 queued runs but no local worker is alive" in said, said
    assert f"`flame launch sweep_dir={tmp_path}` starts workers again" in said, said
    began = time.monotonic()
    watch = flame("status", "--watch", f"sweep_dir={tmp_path}", check=False)
    assert watch.returncode == 1, watch.stdout + watch.stderr
    assert "no local worker is alive" in " ".join(watch.stdout.split())
    assert time.monotonic() - began < 5
    flame("launch", f"sweep_dir={tmp_path}")  # what the line says: a worker serves them again
    assert "no local worker" not in flame("status", f"sweep_dir={tmp_path}").stdout
    for pid in json.loads((tmp_path / "jobs" / "local-workers.json").read_text()):
        os.killpg(int(pid), signal.SIGKILL)  # leave nothing running

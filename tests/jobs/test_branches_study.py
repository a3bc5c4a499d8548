"""`flame run experiment=demo_branches` (issue 14's acceptance): SIGKILLed halfway, run again;
completed trunks and branches are not trained again, and every branch started from its
trunk's checkpoint. The demo's family and budgets as branches (11 trunks, 33 branches), on the
simulated trainer with ``seconds_per_run`` so that the kill lands mid-study."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from sweep.records import RunRecord, scan_records
from tests.jobs.conftest import REPO

FLAME = [sys.executable, "-m", "jobs.cli"]
STUDY = ("experiment=demo_branches", "trainer=simulated", "trainer.seconds_per_run=1",
         "cluster=local", "cluster.parallelism=2", "cluster.poll_s=0.5", "fit.bootstrap=20",
         "fit.figures=false")


def records(sweep_dir: Path) -> dict[str, RunRecord]:
    return scan_records(sweep_dir)[0]


def plan(sweep_dir: Path) -> dict[str, dict]:
    with open(sweep_dir / "plan.csv", newline="") as handle:
        return {row["run_id"]: row for row in csv.DictReader(handle)}


def completed(sweep_dir: Path, rows: dict[str, dict], role: str) -> list[str]:
    return [rid for rid, rec in records(sweep_dir).items()
            if rec.state == "completed" and rows[rid]["role"] == role]


@pytest.mark.slow  # ~40 s: two `flame run`s of 44 simulated runs, collect and fit
def test_sigkilled_demo_branches_continues_without_retraining(tmp_path: Path) -> None:
    cli = [*FLAME, "run", f"sweep_dir={tmp_path}", *STUDY]
    proc = subprocess.Popen(cli, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # halfway: trunks and branches done, not all
        rows = plan(tmp_path) if (tmp_path / "plan.csv").exists() else {}
        if rows and len(completed(tmp_path, rows, "trunk")) >= 3 \
                and len(completed(tmp_path, rows, "branch")) >= 3:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = completed(tmp_path, rows, "trunk") + completed(tmp_path, rows, "branch")
    assert len(done) < len(rows), "the study finished before the kill"
    before = {rid: (tmp_path / "runs" / rid / "summary.json").stat().st_mtime_ns
              for rid in done}
    again = subprocess.run(cli, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    final = records(tmp_path)
    assert len(final) == len(rows) == 44
    assert {rec.state for rec in final.values()} == {"completed"}
    for rid in done:  # trained once: same summary, one attempt, one job
        assert (tmp_path / "runs" / rid / "summary.json").stat().st_mtime_ns == before[rid]
    assert all(rec.attempts == 1 and len(rec.job_ids) == 1 for rec in final.values())
    for rid, row in rows.items():  # each branch started after its trunk's checkpoint
        if row["role"] != "branch":
            continue
        ckpt = (tmp_path / "runs" / row["parent"] / "checkpoints"
                / f"iter_{int(row['branch_step']):07d}.json")
        started = datetime.fromisoformat(final[rid].started_at).timestamp()
        assert started >= int(ckpt.stat().st_mtime), rid  # started_at has whole seconds
        assert "branching from trunk" in (tmp_path / "runs" / rid / "train.log").read_text()
    assert (tmp_path / "fit.json").exists()


@pytest.mark.slow  # ~60 s: three `flame run`-sized steps of 44 simulated runs
def test_study_killed_with_its_workers_holds_branches_until_resubmit(tmp_path: Path) -> None:
    """The launcher and its local workers SIGKILLed at once (the machine's OOM killer, a
    session killed): the trunks they were training are marked failed by the rerun, their
    branches wait (`flame run` ends instead of waiting forever); `flame resubmit --failed`
    resumes those trunks from their checkpoints and brings the branches along."""
    cli = [*FLAME, "run", f"sweep_dir={tmp_path}", *STUDY]
    proc = subprocess.Popen(cli, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # two trunks checkpointed in training, one done
        rows = plan(tmp_path) if (tmp_path / "plan.csv").exists() else {}
        states = {rid: rec.state for rid, rec in records(tmp_path).items()}
        training = [rid for rid, s in states.items() if s == "running"
                    and rows[rid]["role"] == "trunk"
                    and (tmp_path / "runs" / rid / "checkpoints" / "simulated.json").exists()]
        if len(training) == 2 and completed(tmp_path, rows, "trunk"):
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # its group: the launcher
    proc.wait()
    for pid in json.loads((tmp_path / "jobs" / "local-workers.json").read_text()):
        with contextlib.suppress(ProcessLookupError):  # each worker's group: it and its task
            os.killpg(int(pid), signal.SIGKILL)
    done = {rid: (tmp_path / "runs" / rid / "summary.json").stat().st_mtime_ns
            for rid, rec in records(tmp_path).items() if rec.state == "completed"}
    again = subprocess.run(cli, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    states = {rid: rec.state for rid, rec in records(tmp_path).items()}
    failed = [rid for rid, s in states.items() if s == "failed"]
    assert sorted(failed) == sorted(training)  # killed mid-training: failed, not retrained
    blocked = [rid for rid, row in rows.items() if row["parent"] in failed
               and states.get(rid) == "submitted"]
    assert blocked  # their branches still wait (the last step's checkpoint is not there)
    said = " ".join(again.stdout.split())  # flame run said why, and fitted without them
    assert any(f"waiting for trunk {rid}: failed; `flame resubmit {rid}`" in said
               for rid in failed), said[-2000:]
    status = " ".join(subprocess.run([*FLAME, "status", f"sweep_dir={tmp_path}"], cwd=REPO,
                                     capture_output=True, text=True).stdout.split())
    assert f"waiting for trunk {failed[0]}: failed" in status \
        or f"waiting for trunk {failed[-1]}: failed" in status, status
    out = subprocess.run([*FLAME, "resubmit", "--failed", f"sweep_dir={tmp_path}"], cwd=REPO,
                         capture_output=True, text=True)
    assert f"reset 2 runs to planned, and {len(blocked)} branches" in out.stdout, out.stdout
    final = subprocess.run(cli, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    recs = records(tmp_path)
    assert {rec.state for rec in recs.values()} == {"completed"} and len(recs) == 44
    for rid, mtime in done.items():  # finished before the kill: never trained again
        assert (tmp_path / "runs" / rid / "summary.json").stat().st_mtime_ns == mtime
        assert recs[rid].attempts == 1
    for rid in failed:  # the killed trunks resumed from their own checkpoints
        summary = json.loads((tmp_path / "runs" / rid / "summary.json").read_text())
        assert recs[rid].attempts == 2 and summary["resumed_from"], summary

"""`flame run` end to end on a reduced demo: real Hydra, submitit, embedded training, fits."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep.records import RunRecord, scan_records
from tests.jobs.conftest import flame

FLAME = [sys.executable, "-m", "jobs.cli"]
# The demo's shape, shrunk so that 6 runs train in seconds each on one thread.
REDUCED = ["family.members=null", "family.grid={hidden_size:[16,24,32],num_layers:[2]}",
           "family.base.seq_length=64", "budgets.flops=[1.0e10,2.0e10]",
           "planner.global_batch_size=32", "planner.min_iters=10", "trainer.eval_iters=2",
           "fit.bootstrap=50", "fit.target_budgets=[1.0e11]"]


def flame_run(sweep_dir, *extra, timeout=600):
    return subprocess.run([*FLAME, "run", f"sweep_dir={sweep_dir}", *REDUCED, *extra],
                          capture_output=True, text=True, timeout=timeout)


def ledger(sweep_dir: Path) -> dict[str, RunRecord]:
    return scan_records(sweep_dir)[0]


def check_study(sweep_dir):
    sweep_dir = Path(sweep_dir)
    with open(sweep_dir / "plan.csv", newline="") as handle:
        planned = {row["run_id"] for row in csv.DictReader(handle)}
    with open(sweep_dir / "results.csv", newline="") as handle:
        results = list(csv.DictReader(handle))
    assert {r["run_id"] for r in results} == planned and len(planned) == 6
    for row in results:
        assert row["status"] == "completed"
        # A real model on real text: far below the uniform-guess loss ln(256) = 5.55.
        assert float(row["final_val_loss"]) < 4.5
        # routing health of every run (the embedded trainer's records; analysis/routing.py)
        assert row["routing_status"] in ("ok", "collapsed"), row["routing_reason"]
        assert 1.0 <= float(row["routing_load_max_mean"]) <= 4.0  # E/k = 8/2 at most
    fit = json.loads((sweep_dir / "fit.json").read_text())
    assert {"approach2", "approach3", "extrapolation", "n_used", "n_excluded"} <= set(fit)
    assert fit["n_used"] == 6
    with open(sweep_dir / "selection.csv", newline="") as handle:
        assert [float(r["budget"]) for r in csv.DictReader(handle)] == [1e11]
    figures = list((sweep_dir / "figures").iterdir())
    assert any(f.suffix == ".png" for f in figures) and any(f.suffix == ".svg" for f in figures)
    assert {"routing.png", "routing.svg"} <= {f.name for f in figures}
    return results


def test_demo_study_local(tmp_path):
    out = flame_run(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    check_study(tmp_path)
    assert all(rec.attempts == 1 for rec in ledger(tmp_path).values())
    assert "fit.json" in out.stdout
    assert f"{tmp_path / 'report.html'}  (the report" in out.stdout  # flame run writes the page
    assert "approach3-params" in (tmp_path / "report.html").read_text()
    assert "runs finished 6/6  6 completed" in out.stdout  # plain progress lines in a pipe
    # A finished study: nothing is trained again (in this process: the CLI's start-up is the
    # first call's to check).
    again = flame("run", f"sweep_dir={tmp_path}", *REDUCED)
    assert "0 runs submitted" in again.stdout


def test_sigkilled_study_continues_without_retraining(tmp_path):
    # The ledger's side of a killed study: the simulated trainer (3 s a run) gives the same
    # window to kill in as embedded training, at a fraction of the CPU; the embedded trainer's
    # study is test_demo_study_local's.
    study = [f"sweep_dir={tmp_path}", "trainer=simulated", "trainer.seconds_per_run=3",
             *(o for o in REDUCED if not o.startswith("trainer."))]
    proc = subprocess.Popen([*FLAME, "run", *study],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        done = [r for r, rec in ledger(tmp_path).items() if rec.state == "completed"]
        if done:
            break
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert done, "no run completed before the deadline"
    assert len(done) < 6, "the study finished before it was killed"
    logs = {r: Path(tmp_path, "runs", r, "train.log").stat().st_mtime_ns for r in done}
    flame("run", *study)  # the study again, in this process
    records = ledger(tmp_path)
    assert len(records) == 6 and all(rec.state == "completed" for rec in records.values())
    assert (tmp_path / "fit.json").exists() and (tmp_path / "report.html").exists()
    for run_id in done:
        assert records[run_id].attempts == 1
        assert Path(tmp_path, "runs", run_id, "train.log").stat().st_mtime_ns == logs[run_id]


@pytest.mark.slow  # 35 s; SLURM's side is covered by tests/jobs/test_slurm*.py, the study's by
@pytest.mark.slurm  # test_demo_study_local: kept out of the 10-minute default suite
def test_demo_study_through_local_slurm(tmp_path, slurm_cluster):
    out = flame_run(tmp_path, "cluster=slurm_local")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    check_study(tmp_path)
    assert all(rec.job_ids and "_" in rec.job_ids[-1]  # array tasks: <job>_<index>
               for rec in ledger(tmp_path).values())

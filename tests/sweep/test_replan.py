"""Changing the plan of a launched sweep: refused without --replan, never under runs in flight,
the old plan and config kept, and completed runs never dropped from results.csv."""

from __future__ import annotations

import csv
import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.jobs.conftest import flame as run_cli

REPO = Path(__file__).resolve().parents[2]
BASE = ("trainer=simulated", "budgets.flops=[3e10,1e11]", "cluster=local", "fit.figures=false")
SIM = ("trainer=simulated", "budgets.flops=[3e10,1e11]")


def flame(*argv: str) -> subprocess.CompletedProcess:
    """The CLI in this process (``tests.jobs.conftest.flame``), its exit code not checked."""
    return run_cli(*argv, check=False)


def digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in (".csv", ".yaml")}


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_replanning_a_launched_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    first = flame("run", f"sweep_dir={sweep}", *BASE, "fit.bootstrap=0")
    assert first.returncode == 0, first.stderr
    done = {r["run_id"] for r in rows(sweep / "results.csv") if r["flag"] == "ok"}
    assert len(done) == 14
    before = digest(sweep)

    refused = flame("plan", f"sweep_dir={sweep}", *BASE, "training.lr=1e-3")
    assert refused.returncode == 2 and "--replan" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert digest(sweep) == before  # plan.csv, config.yaml, results.csv untouched

    again = flame("plan", f"sweep_dir={sweep}", *BASE, "training.lr=1e-3", "--replan")
    assert again.returncode == 0, again.stderr
    [kept] = list((sweep / "history").iterdir())
    assert "lr: 0.003" in (kept / "config.yaml").read_text()  # the old config, recoverable
    assert "lr: 0.001" in (sweep / "config.yaml").read_text()
    assert {r["run_id"] for r in rows(kept / "plan.csv")} == done

    collected = flame("collect", f"sweep_dir={sweep}", *BASE, "training.lr=1e-3")
    assert collected.returncode == 0, collected.stderr
    results = rows(sweep / "results.csv")
    unplanned = {r["run_id"] for r in results if r["flag"] == "unplanned"}
    assert unplanned == done  # completed results never disappear because the plan changed
    assert all(float(r["final_val_loss"]) > 0 for r in results if r["run_id"] in done)
    assert sum(r["flag"] == "missing" for r in results) == 14  # the new plan, not run yet


@pytest.mark.parametrize("cluster", [("cluster=local", "cluster.parallelism=1"),
                                     pytest.param(("cluster=slurm_local",),
                                                  marks=pytest.mark.slurm)])
def test_no_replan_under_runs_in_flight(tmp_path: Path, cluster: tuple[str, ...]) -> None:
    sweep = tmp_path / "s"
    slow = (*SIM, "trainer.seconds_per_run=60", *cluster)
    assert flame("plan", f"sweep_dir={sweep}", *slow).returncode == 0
    try:
        assert flame("launch", f"sweep_dir={sweep}", *slow).returncode == 0
        before = digest(sweep)
        out = flame("plan", f"sweep_dir={sweep}", *slow, "training.lr=1e-3", "--replan")
        assert out.returncode == 2 and "still queued or running" in out.stderr, out.stderr
        assert digest(sweep) == before
    finally:
        flame("cancel", "--all", f"sweep_dir={sweep}", *slow)

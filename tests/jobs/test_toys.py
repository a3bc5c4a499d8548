"""A study through an executor (and a trainer) defined in the tests directory, not in flame:
named on the command line as plugins, they need no file under jobs/ or trainers/ changed."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest

from jobs.cli import compose
from jobs.study import run
from sweep.records import scan_records
from tests.jobs.toys import NAME

# The demo's family and budgets, one seed and the two smaller budgets: seconds on a CPU.
STUDY = ["experiment=demo", "planner.seeds=1", "budgets.flops=[3.0e10,1.0e11,3.0e11]",
         "fit.bootstrap=20", "fit.figures=false", "cluster=local"]
# The toy trainer (tests/trainers/toys.py) is chosen as trainer=toy through its own config
# folder on Hydra's search path, as a user's plugin would be.
TOY_TRAINER = [f"hydra.searchpath=[file://{Path(__file__).parents[1] / 'trainers' / 'conf'}]",
               "trainer=toy"]
TRAINERS = {"simulated": ["trainer=simulated"], "toy": TOY_TRAINER}


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_a_study_runs_through_a_toy_executor(tmp_path: Path, trainer: str) -> None:
    """The toy executor with a built-in trainer, and with the toy trainer: a whole study
    (plan, submit, train, collect, fit) through two plugins, touching no file under jobs/ or
    trainers/."""
    cfg = compose([f"sweep_dir={tmp_path}", *STUDY, *TRAINERS[trainer],
                   f"cluster.executor={NAME}"])
    assert run(cfg, argparse.Namespace(no_wait=False, replan=False)) == 0
    with open(tmp_path / "plan.csv", newline="") as handle:
        planned = {row["run_id"] for row in csv.DictReader(handle)}
    records, corrupt = scan_records(tmp_path)
    assert not corrupt and set(records) == planned
    for rec in records.values():  # every run trained by the toy's arrays, once
        assert rec.state == "completed" and rec.attempts == 1
        assert rec.last_job_id.startswith("inline-"), rec.job_ids
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["n_used"] == len(planned)

"""A trainer from the tests directory (tests/trainers/toys.py), chosen by configuration alone:
planned, launched on cluster=local (its worker, another process, imports the plugin by the name
config.yaml holds), collected. No file under jobs/ or trainers/ knows it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.collect import collect_sweep
from jobs.launch import launch_sweep
from jobs.status import wait_until_terminal
from sweep.errors import ConfigError
from tests.trainers.conftest import make_plan
from tests.trainers.toys import NAME, ToyConfig, ToyTrainer
from trainers.registry import trainer_for
from trainers.run import train_run

CONF = Path(__file__).with_name("conf")
TOY = ["trainer=toy", f"hydra.searchpath=[file://{CONF}]"]


def test_a_plugin_name_finds_the_toy_trainer_and_its_config():
    trainer = trainer_for(NAME)
    assert isinstance(trainer, ToyTrainer) and trainer.config is ToyConfig
    assert trainer_for({"name": NAME}) is trainer
    with pytest.raises(ConfigError, match="cannot import tests.trainers.nope"):
        trainer_for("tests.trainers.nope:Toy")


def test_toy_study_planned_launched_and_collected(tmp_path):
    from jobs.cli import compose

    rows, config = make_plan(tmp_path, *TOY, "budgets.flops=[3e10]", "cluster=local",
                             "cluster.parallelism=1", "cluster.poll_s=0.2")
    assert config["trainer"] == {"name": NAME, "floor": 2.0, "numerics_version": 1}
    cfg = compose([f"sweep_dir={tmp_path}", *TOY, "budgets.flops=[3e10]", "cluster=local",
                   "cluster.parallelism=1", "cluster.poll_s=0.2"])
    launch_sweep(tmp_path, cfg)
    final = wait_until_terminal(tmp_path, cfg, poll_s=0.2, progress=False)
    assert final.counts["completed"] == len(rows), final.summary()
    summary = json.loads((tmp_path / "runs" / rows[0]["run_id"] / "summary.json").read_text())
    assert summary["trainer"] == NAME and summary["numerics_version"] == 1
    results = collect_sweep(tmp_path, cfg)
    assert set(results["flag"]) == {"ok"}
    assert (results["numerics_version"] == 1).all()
    again = train_run(rows[0], config, tmp_path / "again")  # in this process too
    assert again["final_val_loss"] == pytest.approx(
        float(pd.read_csv(tmp_path / "results.csv", dtype={"run_id": str}).set_index("run_id")
              .loc[rows[0]["run_id"], "final_val_loss"]))

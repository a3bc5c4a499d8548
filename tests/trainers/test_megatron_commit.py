"""A Megatron run records the Megatron-LM commit it ran, and a launch or a run whose checkout
is not at the commit flame's recipe was checked against (core_v0.16.1) warns; shown with the
stand-in of pretrain_gpt.py in a git checkout of its own."""

from __future__ import annotations

import subprocess

import pytest

from sweep.planrow import PlanRow
from tests.trainers.conftest import standin_overrides
from trainers import megatron_trainer
from trainers.base import JobShape
from trainers.megatron_trainer import checked_commit, checkout_commit
from trainers.registry import trainer_for
from trainers.run import train_run

CORE_V0_16_1 = "55ac7082517c3878ae653c07c09c534b8aed49f6"


def _git_checkout(path):
    """The stand-in's checkout made a git repository with one commit; its hash."""
    def git(*args):
        return subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True,
                              text=True).stdout.strip()
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "stand-in")
    return git("rev-parse", "HEAD")


@pytest.fixture
def standin(tmp_path, planner, monkeypatch):
    monkeypatch.setenv("FLAME_STANDIN_STEP_S", "0")
    rows, cfg = planner(tmp_path / "plan", "experiment=flame_release", "trainer=megatron",
                        "trainer.data_path=/data/dclm_text_document",
                        *standin_overrides(tmp_path / "megatron"))
    row = dict(next(r for r in rows if r["member"] == "L9-h1024"), train_iters="7")
    return row, cfg, _git_checkout(tmp_path / "megatron")


def test_the_checked_commit_is_core_v0_16_1():
    assert checked_commit() == CORE_V0_16_1


def test_a_run_records_its_commit_and_warns_when_it_is_not_the_checked_one(standin, tmp_path,
                                                                          capfd):
    row, cfg, commit = standin
    summary = train_run(row, cfg, tmp_path / "run")
    assert summary["megatron_commit"] == commit and summary["iterations"] == 7
    assert "not 55ac7082517c (core_v0.16.1)" in summary["warnings"][0]
    assert f"Megatron-LM is at commit {commit[:12]}" in capfd.readouterr().err
    assert summary["numerics_version"] == 1


def test_no_warning_at_the_checked_commit(standin, tmp_path, monkeypatch):
    row, cfg, commit = standin
    monkeypatch.setattr(megatron_trainer, "checked_commit", lambda: commit)
    summary = train_run(row, cfg, tmp_path / "run")
    assert summary["megatron_commit"] == commit and "warnings" not in summary


def test_a_launch_notes_another_commit_before_it_submits(standin):
    row, cfg, commit = standin
    trainer = trainer_for(cfg["trainer"])  # what jobs.preflight.check_runs asks
    notes = trainer.preflight([PlanRow.of(row)], cfg, [row["run_id"]], dry_run=False)
    assert trainer.job_shape(cfg["trainer"]) == JobShape(nodes=1, gpus_per_node=1)
    assert any(f"Megatron-LM is at commit {commit[:12]}" in n for n in notes)


def test_a_checkout_without_git_records_no_commit(tmp_path):
    assert checkout_commit(tmp_path) is None

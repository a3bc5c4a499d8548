"""Launch without a scheduler: config errors, --dry-run files, the one-launcher lock."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from jobs.cli import compose
from jobs.executors.slurm import SlurmSettings, slurm_parameters
from jobs.launch import launch_sweep, launcher_lock
from jobs.settings import ClusterSettings
from sweep.errors import ConfigError
from tests.jobs.conftest import flame, make_sweep, plan_ids


def test_bad_cluster_config_names_the_key(tmp_path: Path) -> None:
    for override, key in (("cluster.max_attempts=0", "cluster.max_attempts"),
                          ("cluster.executor=pbs", "cluster.executor"),
                          ("cluster.signal_delay_s=7200", "cluster.signal_delay_s")):
        with pytest.raises(ConfigError, match=key):  # at compose time: the schema validates
            compose([f"sweep_dir={tmp_path}", "cluster=slurm_local", override])
    out = flame("launch", f"sweep_dir={tmp_path}", "cluster.max_attempts=0", check=False)
    assert out.returncode == 2 and "cluster.max_attempts" in out.stderr
    out = flame("launch", f"sweep_dir={tmp_path / 'nothing'}", check=False)
    assert out.returncode == 2 and "flame plan" in out.stderr  # no plan yet: say how to make one


def test_slurm_h100_options_go_through_submitit(tmp_path: Path) -> None:
    cfg = make_sweep(tmp_path, "cluster=slurm_h100", "cluster.partition=gpu",
                     "cluster.account=proj42", "cluster.qos=high",
                     "cluster.setup=['source ~/megatron-env/bin/activate']")
    params = slurm_parameters(SlurmSettings.from_cluster(ClusterSettings.from_cfg(cfg)), "flame-x")
    assert params["slurm_partition"] == "gpu" and params["gpus_per_node"] == 8
    assert params["slurm_account"] == "proj42" and params["slurm_qos"] == "high"
    report = launch_sweep(tmp_path, cfg, dry_run=True)  # no sbatch needed for a dry run
    assert report.dry_run and len(report.submitted) == 15 and report.job_ids == ()
    sbatch = report.files[0].read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --account=proj42", "#SBATCH --qos=high", "#SBATCH --time=240",
                 "#SBATCH --array=0-14%15", "#SBATCH --signal=USR2@120", "#SBATCH --exclusive",
                 "source ~/megatron-env/bin/activate"):
        assert line in sbatch, line
    assert json.loads(report.files[1].read_text())["run_ids"] == plan_ids(tmp_path)
    assert not (tmp_path / "runs").exists()  # nothing submitted, nothing in the ledger


def test_local_dry_run_cli(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    out = flame("launch", "--dry-run", f"sweep_dir={tmp_path}", "cluster.parallelism=2")
    assert "would submit 15 runs" in out.stdout
    plan = json.loads((tmp_path / "jobs" / "dry-run" / "local.json").read_text())
    assert plan["workers"] == 2 and plan["threads_per_job"] == 1 and len(plan["run_ids"]) == 15


def test_second_launcher_names_the_holder(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    with launcher_lock(tmp_path):
        out = flame("launch", f"sweep_dir={tmp_path}", check=False)
    assert out.returncode == 2
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in out.stderr
    assert not (tmp_path / "runs").exists()

"""`flame cluster`: the local SLURM's status, env line and idempotent `up`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from jobs.cluster import LocalCluster, alive, node_state, slurm_conf_text
from tests.jobs.conftest import flame


def test_status_and_env_of_a_cluster_that_is_not_there(tmp_path: Path) -> None:
    out = flame("cluster", "status", f"--state-dir={tmp_path}", check=False)
    assert out.returncode == 1 and "slurmctld  not running" in out.stdout
    env = flame("cluster", "env", f"--state-dir={tmp_path}").stdout.strip()
    assert env == f"export SLURM_CONF={tmp_path.resolve() / 'slurm.conf'}"


def test_slurm_conf_follows_the_recipe(tmp_path: Path) -> None:
    text = slurm_conf_text(LocalCluster(tmp_path), cpus=2, mem_mb=1000)
    for line in ("AuthInfo=cred_expire=10", "SchedulerParameters=sched_interval=1,bf_interval=1",
                 "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
                 "SelectType=select/cons_tres", "AccountingStorageType=accounting_storage/slurmdbd",
                 "PartitionName=debug", f"StateSaveLocation={tmp_path}/state"):
        assert line in text


@pytest.mark.slurm
def test_up_is_idempotent_and_sacct_works(slurm_cluster: LocalCluster) -> None:
    pids = {d: alive(slurm_cluster, d) for d in ("mysqld", "slurmdbd", "slurmctld", "slurmd")}
    out = flame("cluster", "up")
    assert "cluster already up" in out.stdout
    assert {d: alive(slurm_cluster, d) for d in pids} == pids  # nothing restarted
    status = flame("cluster", "status").stdout
    assert all(f"pid {pid}" in status for pid in pids.values())
    assert node_state(slurm_cluster) in ("idle", "mixed", "allocated")
    sacct = subprocess.run(["sacct", "-n", "-X", "-o", "JobID", "-S", "now-1hours"],
                           env=slurm_cluster.env(), capture_output=True, text=True)
    assert sacct.returncode == 0 and "error" not in sacct.stderr.lower()

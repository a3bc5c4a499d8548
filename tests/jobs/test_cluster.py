"""`flame cluster`: the local SLURM's status, env line and idempotent `up`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from jobs.cluster import LocalCluster, alive, node_state
from tests.jobs.conftest import flame


def test_status_and_env_of_a_cluster_that_is_not_there(tmp_path: Path) -> None:
    out = flame("cluster", "status", f"--state-dir={tmp_path}", check=False)
    assert out.returncode == 1 and "slurmctld  not running" in out.stdout
    env = flame("cluster", "env", f"--state-dir={tmp_path}").stdout.strip()
    assert env == f"export SLURM_CONF={tmp_path.resolve() / 'slurm.conf'}"


@pytest.mark.slurm
def test_the_running_controller_uses_the_written_slurm_conf(slurm_cluster: LocalCluster) -> None:
    """What `flame cluster up` writes is what the live slurmctld reports (`scontrol show
    config`), key by key: the template is the cluster, not just text."""
    written = {}
    for line in slurm_cluster.slurm_conf.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#") and " " not in key:
            written[key] = value
    live = {}
    out = subprocess.run(["scontrol", "show", "config"], env=slurm_cluster.env(),
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            live[key.strip()] = value.strip()
    keys = ("ClusterName", "AuthInfo", "ProctrackType", "TaskPlugin", "SelectType",
            "SchedulerParameters", "AccountingStorageType", "StateSaveLocation")
    assert {k: live.get(k) for k in keys} == {k: written[k] for k in keys}
    partitions = subprocess.run(["sinfo", "-h", "-o", "%P"], env=slurm_cluster.env(),
                                capture_output=True, text=True, check=True).stdout
    assert "debug" in partitions


@pytest.mark.slurm
def test_up_is_idempotent_and_sacct_works(slurm_cluster: LocalCluster) -> None:
    pids = {d: alive(slurm_cluster, d) for d in ("mysqld", "slurmdbd", "slurmctld", "slurmd")}
    out = flame("cluster", "up")
    assert "cluster already up" in out.stdout
    assert {d: alive(slurm_cluster, d) for d in pids} == pids  # nothing restarted
    status = flame("cluster", "status").stdout
    assert all(f"pid {pid}" in status for pid in pids.values())
    # up and serving: a node still finishing another test's job (its epilog) is "completing"
    assert node_state(slurm_cluster) in ("idle", "mixed", "allocated", "completing")
    sacct = subprocess.run(["sacct", "-n", "-X", "-o", "JobID", "-S", "now-1hours"],
                           env=slurm_cluster.env(), capture_output=True, text=True)
    assert sacct.returncode == 0 and "error" not in sacct.stderr.lower()

"""What jobs/ reads from a sweep directory (plan.csv, config.yaml) and where it keeps its own
files (``<sweep>/jobs/``: launch manifests, submitit logs, the local worker registry)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sweep.arch import ConfigError
from sweep.io import CONFIG_YAML, PLAN_CSV

JOBS_DIR = "jobs"


def jobs_dir(sweep_dir: Path) -> Path:
    """``<sweep>/jobs/``: the launcher's and the executors' own files."""
    return Path(sweep_dir) / JOBS_DIR


def read_plan(sweep_dir: Path) -> list[dict[str, str]]:
    """plan.csv's rows in order (strings, as csv gives them), or a ConfigError saying how to
    make one."""
    path = Path(sweep_dir) / PLAN_CSV
    if not path.exists():
        raise ConfigError(f"{path} does not exist: run `flame plan sweep_dir={sweep_dir}` first")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "run_id" not in rows[0]:
        raise ConfigError(f"{path} has no run_id column; re-plan with `flame plan`")
    return rows


def read_config(sweep_dir: Path) -> dict[str, Any]:
    """The plan's config.yaml as a plain dict (what the runs were planned with)."""
    path = Path(sweep_dir) / CONFIG_YAML
    if not path.exists():
        raise ConfigError(f"{path} does not exist: run `flame plan sweep_dir={sweep_dir}` first")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]


CLUSTER_YAML = "cluster.yaml"


def record_cluster(sweep_dir: Path, cluster: Any) -> None:
    """Remember the cluster config the sweep was launched with (later commands default to it)."""
    from sweep.io import atomic_write_text
    atomic_write_text(jobs_dir(sweep_dir) / CLUSTER_YAML, OmegaConf.to_yaml(cluster, resolve=True))


def recorded_cluster(sweep_dir: Path) -> Any | None:
    """The cluster config of the sweep's last launch, or None if it was never launched."""
    path = jobs_dir(sweep_dir) / CLUSTER_YAML
    return OmegaConf.load(path) if path.exists() else None

"""What jobs/ reads from a sweep directory (config.yaml, via sweep.config) and where it keeps
its own files (``<sweep>/jobs/``: launch manifests, submitit logs, the local worker registry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sweep.arch import ConfigError
from sweep.config import load_sweep_config, read_plan
from sweep.io import CONFIG_YAML, run_dir

JOBS_DIR = "jobs"


def jobs_dir(sweep_dir: Path) -> Path:
    """``<sweep>/jobs/``: the launcher's and the executors' own files."""
    return Path(sweep_dir) / JOBS_DIR


def read_config(sweep_dir: Path) -> dict[str, Any]:
    """The plan's config.yaml as a plain dict (what the runs were planned with)."""
    config = load_sweep_config(sweep_dir)
    if config is None:
        raise ConfigError(f"{Path(sweep_dir) / CONFIG_YAML} does not exist: run "
                          f"`flame plan sweep_dir={sweep_dir}` first")
    return config


def plan_rows(sweep_dir: Path) -> list[dict[str, str]]:
    """plan.csv's rows, every run_id checked to be a plain id before jobs/ makes a path of it
    (``run_dir`` raises a ConfigError naming the bad one): nothing is written for a plan.csv
    whose ``../../x`` would reach outside ``<sweep>/runs/``."""
    rows = read_plan(sweep_dir)
    for row in rows:
        run_dir(sweep_dir, row["run_id"])
    return rows


CLUSTER_YAML = "cluster.yaml"


def record_cluster(sweep_dir: Path, cluster: Any) -> None:
    """Remember the cluster config the sweep was launched with (later commands default to it)."""
    from sweep.io import atomic_write_text
    atomic_write_text(jobs_dir(sweep_dir) / CLUSTER_YAML, OmegaConf.to_yaml(cluster, resolve=True))


def recorded_cluster(sweep_dir: Path) -> Any | None:
    """The cluster config of the sweep's last launch, or None if it was never launched."""
    path = jobs_dir(sweep_dir) / CLUSTER_YAML
    return OmegaConf.load(path) if path.exists() else None

"""What jobs/ reads from a sweep directory (config.yaml, via sweep.config) and where it keeps
its own files (``<sweep>/jobs/``: launch manifests, submitit logs, the local worker registry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf._utils import get_yaml_loader

from sweep.config import read_config as read_sweep_config
from sweep.config import read_plan
from sweep.errors import ConfigError
from sweep.io import CONFIG_YAML
from sweep.planrow import PlanRow
from sweep.schema import literal

JOBS_DIR = "jobs"


def jobs_dir(sweep_dir: Path) -> Path:
    """``<sweep>/jobs/``: the launcher's and the executors' own files."""
    return Path(sweep_dir) / JOBS_DIR


def read_config(sweep_dir: Path) -> dict[str, Any]:
    """The plan's config.yaml as a plain dict (what the runs were planned with)."""
    config = read_sweep_config(sweep_dir)  # not conf.study's: a job's imports stay light
    if config is None:
        raise ConfigError(f"{Path(sweep_dir) / CONFIG_YAML} does not exist: run "
                          f"`flame plan sweep_dir={sweep_dir}` first")
    return config


def plan_rows(sweep_dir: Path) -> list[PlanRow]:
    """plan.csv's typed rows; every run_id is checked to be a plain id (``sweep.io``) before
    jobs/ makes a path of it: a plan.csv whose ``../../x`` would reach outside ``runs/`` is
    refused before anything is written."""
    return read_plan(sweep_dir)


CLUSTER_YAML = "cluster.yaml"


def record_cluster(sweep_dir: Path, cluster: Any) -> None:
    """Remember the cluster config the sweep was launched with (later commands default to it)."""
    from sweep.io import atomic_write_text
    atomic_write_text(jobs_dir(sweep_dir) / CLUSTER_YAML, OmegaConf.to_yaml(cluster, resolve=True))


def recorded_cluster(sweep_dir: Path) -> Any | None:
    """The cluster config of the sweep's last launch, or None if it was never launched."""
    path = jobs_dir(sweep_dir) / CLUSTER_YAML
    if not path.exists():
        return None
    return data_config(path.read_text(encoding="utf-8"))


def data_config(text: str) -> Any:
    """YAML text from a sweep (a file, or a config made from one) as a DictConfig whose
    strings are data: escaped, so no interpolation or resolver ever runs on them."""
    data = yaml.load(text, Loader=get_yaml_loader())
    return OmegaConf.create(literal(data if isinstance(data, dict) else {}))

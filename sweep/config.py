"""From the composed Hydra config to the planner's inputs, and the sweep directory's plan.csv and
config.yaml (written and read here: the contract's code, with ``sweep/io.py``)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from conf.schema import StudyConfig, upgrade
from sweep.errors import ConfigError
from sweep.family import build_family
from sweep.io import CONFIG_YAML, HISTORY_DIR, PLAN_CSV, atomic_write_text
from sweep.planner import Plan, PlannerSettings, plan
from sweep.planrow import PlanRow
from sweep.schema import result_values
from trainers.schedule import check_branchable


def study_config(cfg: Any) -> StudyConfig:
    """The typed whole config of a composed or stored config (a ConfigError naming the key)."""
    return cfg if isinstance(cfg, StudyConfig) else StudyConfig.from_cfg(cfg)


def load_sweep_config(sweep_dir: Path) -> dict[str, Any] | None:
    """``<sweep>/config.yaml`` as a plain dict in the current format; None when there is none,
    one clear error when it cannot be read or was written by a newer flame."""
    path = Path(sweep_dir) / CONFIG_YAML
    if not path.is_file():
        return None
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as err:  # noqa: BLE001 - any YAML/interpolation error: one clear line
        raise ConfigError(f"{path}: not readable YAML ({err}); re-run `flame plan`") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: not a config mapping; re-run `flame plan`")
    return upgrade(loaded, str(path))


def settings_from_cfg(cfg: Any) -> PlannerSettings:
    """The planner's settings: the ``planner`` key, the conventions and the cost model."""
    study = study_config(cfg)
    root = study.root
    return PlannerSettings(**vars(root.planner), accounting=root.accounting,
                           flops_formula=root.flops_formula,
                           device_peak_flops=study.cluster.device_peak_flops,
                           assumed_mfu=study.cluster.assumed_mfu,
                           warmup_fraction=study.training.warmup_fraction)


def hash_context(cfg: Any) -> dict[str, Any]:
    """What besides the architecture and tokens changes a run's result: the recipe's and the
    trainer's result fields (``sweep.schema.result``)."""
    study = study_config(cfg)
    return {"training": result_values(study.training), "trainer": result_values(study.trainer)}


def plan_from_cfg(cfg: Any) -> tuple[Plan, PlannerSettings]:
    """The plan of a composed config (a ConfigError before anything is written)."""
    study = study_config(cfg)
    settings = settings_from_cfg(study)
    if settings.strategy == "branches":
        check_branchable(study.training, study.trainer)
    members = build_family(study.family)
    return plan(study.budgets.flops, members, settings, hash_context(study)), settings


def plan_csv_text(the_plan: Plan, settings: PlannerSettings) -> str:
    """plan.csv's text: a header and one row per run."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=PlanRow.columns(), lineterminator="\n")
    writer.writeheader()
    for run in the_plan.runs:
        writer.writerow(run.to_row(settings).to_csv())
    return buf.getvalue()


def read_plan(sweep_dir: Path) -> list[PlanRow]:
    """plan.csv's rows in order, typed, or a ConfigError saying how to make one."""
    path = Path(sweep_dir) / PLAN_CSV
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: run `flame plan sweep_dir={sweep_dir}` first")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "run_id" not in rows[0]:
        raise ConfigError(f"{path} has no run_id column; re-plan with `flame plan`")
    return [PlanRow.from_csv(row) for row in rows]


def config_yaml(cfg: Any) -> str:
    """The typed, versioned snapshot of ``cfg`` that config.yaml holds."""
    return study_config(cfg).to_yaml()


def write_plan(sweep_dir: Path, the_plan: Plan, settings: PlannerSettings, cfg: Any) -> None:
    """Write plan.csv and config.yaml atomically (config first: a plan never lacks its config).

    Re-planning with a changed config replaces the plan, after keeping the old plan.csv and
    config.yaml under ``history/<time>/``; runs keep their ids wherever their result-determining
    inputs are unchanged, so finished runs are reused.
    """
    sweep_dir = Path(sweep_dir)
    text, config = plan_csv_text(the_plan, settings), config_yaml(cfg)
    old_plan, old_config = sweep_dir / PLAN_CSV, sweep_dir / CONFIG_YAML
    if old_plan.is_file() and old_config.is_file() and (
            old_plan.read_text() != text or old_config.read_text() != config):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        for old in (old_config, old_plan):
            atomic_write_text(sweep_dir / HISTORY_DIR / stamp / old.name, old.read_text())
    atomic_write_text(old_config, config)
    atomic_write_text(old_plan, text)


def history_plans(sweep_dir: Path) -> list[Path]:
    """plan.csv files of earlier plans of this sweep, newest first."""
    return sorted((Path(sweep_dir) / HISTORY_DIR).glob(f"*/{PLAN_CSV}"), reverse=True)


__all__ = ["study_config", "load_sweep_config", "settings_from_cfg", "hash_context",
           "plan_from_cfg", "plan_csv_text", "read_plan", "config_yaml", "write_plan",
           "history_plans"]

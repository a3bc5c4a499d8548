"""The whole config, typed (``StudyConfig``), and the builders that take any config: a composed
Hydra config, a sweep's config.yaml as a mapping, or a ``StudyConfig`` already.

Typing the whole config needs every group's schema, so it lives here, above the packages;
``sweep.config`` keeps the sweep directory's files and the planning from typed parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from analysis.design_settings import DesignConfig
from analysis.settings import FitSettings
from conf.schema import CONFIG_FORMAT, GROUPS, RootConfig
from jobs.settings import ClusterSettings
from sweep import config as sweep_config
from sweep.family import FamilyConfig
from sweep.planner import BudgetsConfig, Plan, PlannerSettings
from sweep.schema import plain, to_typed
from trainers.registry import trainer_for
from trainers.settings import Recipe, trainer_config


@dataclass
class StudyConfig:
    """The whole config, typed: every stage's view of a study."""

    root: RootConfig
    """Top-level keys and the planner (its groups null: they are the fields below)."""
    family: FamilyConfig
    """The architecture family."""
    budgets: BudgetsConfig
    """The isoFLOP budgets."""
    training: Recipe
    """The training recipe."""
    trainer: Any
    """The trainer's config (EmbeddedConfig | SimulatedConfig | MegatronConfig)."""
    cluster: ClusterSettings
    """Where jobs run."""
    fit: FitSettings
    """How results are fitted."""
    design: DesignConfig = field(default_factory=DesignConfig)
    """How `flame design` simulates designs (not part of a sweep's config.yaml)."""

    def __post_init__(self) -> None:
        # Checks across groups: branches need a schedule the trainer can branch.
        if self.root.planner.strategy == "branches":
            trainer_for(self.trainer).check_branchable(self.training, self.trainer)

    def check_plan(self, the_plan: Plan, settings: PlannerSettings) -> list[str]:
        """Checks of a plan across groups, before it is written: each WSD branch reads the data
        its run trained straight through would (``trainers.data_order``; a ConfigError when
        not). Notes for what cannot be checked on this machine."""
        if self.root.planner.strategy != "branches":
            return []
        from trainers.data_order import check_branches

        rows = [run.to_row(settings) for run in the_plan.runs]
        return check_branches(rows, self.trainer, required=False)

    @classmethod
    def from_cfg(cls, cfg: DictConfig | Mapping[str, Any]) -> StudyConfig:
        """From a composed config or a sweep's config.yaml; a problem is a ConfigError."""
        data = plain(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
        groups = {name: to_typed(kind, data.get(name), name) for name, kind in GROUPS.items()}
        top = {k: v for k, v in data.items() if k not in GROUPS and k != "trainer"}
        return cls(root=to_typed(RootConfig, top, "config"), trainer=trainer_config(
            data.get("trainer") or {}), **groups)

    def to_yaml(self) -> str:
        """The snapshot written to a sweep's config.yaml (current format)."""
        return OmegaConf.to_yaml(OmegaConf.create(self.to_data()))

    def to_data(self) -> dict[str, Any]:
        """config.yaml's content as plain data (what ``to_yaml`` writes)."""
        data = plain(self.root)
        data["format_version"] = CONFIG_FORMAT
        data.pop("design", None)  # how to design a study is not part of the study
        for name in ("family", "budgets", "training", "trainer", "cluster", "fit"):
            data[name] = plain(getattr(self, name))
        family = data["family"]  # members and base list only what they set (None = unset)
        family["base"] = _set_only(family["base"])
        if family.get("members") is not None:
            family["members"] = [_set_only(m) for m in family["members"]]
        return data


def _set_only(fields_: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields_.items() if v is not None}


def study_config(cfg: Any) -> StudyConfig:
    """The typed whole config of a composed or stored config (a ConfigError naming the key)."""
    return cfg if isinstance(cfg, StudyConfig) else StudyConfig.from_cfg(cfg)


def load_sweep_config(sweep_dir: Path) -> dict[str, Any] | None:
    """``<sweep>/config.yaml`` as a plain dict in the current format (``sweep.config``'s one
    reader, which upgrades format 1); None when there is none."""
    return sweep_config.read_config(sweep_dir)


def load_study(sweep_dir: Path) -> StudyConfig | None:
    """``<sweep>/config.yaml`` typed; None when there is none."""
    data = load_sweep_config(sweep_dir)
    return None if data is None else StudyConfig.from_cfg(data)


def settings_from_cfg(cfg: Any) -> PlannerSettings:
    """The planner's settings of any config (``sweep.config.planner_settings``)."""
    return sweep_config.planner_settings(study_config(cfg))


def hash_context(cfg: Any) -> dict[str, Any]:
    """What besides the architecture and tokens changes a run's result, of any config."""
    return sweep_config.hash_context(study_config(cfg))


def plan_from_cfg(cfg: Any) -> tuple[Plan, PlannerSettings]:
    """The plan of any config (a ConfigError before anything is written)."""
    return sweep_config.plan_study(study_config(cfg))


def config_yaml(cfg: Any) -> str:
    """The typed, versioned snapshot of ``cfg`` that config.yaml holds."""
    return study_config(cfg).to_yaml()


def write_plan(sweep_dir: Path, the_plan: Plan, settings: PlannerSettings, cfg: Any) -> None:
    """plan.csv and config.yaml of any config (``sweep.config.write_plan_text``)."""
    sweep_config.write_plan_text(sweep_dir, the_plan, settings, config_yaml(cfg))


__all__ = ["StudyConfig", "study_config", "load_sweep_config", "load_study",
           "settings_from_cfg", "hash_context", "plan_from_cfg", "config_yaml", "write_plan"]

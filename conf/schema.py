"""The config's schema: one dataclass per group, registered as Hydra structured configs.

``conf/*.yaml`` only set values: each group file starts from its schema
(``defaults: [/schema/<group>@_here_, _self_]``), so defaults live in the dataclasses, an unknown
key or a value of the wrong type fails at compose time with the key's name, and the field
docstrings are what ``flame <command> --help`` prints. ``StudyConfig`` is the whole config,
typed: what ``config.yaml`` in a sweep directory holds (a versioned snapshot).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from analysis.design_settings import DesignConfig
from analysis.settings import FitSettings
from jobs.settings import ClusterSettings
from sweep.errors import ConfigError
from sweep.family import FamilyConfig
from sweep.planner import BudgetsConfig, PlannerConfig
from sweep.schema import field_docs, operational, plain, to_typed
from trainers.settings import TRAINER_CONFIGS, Recipe, trainer_config

# The format of a sweep's config.yaml. 1: flame before the typed schema (no format_version,
# trainer.operational_keys). 2: typed groups, format_version recorded.
CONFIG_FORMAT = 2
GROUPS: dict[str, type] = {"family": FamilyConfig, "budgets": BudgetsConfig,
                           "training": Recipe, "cluster": ClusterSettings, "fit": FitSettings,
                           "design": DesignConfig}


@dataclass
class RootConfig:
    """Top-level keys of the composed config (the groups are typed by their own schemas)."""

    experiment_name: str = MISSING
    """The study's name (set by the experiment)."""
    sweep_dir: str | None = operational("out/${experiment_name}")
    """The study's directory: plan, runs, results, figures."""
    accounting: str = "flame"
    """Parameter convention for iterations: flame | exact."""
    flops_formula: str = "6n"
    """FLOPs per token: 6n | 6n_attn (adds 12.L.h.seq)."""
    results: str | None = operational(None)
    """`flame fit results=FILE.csv`: fit any CSV (budget, n, loss[, tokens])."""
    format_version: int = operational(CONFIG_FORMAT)
    """Format of this config as a sweep's config.yaml (checked when a sweep is read)."""
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    """How budgets become runs."""
    family: Any = None
    """The ``family`` group (sweep.family.FamilyConfig)."""
    budgets: Any = None
    """The ``budgets`` group (sweep.planner.BudgetsConfig)."""
    training: Any = None
    """The ``training`` group (trainers.settings.Recipe)."""
    trainer: Any = None
    """The ``trainer`` group (trainers.settings.TRAINER_CONFIGS, by name)."""
    cluster: Any = None
    """The ``cluster`` group (jobs.settings.ClusterSettings)."""
    fit: Any = None
    """The ``fit`` group (analysis.settings.FitSettings)."""
    design: Any = None
    """The ``design`` group (analysis.design_settings.DesignConfig): `flame design` only."""


def register() -> None:
    """Put the schemas into Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="schema", node=RootConfig)
    for group, cls in GROUPS.items():
        store.store(group="schema", name=group, node=cls)
    for name, cls in TRAINER_CONFIGS.items():
        store.store(group="schema/trainer", name=name, node=cls)


@dataclass
class StudyConfig:
    """The whole config, typed: every stage's view of a study."""

    root: RootConfig
    """Top-level keys and the planner."""
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
        data = plain(self.root)
        data["format_version"] = CONFIG_FORMAT
        data.pop("design", None)  # how to design a study is not part of the study
        for name in ("family", "budgets", "training", "trainer", "cluster", "fit"):
            data[name] = plain(getattr(self, name))
        family = data["family"]  # members and base list only what they set (None = unset)
        family["base"] = _set_only(family["base"])
        if family.get("members") is not None:
            family["members"] = [_set_only(m) for m in family["members"]]
        return OmegaConf.to_yaml(OmegaConf.create(data))


def _set_only(fields_: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields_.items() if v is not None}


def upgrade(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A sweep's config.yaml in the current format, or a ConfigError saying what to do."""
    version = data.get("format_version", 1)
    if not isinstance(version, int) or version > CONFIG_FORMAT:
        raise ConfigError(f"{where}: format_version={version!r} was written by a newer flame "
                          f"(this one reads up to {CONFIG_FORMAT}); upgrade flame")
    if version == 1:  # the pre-schema format: only the trainer's key list differs
        data = dict(data, trainer={k: v for k, v in (data.get("trainer") or {}).items()
                                   if k != "operational_keys"})
        data.pop("format_version", None)
    return data


def group_docs(group: str, trainer: str = "") -> dict[str, str]:
    """Field docstrings of a group's schema (for ``--help``); ``trainer`` names the trainer."""
    if group in GROUPS:
        return field_docs(GROUPS[group])
    if group == "planner":
        return field_docs(PlannerConfig)
    if group == "trainer" and trainer in TRAINER_CONFIGS:
        return field_docs(TRAINER_CONFIGS[trainer])
    return {}


__all__ = ["CONFIG_FORMAT", "GROUPS", "RootConfig", "StudyConfig", "register", "upgrade",
           "group_docs"]

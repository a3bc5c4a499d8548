"""The config's schema: one dataclass per group, registered as Hydra structured configs.

``conf/*.yaml`` only set values: each group file starts from its schema
(``defaults: [/schema/<group>@_here_, _self_]``), so defaults live in the dataclasses, an unknown
key or a value of the wrong type fails at compose time with the key's name, and the field
docstrings are what ``flame <command> --help`` prints. The whole config, typed, is
``conf.study.StudyConfig``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from analysis.design_settings import DesignConfig
from analysis.settings import FitSettings
from jobs.settings import ClusterSettings
from sweep.config import CONFIG_FORMAT
from sweep.family import FamilyConfig
from sweep.planner import BudgetsConfig, PlannerConfig
from sweep.schema import field_docs, operational
from trainers.settings import TRAINER_CONFIGS, Recipe

GROUPS: dict[str, type] = {"family": FamilyConfig, "budgets": BudgetsConfig,
                           "training": Recipe, "cluster": ClusterSettings, "fit": FitSettings,
                           "design": DesignConfig}


@dataclass
class RootConfig:
    """Top-level keys of the composed config; each group is typed by its own schema (null
    only in ``conf.study.StudyConfig.root``, which holds the groups apart)."""

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
    family: FamilyConfig | None = None
    """The ``family`` group: the architecture family."""
    budgets: BudgetsConfig | None = None
    """The ``budgets`` group: the isoFLOP budgets."""
    training: Recipe | None = None
    """The ``training`` group: the recipe."""
    trainer: Any = None
    """The ``trainer`` group, typed at compose time by its trainer's schema
    (``schema/trainer/<name>``: OmegaConf has no union of dataclasses)."""
    cluster: ClusterSettings | None = None
    """The ``cluster`` group: where jobs run."""
    fit: FitSettings | None = None
    """The ``fit`` group: how results are fitted."""
    design: DesignConfig | None = None
    """The ``design`` group: how `flame design` simulates designs."""


def register() -> None:
    """Put the schemas into Hydra's ConfigStore (idempotent): once a process, and again when a
    plugin has added a trainer since (storing builds each schema's structured config again,
    35 ms a compose)."""
    _register(tuple(TRAINER_CONFIGS.items()))


@functools.cache
def _register(trainers: tuple[tuple[str, type], ...]) -> None:
    # Imported here: what reads a sweep's config.yaml (every job, every local worker) needs
    # the schemas but not Hydra, whose import is a fifth of a job's start.
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="schema", node=RootConfig)
    for group, cls in GROUPS.items():
        store.store(group="schema", name=group, node=cls)
    for name, cls in trainers:
        store.store(group="schema/trainer", name=name, node=cls)


TOP_LEVEL = "config"  # group_docs' name for the top-level keys


def group_docs(group: str, trainer: str = "") -> dict[str, str]:
    """Field docstrings of a group's schema (for ``--help``); ``trainer`` names the trainer,
    ``TOP_LEVEL`` the top-level keys."""
    if group in GROUPS:
        return field_docs(GROUPS[group])
    if group == "planner":
        return field_docs(PlannerConfig)
    if group == TOP_LEVEL:
        return field_docs(RootConfig)
    if group == "trainer" and trainer in TRAINER_CONFIGS:
        return field_docs(TRAINER_CONFIGS[trainer])
    return {}


__all__ = ["CONFIG_FORMAT", "GROUPS", "RootConfig", "TOP_LEVEL", "register", "group_docs"]

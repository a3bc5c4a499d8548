"""What ``flame launch`` checks before it writes anything into the sweep directory (no lock
file, ledger entry, manifest or launch.sh), once the settings named at launch are settled
(``jobs.overrides``): for trainer=megatron, every run's command line and job shape. A problem
is a ConfigError naming the key and the fix (the CLI prints it as one line and exits 2)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conf.study import config_yaml
from jobs.executors.registry import executor_class
from jobs.executors.slurm import SlurmExecutor
from jobs.resources import job_resources, signal_lead_s
from jobs.settings import ClusterSettings
from sweep.errors import ConfigError
from sweep.io import CONFIG_YAML, atomic_write_text
from sweep.planrow import PlanRow
from trainers.data_order import check_branches
from trainers.registry import trainer_for


def write_trainer(sweep_dir: Path, config: Mapping[str, Any]) -> None:
    """Rewrite config.yaml (atomically) with ``config``'s trainer section."""
    atomic_write_text(Path(sweep_dir) / CONFIG_YAML, config_yaml(config))


def check_runs(rows: list[PlanRow], config: Mapping[str, Any], todo: list[str],
               settings: ClusterSettings, dry_run: bool, sweep_dir: Path | None = None
               ) -> tuple[ClusterSettings, list[str]]:
    """The job shape for the planned trainer and its own checks (``Trainer.preflight``: e.g.
    every Megatron run's flags rendered once), what the site must hold (a trainer's
    ``site_notes``: checkpoint disk, caches), the time-limit signal's lead for the largest
    checkpoint and a SLURM job's CPUs and memory per node; returns the shape and notes."""
    settings = settings.with_trainer(config.get("trainer") or {})
    trainer = trainer_for(config.get("trainer") or {})
    notes = trainer.preflight(rows, config, todo, dry_run)
    notes += check_branches(rows, config.get("trainer") or {}, required=not dry_run)
    site = getattr(trainer, "site_notes", None)
    checkpoint_gb = 0.0
    if site is not None and sweep_dir is not None:
        more, checkpoint_gb = site(Path(sweep_dir), rows, config, todo, dry_run)
        notes += more
    if issubclass(executor_class(settings.executor), SlurmExecutor):
        settings, lead = with_signal_lead(settings, checkpoint_gb)
        if dry_run:  # what a launch would ask for; a real launch submits it without a word
            notes += [lead] if lead else []
            notes += job_resources(settings).lines(settings.nodes, settings.gpus_per_node)
    return settings, notes


def with_signal_lead(settings: ClusterSettings, checkpoint_gb: float
                     ) -> tuple[ClusterSettings, str | None]:
    """``cluster.signal_delay_s`` raised to leave time for the largest checkpoint's write
    (``jobs.resources.signal_lead_s``), and a line when it was raised; a ConfigError when the
    lead would not fit in the time limit."""
    lead = signal_lead_s(settings.signal_delay_s, checkpoint_gb, settings.checkpoint_write_gb_s)
    if lead == settings.signal_delay_s:
        return settings, None
    why = (f"a {checkpoint_gb:.0f} GB checkpoint at cluster.checkpoint_write_gb_s="
           f"{settings.checkpoint_write_gb_s:g}")
    if lead >= 60 * settings.timeout_min:
        raise ConfigError(f"cluster.timeout_min={settings.timeout_min}: the time-limit signal "
                          f"needs {lead} s of lead for {why}; raise cluster.timeout_min (or "
                          "cluster.checkpoint_write_gb_s if the file system is faster)")
    line = (f"time-limit signal: USR2 {lead} s before the limit (cluster.signal_delay_s="
            f"{settings.signal_delay_s} raised for {why})")
    return dataclasses.replace(settings, signal_delay_s=lead), line

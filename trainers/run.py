"""The trainer entry point a job calls: ``train_run(row, cfg, run_dir) -> summary``.

The config's ``trainer.name`` picks the trainer (``trainers.registry.trainer_for``: a built-in,
or a plugin's ``package.module:attr``). Every trainer resumes by itself from
``run_dir/checkpoints/`` and, while training, defers SIGUSR2/SIGTERM to its next step boundary
(see ``trainers.signals``): save a checkpoint, then hand the signal to the handler installed
before (submitit's requeue), or raise ``Preempted`` when there is none.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweep.errors import ConfigError
from trainers.base import Trainer
from trainers.registry import trainer_for
from trainers.settings import trainer_config
from trainers.signals import DeferredSignals, Preempted

__all__ = ["train_run", "Preempted", "check_numerics"]


def train_run(row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train (or resume) one planned run into ``run_dir``; returns a summary dict with at
    least ``final_val_loss``, ``iterations`` and ``numerics_version``. Raises on failure,
    ``Preempted`` on a deferred signal with no previous handler."""
    trainer = trainer_for(cfg.get("trainer") or {})
    if "training" not in cfg:
        raise ConfigError("config: no `training` group; plan with `flame plan` first")
    check_numerics(trainer, trainer_config(cfg["trainer"]))
    began = time.time()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with DeferredSignals() as signals:
        summary = trainer.train(row, cfg, run_dir, signals)
    # wall-clock span of this call (a worker's first run includes the trainer's imports):
    # benchmarks/bench_demo.py lays the runs out on their workers' timelines with it
    return {**summary, "numerics_version": trainer.numerics_version, "began_at": began,
            "ended_at": time.time()}


def check_numerics(trainer: Trainer, trainer_cfg: Any) -> None:
    """A ConfigError when the plan's ``trainer.numerics_version`` is not the version this code
    computes: the run's losses would not be the ones its run_id stands for."""
    planned = getattr(trainer_cfg, "numerics_version", trainer.numerics_version)
    if planned != trainer.numerics_version:
        raise ConfigError(f"trainer.numerics_version={planned} (the plan's, config.yaml) but "
                          f"this flame's {trainer.name} trainer computes version "
                          f"{trainer.numerics_version}: its losses would differ under the same "
                          "run ids; re-plan with `flame plan ... --replan` (new run ids) or "
                          "train with the flame that planned it (docs/numerics.md)")

"""The trainer entry point a job calls: ``train_run(row, cfg, run_dir) -> summary``.

Dispatches on ``cfg["trainer"]["name"]`` (embedded | simulated | megatron). Every trainer
resumes by itself from ``run_dir/checkpoints/`` and, while training, defers SIGUSR2/SIGTERM to
its next step boundary (see ``trainers.signals``): save a checkpoint, then hand the signal to the
handler installed before (submitit's requeue), or raise ``Preempted`` when there is none.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweep.errors import ConfigError
from trainers.signals import DeferredSignals, Preempted

__all__ = ["train_run", "Preempted", "TRAINERS"]

# name -> module with ``train(row, cfg, run_dir, signals) -> dict``; imported lazily so the
# simulated trainer never pays for importing torch.
TRAINERS: dict[str, str] = {
    "embedded": "trainers.embedded.train",
    "simulated": "trainers.simulated",
    "megatron": "trainers.megatron",
}


def train_run(row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train (or resume) one planned run into ``run_dir``; returns a summary dict with at
    least ``final_val_loss`` and ``iterations``. Raises on failure, ``Preempted`` on a deferred
    signal with no previous handler."""
    trainer_cfg = cfg.get("trainer") or {}
    name = trainer_cfg.get("name")
    if name not in TRAINERS:
        raise ConfigError(f"trainer.name={name!r}: use one of {', '.join(TRAINERS)} "
                          "(e.g. trainer=simulated)")
    if "training" not in cfg:
        raise ConfigError("config: no `training` group; plan with `flame plan` first")
    began = time.time()
    module = importlib.import_module(TRAINERS[name])
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with DeferredSignals() as signals:
        summary = module.train(row, cfg, run_dir, signals)
    # wall-clock span of this call (a worker's first run includes the trainer's imports):
    # benchmarks/bench_demo.py lays the runs out on their workers' timelines with it
    return {**summary, "began_at": began, "ended_at": time.time()}

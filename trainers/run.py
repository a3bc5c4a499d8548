"""The trainer entry point a job calls: ``train_run(row, cfg, run_dir) -> summary``.

Dispatches on ``cfg["trainer"]["name"]`` (embedded | simulated | megatron). Every trainer
resumes by itself from ``run_dir/checkpoints/`` and, while training, defers SIGUSR2/SIGTERM to
its next step boundary (see ``trainers.signals``): save a checkpoint, then hand the signal to the
handler installed before (submitit's requeue), or raise ``Preempted`` when there is none.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Mapping

from sweep.arch import ConfigError
from trainers.signals import DeferredSignals, Preempted

__all__ = ["train_run", "Preempted", "TRAINERS", "thread_count", "configure_torch_threads"]

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
    module = importlib.import_module(TRAINERS[name])
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with DeferredSignals() as signals:
        return module.train(row, cfg, run_dir, signals)


def thread_count() -> int:
    """Threads this process may use: SLURM's (or submitit's local) cpus per task, else
    ``FLAME_THREADS``, else 1. Never more: two jobs on two cores want one thread each (two
    threads each ran 18x slower here)."""
    for var in ("SLURM_CPUS_PER_TASK", "FLAME_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                count = int(value)
            except ValueError:
                raise ConfigError(f"{var}={value!r}: must be a whole number of threads") from None
            if count < 1:
                raise ConfigError(f"{var}={value!r}: must be >= 1")
            return count
    return 1


def configure_torch_threads() -> int:
    """Apply ``thread_count()`` to torch (intra- and inter-op) and flush denormals."""
    import torch

    count = thread_count()
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(count)
    except RuntimeError:  # only settable before the first parallel op; intra-op is what counts
        pass
    torch.set_flush_denormal(True)
    return count

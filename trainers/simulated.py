"""The simulated trainer: Megatron-format artefacts from a configured scaling law, no model.

Loss after D tokens for N active parameters: L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et
al. 2022, "Training Compute-Optimal Large Language Models", eq. 2), times log-normal noise
exp(sigma.z) with z drawn from a generator seeded by (seed + replicate, run_id, iteration), so
a run, and a resumed run, is deterministic. For tests of orchestration and analysis at scale and
to rehearse a sweep design; a run costs milliseconds unless ``seconds_per_run`` asks for wall time.

Trunks and branches (``planner.strategy=branches``) also model the learning-rate schedule: at
the stable learning rate the loss sits above the law, and the decay removes that excess (Hägele
et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations",
Figs. 2-4: the loss drops sharply during the cooldown; their constant-lr curves sit a few
percent above the cooled-down ones at the same step). The law is multiplied by
``1 + STABLE_EXCESS x (lr(it) - min_lr) / (lr - min_lr)``: a trunk ends STABLE_EXCESS above
the law, a branch ends on the law at its own tokens, so a branch study fits like an independent
one. Independent runs keep the law at every evaluation, as before the branches existed (their
artefacts, and so every existing study's, are unchanged). A trunk writes
``checkpoints/iter_<step:07d>.json`` at each of its branch steps; a branch without a checkpoint
of its own starts from its trunk's there.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from sweep.errors import ConfigError
from sweep.io import CHECKPOINTS_DIR, atomic_write_text
from sweep.planrow import PlanRow
from trainers.artifacts import RunLog, parent_run_dir
from trainers.base import BaseTrainer
from trainers.schedule import WSD
from trainers.settings import Recipe, SimulatedConfig, trainer_config
from trainers.signals import DeferredSignals

CHECKPOINT_FILE = "simulated.json"
STABLE_EXCESS = 0.03
"""Relative loss excess at the stable learning rate over the cooled-down law (see above)."""


class SimulatedTrainer(BaseTrainer):
    """Losses from a law plus noise, no model (this module's ``train``); its log lines carry
    made-up MoE losses, so it reports no routing."""

    name: ClassVar[str] = "simulated"
    config: ClassVar[type] = SimulatedConfig
    numerics_version: ClassVar[int] = 1
    branch_file: ClassVar[str | None] = "iter_{step:07d}.json"

    def train(self, row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path,
              signals: DeferredSignals) -> dict[str, Any]:
        return train(row, cfg, run_dir, signals)


TRAINER = SimulatedTrainer()


def train(row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path,
          signals: DeferredSignals) -> dict[str, Any]:
    """Simulate one run into ``run_dir``; resumes from its checkpoint; returns the summary."""
    spec, sim = PlanRow.of(row), trainer_config(cfg["trainer"])
    if spec.n_active <= 0:
        raise ConfigError("plan row: n_active_<accounting> missing; re-create the plan")
    schedule = WSD.for_row(Recipe.from_cfg(cfg["training"]), spec)
    log, ckpt = RunLog(run_dir), Path(run_dir) / CHECKPOINTS_DIR / CHECKPOINT_FILE
    start, resumed_from, val = 0, None, None
    if ckpt.exists():
        state = json.loads(ckpt.read_text())
        start = resumed_from = int(state["iteration"])
        val = state.get("val_loss")
        log.rewind(state["offsets"])
        log.note(f" resuming from checkpoint at iteration {start}")
    elif spec.role == "branch":
        start = _branch_start(spec, Path(run_dir), log)
    iters, tokens_per_iter = spec.train_iters, spec.global_batch_size * spec.arch.seq_length
    log_every = max(1, math.ceil(iters / sim.log_points))
    eval_every = max(1, math.ceil(iters / sim.eval_points))
    began = time.time()
    stops = sorted({i for i in range(log_every, iters, log_every)}
                   | {i for i in range(eval_every, iters, eval_every)} | {iters}
                   | set(spec.save_steps))
    previous = start
    for it in (i for i in stops if i > start):
        if sim.seconds_per_run:
            time.sleep(sim.seconds_per_run * (it - previous) / iters)
        d, previous = it * tokens_per_iter, it
        clean = sim.law.loss(spec.n_active, d) * _excess(schedule, it, spec)
        if it % log_every == 0 or it == iters:
            rng = random.Random(f"{spec.seed(sim.seed)}:{spec.run_id}:train:{it}")
            log.train(iteration=it, train_iters=iters, global_batch_size=spec.global_batch_size,
                      seq_length=spec.arch.seq_length, lr=schedule(it),
                      train_loss=clean * math.exp(2 * sim.noise * rng.gauss(0, 1)),
                      aux_loss=1.0 + 0.01 * rng.random(), z_loss=0.1 * rng.random(),
                      grad_norm=0.5 + rng.random(), tokens_per_s=_rate(d, began, start),
                      elapsed_ms=1000.0 * sim.seconds_per_run * log_every / iters)
        if it % eval_every == 0 or it == iters:
            rng = random.Random(f"{spec.seed(sim.seed)}:{spec.run_id}:eval:{it}")
            val = clean * math.exp(sim.noise * rng.gauss(0, 1))
            log.eval(iteration=it, consumed_tokens=d, val_loss=val, final=it == iters)
            _save(ckpt, it, log, val)
        if it in spec.save_steps:  # a trunk's branch step: kept for its branch
            _save(TRAINER.branch_checkpoint(run_dir, it), it, log, val)
        if signals.pending is not None and it < iters:
            _save(ckpt, it, log, val)
            signals.deliver(it)
    return {"trainer": "simulated", "final_val_loss": val, "iterations": iters,
            "tokens": spec.tokens, "resumed_from": resumed_from, "wall_s": time.time() - began}


def _excess(schedule: WSD, it: int, spec: PlanRow) -> float:
    """The schedule's factor on the law: 1 + STABLE_EXCESS at the stable lr, 1 at min_lr (trunks
    and branches only; an independent run's evaluations stay on the law)."""
    if not spec.role or schedule.lr <= schedule.min_lr:
        return 1.0
    return 1.0 + STABLE_EXCESS * (schedule(it) - schedule.min_lr) / (schedule.lr - schedule.min_lr)


def _branch_start(spec: PlanRow, run_dir: Path, log: RunLog) -> int:
    """A branch's first start: its trunk's checkpoint at branch_step (its logs start afresh)."""
    path = TRAINER.branch_checkpoint(parent_run_dir(run_dir, spec.parent), spec.branch_step)
    if not path.is_file():
        raise RuntimeError(f"branch {spec.run_id}: its trunk {spec.parent} has no checkpoint at "
                           f"iteration {spec.branch_step} ({path}); run the trunk first")
    if int(json.loads(path.read_text())["iteration"]) != spec.branch_step:
        raise RuntimeError(f"{path}: not iteration {spec.branch_step}; re-run the trunk")
    log.rewind({})
    log.note(f" branching from trunk {spec.parent} at iteration {spec.branch_step}")
    return spec.branch_step


def _rate(d: float, began: float, start: int) -> float:
    elapsed = time.time() - began
    return d / elapsed if elapsed > 0 and not start else 0.0


def _save(path: Path, iteration: int, log: RunLog, val: float | None) -> None:
    atomic_write_text(path, json.dumps({"iteration": iteration, "offsets": log.offsets(),
                                        "val_loss": val}))

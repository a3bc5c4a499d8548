"""A toy trainer defined outside the product code: a made-up loss written through the trainers'
RunLog, found by flame as ``trainer.name=tests.trainers.toys:ToyTrainer`` (a plugin)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from sweep.planrow import PlanRow
from sweep.schema import result
from trainers.artifacts import RunLog
from trainers.base import BaseTrainer
from trainers.settings import trainer_config

NAME = "tests.trainers.toys:ToyTrainer"


@dataclass
class ToyConfig:
    """``trainer=toy``: loss = floor + 50/N^0.3 + 50/D^0.3, no model."""

    name: str = result(NAME)
    """The trainer (this class's plugin name)."""
    floor: float = result(2.0)
    """The irreducible loss."""
    numerics_version: int = result(1, since=2)
    """As every trainer's (trainers.base.Trainer.numerics_version)."""


class ToyTrainer(BaseTrainer):
    """Two evaluations of a law; a trunk's branch checkpoint would be a file (none written)."""

    name: ClassVar[str] = NAME
    config: ClassVar[type] = ToyConfig

    def train(self, row, cfg, run_dir, signals) -> dict[str, Any]:
        spec, toy = PlanRow.of(row), trainer_config(cfg["trainer"])
        log, tokens_per_iter = RunLog(run_dir), spec.global_batch_size * spec.arch.seq_length
        loss = math.nan
        for it in sorted({max(1, spec.train_iters // 2), spec.train_iters}):
            d = it * tokens_per_iter
            loss = toy.floor + 50 / spec.n_active ** 0.3 + 50 / d ** 0.3
            log.train(iteration=it, train_iters=spec.train_iters, lr=1e-3,
                      global_batch_size=spec.global_batch_size, seq_length=spec.arch.seq_length,
                      train_loss=loss, aux_loss=1.0, z_loss=0.0, grad_norm=1.0,
                      tokens_per_s=0.0, elapsed_ms=0.0)
            log.eval(iteration=it, consumed_tokens=d, val_loss=loss,
                     final=it == spec.train_iters)
        return {"trainer": self.name, "final_val_loss": loss, "iterations": spec.train_iters,
                "tokens": spec.tokens}

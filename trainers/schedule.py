"""FLAME's learning-rate schedule: WSD (warmup, stable, decay), as Megatron-LM defines it.

Megatron-LM ``OptimizerParamScheduler.get_lr`` (core_v0.16, ``--lr-decay-style WSD``): linear
warmup from 0 to ``lr`` over the warmup iterations, ``lr`` held constant, then over the last
``--lr-wsd-decay-iters`` a decay to ``min_lr`` of shape ``--lr-wsd-decay-style``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sweep.arch import ConfigError
from trainers.settings import DECAY_STYLES, Recipe



@dataclass(frozen=True)
class WSD:
    """A warmup-stable-decay schedule over a fixed number of iterations."""

    lr: float
    """Peak learning rate."""
    min_lr: float
    """Learning rate at the end of the decay."""
    train_iters: int
    """Length of the run."""
    warmup_fraction: float
    """Fraction of ``train_iters`` spent warming up linearly from 0."""
    decay_fraction: float
    """Fraction of ``train_iters`` (at the end) spent decaying to ``min_lr``."""
    decay_style: str = "linear"
    """Shape of the decay: linear | cosine | exponential | minus_sqrt."""
    decay_rounding: str = "round"
    """decay_fraction x train_iters to whole iterations: round | floor."""

    def __post_init__(self) -> None:
        if self.decay_style not in DECAY_STYLES:
            raise ConfigError(f"training.decay_style={self.decay_style!r}: use one of "
                              f"{', '.join(DECAY_STYLES)}")
        for name in ("warmup_fraction", "decay_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"training.{name}={value}: must be within [0, 1]")
        if self.warmup_fraction + self.decay_fraction > 1.0:
            raise ConfigError("training.warmup_fraction + training.decay_fraction > 1: "
                              "lower one of them")
        if not 0.0 <= self.min_lr <= self.lr:
            raise ConfigError(f"training.min_lr={self.min_lr}: must be within [0, lr={self.lr}]")

    @classmethod
    def from_recipe(cls, recipe: Recipe, train_iters: int) -> "WSD":
        """The schedule of ``recipe`` over ``train_iters`` iterations."""
        return cls(recipe.lr, recipe.min_lr, train_iters, recipe.warmup_fraction,
                   recipe.decay_fraction, recipe.decay_style, recipe.decay_iters_rounding)

    @property
    def warmup_iters(self) -> int:
        return int(round(self.warmup_fraction * self.train_iters))

    @property
    def decay_iters(self) -> int:
        exact = self.decay_fraction * self.train_iters
        return int(exact) if self.decay_rounding == "floor" else int(round(exact))

    def __call__(self, step: int) -> float:
        """Learning rate for optimiser step ``step`` (1-based, as Megatron counts)."""
        if self.warmup_iters and step <= self.warmup_iters:
            return self.lr * step / self.warmup_iters
        decay_start = self.train_iters - self.decay_iters
        if step <= decay_start or not self.decay_iters:
            return self.lr
        ratio = min(1.0, (step - decay_start) / self.decay_iters)
        if self.decay_style == "linear":
            coeff = 1.0 - ratio
        elif self.decay_style == "cosine":
            coeff = 0.5 * (math.cos(math.pi * ratio) + 1.0)
        elif self.decay_style == "exponential":
            coeff = 2.0 * math.pow(0.5, ratio) - 1.0
        else:  # minus_sqrt
            coeff = 1.0 - math.sqrt(ratio)
        return self.min_lr + coeff * (self.lr - self.min_lr)

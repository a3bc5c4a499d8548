"""FLAME's learning-rate schedule: WSD (warmup, stable, decay), as Megatron-LM defines it.

Megatron-LM ``OptimizerParamScheduler.get_lr`` (core_v0.16, ``--lr-decay-style WSD``): linear
warmup from 0 to ``lr`` over the warmup iterations, ``lr`` held constant, then over the last
``--lr-wsd-decay-iters`` a decay to ``min_lr`` of shape ``--lr-wsd-decay-style``.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from typing import Any

from sweep.errors import ConfigError
from sweep.planrow import PlanRow
from trainers.base import check_decays
from trainers.settings import DECAY_STYLES, Recipe

# Megatron-LM flags that would replace the schedule a trunk or a branch needs (its WSD, its
# warmup and its decay length) if a user appended them in trainer.extra_args.
SCHEDULE_FLAGS = ("--lr-wsd-decay-iters", "--lr-wsd-decay-samples", "--lr-decay-iters",
                  "--lr-decay-samples", "--lr-warmup-iters", "--lr-warmup-fraction",
                  "--lr-warmup-samples", "--train-samples", "--override-opt_param-scheduler",
                  "--use-checkpoint-opt_param-scheduler")


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
    warmup: int | None = None
    """Warmup iterations, when fixed (a trunk's and its branches' shared warmup); None =
    warmup_fraction x train_iters."""
    decay: int | None = None
    """Decay iterations, when fixed (a branch's cooldown, 0 for a trunk); None =
    decay_fraction x train_iters."""

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
        fixed = self.warmup is not None or self.decay is not None
        if fixed and self.warmup_iters + self.decay_iters > self.train_iters:
            raise ConfigError(f"plan row: warmup ({self.warmup_iters}) + decay "
                              f"({self.decay_iters}) iterations exceed train_iters="
                              f"{self.train_iters}; re-create the plan with `flame plan`")

    @classmethod
    def from_recipe(cls, recipe: Recipe, train_iters: int) -> WSD:
        """The schedule of ``recipe`` over ``train_iters`` iterations."""
        return cls(recipe.lr, recipe.min_lr, train_iters, recipe.warmup_fraction,
                   recipe.decay_fraction, recipe.decay_style, recipe.decay_iters_rounding)

    @classmethod
    def for_row(cls, recipe: Recipe, row: PlanRow) -> WSD:
        """The schedule of any plan row: an independent run's is ``from_recipe``; a trunk
        warms up over ``warmup_iters`` then holds ``lr`` to its end; a branch has the same
        warmup and stable phase up to ``branch_step``, then decays (``training.decay_style``,
        to ``min_lr``) over its last ``train_iters - branch_step`` iterations, i.e. Megatron's
        WSD with --lr-warmup-iters=warmup_iters, --lr-wsd-decay-iters=train_iters-branch_step
        (``training.decay_fraction`` does not apply: ``planner.cooldown_fraction`` set it)."""
        if not row.role:
            return cls.from_recipe(recipe, row.train_iters)
        decay = row.train_iters - row.branch_step if row.role == "branch" else 0
        return cls(recipe.lr, recipe.min_lr, row.train_iters, recipe.warmup_fraction, 0.0,
                   recipe.decay_style, recipe.decay_iters_rounding, warmup=row.warmup_iters,
                   decay=decay)

    @property
    def warmup_iters(self) -> int:
        if self.warmup is not None:
            return self.warmup
        return int(round(self.warmup_fraction * self.train_iters))

    @property
    def decay_iters(self) -> int:
        if self.decay is not None:
            return self.decay
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


def check_branchable(recipe: Recipe, trainer: Any) -> None:
    """A ConfigError unless the study's schedule is warmup-stable-decay, which is what lets a
    branch continue its trunk's stable phase: a decay that lowers the learning rate, and no
    Megatron flag in ``trainer.extra_args`` that replaces the WSD or its lengths."""
    check_decays(recipe)
    words = [w for arg in getattr(trainer, "extra_args", None) or [] for w in shlex.split(arg)]
    for i, word in enumerate(words):
        flag, _, value = word.partition("=")
        if flag == "--lr-decay-style":
            value = value or (words[i + 1] if i + 1 < len(words) else "")
            if value != "WSD":
                raise ConfigError(f"trainer.extra_args: --lr-decay-style {value} is not WSD, "
                                  "so a trunk's constant phase cannot be branched; remove it "
                                  "or use planner.strategy=independent")
        elif flag in SCHEDULE_FLAGS:
            raise ConfigError(f"trainer.extra_args: {flag} would replace the WSD warmup and "
                              "decay that planner.strategy=branches sets per trunk and branch; "
                              "remove it (planner.cooldown_fraction sets the decay)")

"""What a trainer needs from a plan.csv row, typed (csv.DictReader gives strings)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from sweep.arch import ConfigError, MoEArch


@dataclass(frozen=True)
class RunSpec:
    """One planned run as a trainer sees it."""

    run_id: str
    """The run's stable hash (plan.csv ``run_id``)."""
    arch: MoEArch
    """The architecture to train."""
    train_iters: int
    """Optimiser steps to take."""
    global_batch_size: int
    """Sequences per step."""
    budget: float
    """The isoFLOP budget the run belongs to (for labels only)."""
    n_active: int
    """Active parameters under the plan's accounting convention (the simulated law's N)."""

    @property
    def tokens(self) -> int:
        """Tokens the run trains on: iterations x batch x sequence length."""
        return self.train_iters * self.global_batch_size * self.arch.seq_length

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "RunSpec":
        for key in ("run_id", "train_iters", "global_batch_size"):
            if key not in row or row[key] in ("", None):
                raise ConfigError(f"plan row: missing {key!r}; re-create the plan with "
                                  "`flame plan`")
        accounting = str(row.get("accounting") or "exact")
        arch = MoEArch.from_mapping(row)
        n_key = f"n_active_{accounting}"
        n_active = _int(row, n_key) if row.get(n_key) not in ("", None) else 0
        return cls(run_id=str(row["run_id"]), arch=arch, train_iters=_int(row, "train_iters"),
                   global_batch_size=_int(row, "global_batch_size"),
                   budget=float(row.get("budget") or 0.0), n_active=n_active)


def _int(row: Mapping[str, Any], key: str) -> int:
    try:
        value = float(row[key])
    except (TypeError, ValueError):
        raise ConfigError(f"plan row: {key}={row[key]!r} is not a number") from None
    if not math.isfinite(value) or value <= 0 or value != int(value):
        raise ConfigError(f"plan row: {key}={row[key]!r} must be a whole number > 0")
    return int(value)

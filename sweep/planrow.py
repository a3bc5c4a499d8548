"""One planned run as plan.csv holds it, typed: what the planner writes and jobs, trainers and
analysis read (csv gives strings; this is the one place that turns them back into values)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sweep.arch import MoEArch
from sweep.errors import ConfigError
from sweep.io import check_run_id

# A run's place in a branch plan (``planner.strategy=branches``): an ordinary run, a trunk that
# trains at the stable learning rate and keeps checkpoints at its branches' steps, or a branch
# that starts from its trunk's checkpoint and cools down to its own token count.
ROLES = ("", "trunk", "branch")

# plan.csv's parameter-count columns, in the file's order.
N_KINDS = ("n_active_exact", "n_total_exact", "n_active_flame", "n_total_flame",
           "n_active_exact_nonemb", "n_total_exact_nonemb", "n_active_flame_nonemb",
           "n_total_flame_nonemb")


@dataclass(frozen=True)
class PlanRow:
    """One row of plan.csv."""

    run_id: str
    """Stable hash of everything that changes the run's result."""
    budget: float
    """The isoFLOP budget C the run belongs to."""
    member: str
    """The family member's label."""
    arch: MoEArch
    """The architecture (plan.csv spells out its fields as columns)."""
    micro_batch_size: int | None
    """Per-GPU micro batch hint for Megatron (None = the trainer's)."""
    global_batch_size: int
    """Sequences per iteration."""
    counts: Mapping[str, int]
    """Parameter counts by column: n_{active|total}_{exact|flame}[_nonemb]."""
    accounting: str
    """The convention iterations were computed with: flame | exact."""
    flops_formula: str
    """FLOPs per token formula: 6n | 6n_attn."""
    flops_per_token: float
    """Training FLOPs per token."""
    tokens: int
    """Tokens trained on: train_iters x batch x seq."""
    train_iters: int
    """Optimiser steps."""
    gpu_hours: float
    """Estimated accelerator-hours at the cluster's assumed MFU."""
    replicate: int = 0
    """Which repeat of this (budget, member) it is (``planner.seeds``): 0 is the run a plan
    without replicates has; r > 0 trains from seed + r (an older plan.csv without the column
    reads as 0)."""

    role: str = ""
    """``""`` (an independent run), ``trunk`` or ``branch`` (``planner.strategy=branches``)."""
    parent: str = ""
    """A branch's trunk (its run_id); empty otherwise."""
    branch_step: int = 0
    """A branch's starting iteration: it loads its trunk's checkpoint at this step and trains
    ``train_iters - branch_step`` more, decaying the learning rate over them; 0 otherwise."""
    warmup_iters: int = 0
    """Warmup iterations shared by a trunk and its branches (so a branch continues its trunk's
    schedule exactly); 0 for an independent run, whose warmup is the recipe's fraction."""
    save_steps: tuple[int, ...] = ()
    """A trunk's iterations at which it keeps a checkpoint for its branches; empty otherwise."""

    def seed(self, base: int) -> int:
        """The trainer's seed for this replicate: ``base`` itself for replicate 0, so a run
        without replicates trains exactly as before."""
        return base + self.replicate

    @property
    def n_active(self) -> int:
        """Active parameters under the plan's accounting convention."""
        return self.counts[f"n_active_{self.accounting}"]

    @property
    def flops(self) -> float:
        """Training FLOPs of the whole run (a branch's: trunk part included, as if trained
        from scratch; what puts it on its isoFLOP budget)."""
        return self.flops_per_token * self.tokens

    @property
    def own_iters(self) -> int:
        """Iterations this run trains itself (a branch: only its cooldown)."""
        return self.train_iters - self.branch_step

    @property
    def own_flops(self) -> float:
        """Training FLOPs this run spends itself (a branch: only its cooldown): what it costs."""
        return self.flops * self.own_iters / self.train_iters

    def to_csv(self) -> dict[str, Any]:
        """The plan.csv columns, in order (floats as repr: exact and stable)."""
        row: dict[str, Any] = {"run_id": self.run_id, "budget": self.budget,
                               "member": self.member}
        row.update(self.arch.to_dict())
        row.update({"micro_batch_size": self.micro_batch_size or "",
                    "global_batch_size": self.global_batch_size})
        row.update({k: self.counts[k] for k in N_KINDS})
        row.update({"accounting": self.accounting, "flops_formula": self.flops_formula,
                    "flops_per_token": self.flops_per_token, "tokens": self.tokens,
                    "train_iters": self.train_iters, "flops": self.flops,
                    "tokens_per_param": self.tokens / self.n_active, "gpu_hours": self.gpu_hours,
                    "replicate": self.replicate, "role": self.role, "parent": self.parent,
                    "branch_step": self.branch_step, "warmup_iters": self.warmup_iters,
                    "save_steps": " ".join(str(step) for step in self.save_steps)})
        return {k: repr(v) if isinstance(v, float) else v for k, v in row.items()}

    @classmethod
    def from_csv(cls, row: Mapping[str, Any]) -> PlanRow:
        """From a csv.DictReader row; a missing or malformed field is a ConfigError."""
        missing = [k for k in ("run_id", "budget", "train_iters", "global_batch_size",
                               "accounting", *N_KINDS, *MoEArch.required_names())
                   if row.get(k) in (None, "")]
        if missing:  # a column renamed or emptied by hand
            raise ConfigError(f"plan.csv: row {row.get('run_id', '?')!r} lacks {missing}; "
                              "restore the column's name and value, or re-create the plan "
                              "with `flame plan`")
        mbs = row.get("micro_batch_size")
        if isinstance(mbs, float) and math.isnan(mbs):  # an empty cell read by pandas
            mbs = None
        return cls(run_id=check_run_id(str(row["run_id"])), budget=_float(row, "budget"),
                   member=str(row.get("member") or ""), arch=MoEArch.from_mapping(row),
                   micro_batch_size=_int(row, "micro_batch_size") if mbs not in (None, "")
                   else None,
                   global_batch_size=_int(row, "global_batch_size"),
                   counts={k: _int(row, k) for k in N_KINDS},
                   accounting=str(row["accounting"]),
                   flops_formula=str(row.get("flops_formula") or "6n"),
                   flops_per_token=_float(row, "flops_per_token"),
                   tokens=_int(row, "tokens"), train_iters=_int(row, "train_iters"),
                   gpu_hours=_float(row, "gpu_hours"),
                   replicate=_optional_int(row, "replicate"), role=_role(row),
                   parent=_text(row, "parent"), branch_step=_optional_int(row, "branch_step"),
                   warmup_iters=_optional_int(row, "warmup_iters"),
                   save_steps=_steps(row))

    @classmethod
    def of(cls, row: PlanRow | Mapping[str, Any]) -> PlanRow:
        """``row`` itself, or parsed from plan.csv's strings."""
        return row if isinstance(row, PlanRow) else cls.from_csv(row)

    @classmethod
    def columns(cls) -> list[str]:
        """plan.csv's header."""
        return (["run_id", "budget", "member"] + MoEArch.field_names()
                + ["micro_batch_size", "global_batch_size", *N_KINDS, "accounting",
                   "flops_formula", "flops_per_token", "tokens", "train_iters", "flops",
                   "tokens_per_param", "gpu_hours", "replicate", "role", "parent",
                   "branch_step", "warmup_iters", "save_steps"])


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)  # an empty cell read by pandas


def _text(row: Mapping[str, Any], key: str) -> str:
    """A text cell; missing (an older plan.csv) or empty (NaN from pandas) reads as ""."""
    value = row.get(key)
    return "" if value is None or _is_nan(value) else str(value)


def _optional_int(row: Mapping[str, Any], key: str) -> int:
    """A whole-number cell an older plan.csv may lack: missing or empty reads as 0."""
    return 0 if _text(row, key) == "" else _int(row, key)


def _role(row: Mapping[str, Any]) -> str:
    role = _text(row, "role")
    if role not in ROLES:
        raise ConfigError(f"plan.csv: role={role!r} in row {row.get('run_id', '?')!r}; must be "
                          "empty, trunk or branch: re-create the plan with `flame plan`")
    return role


def _steps(row: Mapping[str, Any]) -> tuple[int, ...]:
    """``save_steps``: whole numbers separated by spaces (a single one may read as a number)."""
    text = _text(row, "save_steps")
    try:
        steps = tuple(int(float(word)) for word in text.split())
    except ValueError:
        raise ConfigError(f"plan.csv: save_steps={text!r} in row {row.get('run_id', '?')!r}: "
                          "not whole numbers; re-create the plan with `flame plan`") from None
    return steps


def _float(row: Mapping[str, Any], key: str) -> float:
    try:
        value = float(row[key])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"plan.csv: {key}={row.get(key)!r} is not a number; re-create the "
                          "plan with `flame plan`") from None
    if not math.isfinite(value):
        raise ConfigError(f"plan.csv: {key}={row[key]!r} is not finite")
    return value


def _int(row: Mapping[str, Any], key: str) -> int:
    value = _float(row, key)
    if value != int(value) or value < 0:
        raise ConfigError(f"plan.csv: {key}={row[key]!r} must be a whole number >= 0")
    return int(value)


"""Selection: for each target budget, the family member nearest the predicted optimum.

Nearest means smallest ``|log N_member - log N_opt|`` with N counted the way the fit counted
it (``fit.n_column``); the member's iterations and tokens follow the planner's arithmetic
(``sweep.accounting.train_iters`` with the plan's batch, convention, FLOPs formula and
rounding: the same function the planner uses).

A sweep's selection considers only the members its plan runs at a budget (``budgets:`` of a
member); a plain results CSV has no plan, so every member of the composed config's family is a
candidate at every budget (``planned_only=False``): e.g. FLAME-MoE's seven released shapes,
each planned at its own budget, compete at all seven.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.settings import N_COLUMN_RE
from sweep.accounting import param_counts, train_iters
from sweep.arch import MoEArch
from sweep.errors import ConfigError
from sweep.family import Member, build_family
from sweep.planner import PlannerConfig
from sweep.schema import to_typed

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def member_n(arch: MoEArch, n_column: str) -> int:
    """The architecture's N as ``n_column`` counts it (e.g. n_active_flame_nonemb)."""
    match = N_COLUMN_RE.match(n_column)
    if not match:
        raise ConfigError(f"fit.n_column={n_column!r}: not a parameter-count column")
    kind, convention, nonemb = match.groups()
    counts = param_counts(arch, convention)
    if kind == "active":
        return counts.active_non_embedding if nonemb else counts.active
    return counts.total_non_embedding if nonemb else counts.total


def family_from_config(config: Mapping[str, Any] | None) -> list[Member] | None:
    """The plan's family (``config.yaml``'s ``family``), or None when there is none."""
    if not config or not config.get("family"):
        return None
    return build_family(config["family"])


@dataclass(frozen=True)
class IterationRule:
    """How the planner turns a member and a budget into iterations (``train_iters``), from the
    config's ``planner`` group and its conventions: selection counts them the same way."""

    planner: PlannerConfig
    """The ``planner`` group (global batch size, rounding)."""
    accounting: str
    """The parameter convention FLOPs are counted under (``accounting``)."""
    flops_formula: str
    """FLOPs per token: 6n | 6n_attn (``flops_formula``)."""

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> IterationRule:
        """From a config mapping (config.yaml, or a composed config's)."""
        missing = [k for k in ("accounting", "flops_formula") if k not in config]
        if missing:
            raise ConfigError(f"config: no {', '.join(missing)}; re-plan the sweep with "
                              "`flame plan` (its config.yaml predates them)")
        return cls(to_typed(PlannerConfig, config.get("planner"), "planner"),
                   str(config["accounting"]), str(config["flops_formula"]))


def select(targets: tuple[float, ...], predict: Predictor, approach: str,
           members: list[Member] | None, config: Mapping[str, Any] | None,
           n_column: str, planned_only: bool = True) -> pd.DataFrame:
    """One row per target budget: predicted optimum and, with a family, the chosen member
    (among those planned at the budget, or among all with ``planned_only=False``)."""
    budgets = np.array(targets, float)
    n_opt, d_opt, loss = (np.atleast_1d(v) for v in predict(budgets))
    settings = IterationRule.of(config) if members else None
    rows = []
    for i, budget in enumerate(budgets):
        row = {"budget": budget, "approach": approach, "n_opt": n_opt[i], "d_opt": d_opt[i],
               "loss_opt": loss[i], "member": "", "member_n": math.nan,
               "log10_n_ratio": math.nan, "member_tokens": math.nan,
               "member_iterations": math.nan}
        if members:
            row.update(_nearest(budget, n_opt[i], members, settings, n_column, planned_only))
        rows.append(row)
    return pd.DataFrame(rows)


def _nearest(budget: float, n_opt: float, members: list[Member], s: IterationRule,
             n_column: str, planned_only: bool) -> dict:
    eligible = [m for m in members if not planned_only or m.budgets is None or
                any(math.isclose(budget, b, rel_tol=1e-6) for b in m.budgets)] or members
    sizes = np.array([member_n(m.arch, n_column) for m in eligible], float)
    best = int(np.abs(np.log(sizes) - math.log(n_opt)).argmin())
    member = eligible[best]
    batch = s.planner.global_batch_size
    iters = train_iters(budget, member.arch, batch, s.accounting, s.flops_formula,
                        s.planner.iters_rounding)
    return {"member": member.name, "member_n": sizes[best],
            "log10_n_ratio": math.log10(sizes[best] / n_opt),
            "member_tokens": iters * batch * member.arch.seq_length,
            "member_iterations": iters}

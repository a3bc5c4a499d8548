"""`flame design` for the branch strategy (``planner.strategy=branches``): the same points,
trained as one constant-lr trunk per member and replicate plus a cooldown per point.

A design's points are (budget, member, tokens) runs; as branches each point is a branch that
trains only its cooldown, and each member's trunk is trained once to its last branch step. The
cost is the planner's own (``sweep.planner.branched``, the code ``flame plan`` runs, so the
numbers are the plan's): trunks' FLOPs plus the branches' ``own_flops``.

The search (``design.branches``) tries every candidate as branches too, and simulates a branch
design with the noise branches of one trunk share: a share ``design.branch_shared`` of each
branch's seed variance is one draw per trunk (``analysis.design.noise``), so the points of one
member and seed are correlated beyond the shape's misfit. A branch's final loss is otherwise
assumed to scatter like an independent run's of the same (N, D) (Hägele et al. 2024 found a
~20% cooldown matching a cosine run's loss; flame's branch-vs-scratch benchmark measures the
difference on the embedded trainer). Neither the shared share nor a systematic offset of
branches from independent runs (which would bias the law) is measured; the output says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from analysis.design.simulate import Design
from sweep.errors import ConfigError
from sweep.planner import PlannedRun, PlannerSettings, branched

ASSUMPTION = ("branches of one trunk share design.branch_shared of their seed variance (assumed, "
              "not measured), otherwise scatter as independent runs of the same points")


def independent(runs: Sequence[PlannedRun]) -> tuple[PlannedRun, ...]:
    """A plan's points as independent runs: a branch plan's trunks dropped (they are not
    points), its branches as the runs they stand for (same budget, member, tokens)."""
    return tuple(dataclasses.replace(r, role="", parent="", branch_step=0, warmup_iters=0,
                                     save_steps=()) for r in runs if r.role != "trunk")


def as_branches(design: Design, planner: PlannerSettings,
                ctx: Mapping[str, Any]) -> list[PlannedRun]:
    """The design's runs as the planner would plan them with ``planner.strategy=branches``
    (trunks first); a ConfigError when a branch would leave its trunk inside the warmup."""
    runs = independent(design.runs)
    members = list({r.member.name: r.member for r in runs}.values())
    seeds = 1 + max((r.replicate for r in runs), default=0)
    settings = dataclasses.replace(planner, strategy="branches", seeds=seeds)
    return branched(runs, members, settings, ctx)


def branch_cost(design: Design, planner: PlannerSettings, ctx: Mapping[str, Any]) -> dict:
    """design.json's ``branches`` entry: the design's cost as trunks + cooldowns, or why it
    cannot be branched."""
    base = {"cooldown_fraction": planner.cooldown_fraction,
            "branch_step_multiple": planner.branch_step_multiple, "assumption": ASSUMPTION}
    try:
        runs = as_branches(design, planner, ctx)
    except ConfigError as err:
        return {**base, "reason": str(err)}
    trunks = [r for r in runs if r.role == "trunk"]
    flops = float(sum(r.own_flops for r in runs))
    return {**base, "flops": flops, "gpu_hours": float(sum(r.gpu_hours for r in runs)),
            "trunks": len(trunks), "trunk_flops": float(sum(r.own_flops for r in trunks)),
            "fraction_of_independent": flops / design.flops if design.flops else None}


class BranchCoster:
    """The planner's cost of designs as branches, memoised: a member's trunk and cooldowns cost
    the same in every design that trains it at the same budgets (and for every seed)."""

    def __init__(self, planner: PlannerSettings, ctx: Mapping[str, Any]):
        self.settings = dataclasses.replace(planner, strategy="branches", seeds=1)
        self.ctx = ctx
        self.cache: dict[tuple, tuple[float, float] | None] = {}

    def cost(self, design: Design) -> dict | None:
        """``branch_cost``'s flops, gpu_hours and trunks, or None when a member's branches
        cannot be laid out (a branch inside the trunk's warmup)."""
        groups: dict[tuple[str, int], list[PlannedRun]] = {}
        for run in design.runs:  # independent runs (the search's candidates are)
            groups.setdefault((run.member.name, run.replicate), []).append(run)
        flops = hours = 0.0
        for runs in groups.values():
            part = self._group(runs)
            if part is None:
                return None
            flops, hours = flops + part[0], hours + part[1]
        return {"flops": flops, "gpu_hours": hours, "trunks": len(groups)}

    def _group(self, runs: list[PlannedRun]) -> tuple[float, float] | None:
        key = (runs[0].member.name, tuple(sorted(r.budget for r in runs)))
        if key not in self.cache:
            first = [dataclasses.replace(r, replicate=0) for r in runs]
            try:
                planned = branched(first, [runs[0].member], self.settings, self.ctx)
            except ConfigError:
                self.cache[key] = None
            else:
                self.cache[key] = (float(sum(r.own_flops for r in planned)),
                                   float(sum(r.gpu_hours for r in planned)))
        return self.cache[key]

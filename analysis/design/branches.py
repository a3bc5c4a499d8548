"""`flame design` for the branch strategy (``planner.strategy=branches``): the same points,
trained as one constant-lr trunk per member and replicate plus a cooldown per point.

A design's points are (budget, member, tokens) runs; as branches each point is a branch that
trains only its cooldown, and each member's trunk is trained once to its last branch step. The
cost is the planner's own (``sweep.planner.branched``, the code ``flame plan`` runs, so the
numbers are the plan's): trunks' FLOPs plus the branches' ``own_flops``.

The precision is NOT simulated anew: a branch's final loss is assumed to scatter like an
independent run's of the same (N, D) (Hägele et al. 2024 found a ~20% cooldown matching a
cosine run's loss; flame's branch-vs-scratch benchmark measures the difference on the embedded
trainer). Two things this leaves out: branches of one trunk share its trajectory, so their
errors may be correlated (which widens intervals), and a systematic offset of branches from
independent runs would bias the law. Neither is measured here; the table says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from analysis.design.simulate import Design
from sweep.errors import ConfigError
from sweep.planner import PlannedRun, PlannerSettings, branched

ASSUMPTION = ("precision assumed equal to independent runs of the same points (branch noise "
              "not measured; correlation between branches of one trunk not modelled)")


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

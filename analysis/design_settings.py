"""The ``design`` config group as a validated dataclass (see ``conf/design/default.yaml``).

``flame design`` reads no run: it simulates candidate designs from a prior law and a noise
level. Nothing here changes what a run computes, so every field is operational (never hashed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sweep.errors import ConfigError
from sweep.law import Law
from sweep.schema import operational, to_typed

APPROACHES = ("approach2", "approach3")


@dataclass
class LawFields:
    """A prior law L = E + A/N^alpha + B/D^beta given in the config (all five, or none)."""

    E: float | None = None
    """Irreducible loss (nats)."""
    A: float | None = None
    """Parameter term's scale (N as fit.n_column counts it)."""
    B: float | None = None
    """Data term's scale."""
    alpha: float | None = None
    """Parameter term's exponent."""
    beta: float | None = None
    """Data term's exponent."""

    def given(self) -> bool:
        """Whether any parameter is set."""
        return any(v is not None for v in vars(self).values())

    def law(self) -> Law:
        """The law, or a ConfigError naming the missing or non-positive parameters."""
        bad = [k for k, v in vars(self).items() if v is None or not v > 0]
        if bad:
            raise ConfigError(f"design.law: {', '.join(bad)} missing or not > 0; give all "
                              "five: design.law={E:..,A:..,B:..,alpha:..,beta:..}")
        return Law(**vars(self))


@dataclass
class ShapeGrid:
    """New shapes the search may add to the family: every hidden_size x num_layers pair not
    already in it, built with the family's base and width ratios (empty: none)."""

    hidden_size: list[int] = field(default_factory=list)
    """Widths."""
    num_layers: list[int] = field(default_factory=list)
    """Depths."""


@dataclass
class DesignConfig:
    """The ``design`` group: prior, noise and search space of ``flame design``."""

    prior: str | None = operational(None)
    """fit.json of an earlier study whose Approach 3 law is the prior (relative paths: from the
    working directory, else from the data flame ships: flame_moe_prior/fit.json)."""
    law: LawFields = operational(factory=LawFields)
    """The prior law given directly ({E, A, B, alpha, beta}); used when ``prior`` is null."""
    noise: float | None = operational(None)
    """Total log-normal noise sigma of a final loss (null: estimated from the prior fit.json's
    Huber objective per point): shape_sd and seed_sd together, sqrt(shape^2 + seed^2)."""
    shape_sd: float | None = operational(None)
    """SD of the law's misfit: a log-loss offset shared by every budget and seed of one shape
    (null: the prior fit.json's variance_components, else the rest of ``noise`` beside a given
    seed_sd, else 0: every run's error independent, the iid model)."""
    seed_sd: float | None = operational(None)
    """SD of a run's own (seed-to-seed) log-loss noise (null: the prior's variance_components,
    else the rest of ``noise`` beside shape_sd)."""
    branch_shared: float = operational(0.5)
    """Share of a branch's seed variance its trunk's other branches share (their common
    trajectory; not measured: 0 = independent, 1 = one draw per trunk)."""
    branches: bool = operational(True)
    """Also search every candidate trained as WSD cooldown branches (one trunk per shape and
    seed, a cooldown per budget), costed by the planner and simulated with branch_shared."""
    replications: int = operational(400)
    """Simulated studies per design (more: smoother estimates, longer run)."""
    seed: int = operational(0)
    """Seed of the simulated noise (results are reproducible)."""
    approach: str = operational("approach3")
    """Which approach's half-width of a the target and the search refer to."""
    target_halfwidth: float | None = operational(None)
    """Wanted 95% half-width of a: the optimiser writes the cheapest design meeting it."""
    max_flops: float | None = operational(None)
    """Compute cap (FLOPs): the optimiser writes the most precise design within it."""
    compute_fraction: float = operational(0.5)
    """Without a target or cap: show the most precise design within this fraction of the
    experiment's own design's compute (nothing is written but design.json and the figure)."""
    budgets: list[float] | None = operational(None)
    """Budgets the search may use (null: the experiment's budgets.flops)."""
    min_budgets: int = operational(3)
    """Fewest budgets a searched design uses."""
    members_per_budget: list[int] = operational(factory=lambda: [3, 4, 5, 6, 8, 10, 12, 16])
    """Family members per budget the search tries."""
    new_shapes: ShapeGrid = operational(factory=ShapeGrid)
    """Shapes beyond the family's that the search may train (under the law's misfit each new
    shape is an independent look at the law, which seeds are not)."""
    spans: list[float] = operational(factory=lambda: [0.3, 0.5, 0.8, 1.2])
    """How far (decades of N) either side of the prior optimum the search places members."""
    seeds: list[int] | None = operational(None)
    """Seeds per (budget, member) the search tries (the planner's replicates,
    ``planner.seeds``), e.g. [1, 2, 4]; seeds average away seed noise, never the shape misfit
    (null: [1, 2, 4, 8] when the noise's split into shape_sd and seed_sd is known, else [1]:
    under the iid model a seed's gain is an upper bound)."""
    confirm: int = operational(12)
    """Most candidates the search simulates with full Approach 3 refits."""
    write_plan: bool = operational(True)
    """Write the optimised design as plan.csv + config.yaml when a target or cap is given."""

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> DesignConfig:
        """Settings from the ``design`` config mapping; unknown or bad keys raise ConfigError."""
        return to_typed(cls, cfg, "design")

    def __post_init__(self) -> None:
        checks = [("replications", self.replications >= 20),
                  ("noise", self.noise is None or self.noise > 0),
                  ("shape_sd", self.shape_sd is None or self.shape_sd >= 0),
                  ("seed_sd", self.seed_sd is None or self.seed_sd > 0),
                  ("branch_shared", 0 <= self.branch_shared <= 1),
                  ("target_halfwidth", self.target_halfwidth is None or self.target_halfwidth > 0),
                  ("max_flops", self.max_flops is None or self.max_flops > 0),
                  ("compute_fraction", 0 < self.compute_fraction),
                  ("min_budgets", self.min_budgets >= 3),
                  ("members_per_budget", bool(self.members_per_budget)
                   and min(self.members_per_budget) >= 3),
                  ("spans", bool(self.spans) and min(self.spans) > 0),
                  ("seeds", self.seeds is None or (bool(self.seeds) and min(self.seeds) >= 1)),
                  ("confirm", self.confirm >= 1),
                  ("budgets", self.budgets is None or all(b > 0 for b in self.budgets))]
        hints = {"noise": "must be > 0 (a log-normal sigma, e.g. 0.018)",
                 "shape_sd": "must be >= 0 (a log-loss SD, e.g. 0.013)",
                 "seed_sd": "must be > 0 (a log-loss SD, e.g. 0.012)",
                 "branch_shared": "must be within [0, 1] (a share of the seed variance)",
                 "replications": "must be >= 20", "min_budgets": "must be >= 3",
                 "members_per_budget": "each must be >= 3 (a parabola needs 3 sizes)",
                 "seeds": "each must be >= 1 (runs per budget and member), e.g. [1,2,4]"}
        for name, ok in checks:
            if not ok:
                raise ConfigError(f"design.{name}={getattr(self, name)!r}: "
                                  f"{hints.get(name, 'must be > 0')}")
        if self.approach not in APPROACHES:
            raise ConfigError(f"design.approach={self.approach!r}: choose one of "
                              f"{', '.join(APPROACHES)}")

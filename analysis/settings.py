"""The ``fit`` config group as a validated dataclass (see ``conf/fit/default.yaml``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sweep.errors import ConfigError
from sweep.schema import to_typed

N_COLUMN_RE = re.compile(r"^n_(active|total)_(exact|flame)(_nonemb)?$")
N_COLUMNS = tuple(f"n_{kind}_{conv}{emb}" for kind in ("active", "total")
                  for conv in ("exact", "flame") for emb in ("", "_nonemb"))
APPROACH2_BOOTSTRAPS = ("residual", "pairs")
BOOTSTRAP_STRUCTURES = ("shapes", "iid")
APPROACH2_ESTIMATORS = ("parabola", "porian")
FLAGS = ("ok", "diverged", "nan", "incomplete", "missing", "unplanned")
FLAME_BUDGETS = (1e18, 3e18, 6e18, 2e19, 3e19, 8e19, 2.4e20)
# The largest target budget taken: ten decades past today's largest training runs (~1e25
# FLOPs); beyond it a number is a typo, and plotting it overflows.
MAX_TARGET_BUDGET = 1e35


@dataclass
class FitSettings:
    """The ``fit`` group: how ``flame collect`` flags runs and ``flame fit`` selects, fits and
    bootstraps results (``conf/fit/*.yaml``)."""

    n_column: str = "n_active_flame"
    """plan/results column used as N: n_{active|total}_{exact|flame}[_nonemb]."""
    include_flags: list[str] = field(default_factory=lambda: ["ok"])
    """Runs whose collect flag is in this list are fitted; the others are kept but excluded."""
    exclude_budgets: list[float] = field(default_factory=list)
    """Budgets (FLOPs) left out of every fit."""
    drop_highest_loss: int = 0
    """Drop this many highest-loss points before fitting (Besiroglu et al. drop 5)."""
    bootstrap: int = 1000
    """Bootstrap resamples for both approaches' intervals (0 = no intervals)."""
    approach2_bootstrap: str = "residual"
    """Approach 2's resampling: residual (the sizes are a design; resample pooled parabola
    residuals) or pairs (resample runs within each budget: conservative with few runs)."""
    bootstrap_structure: str = "shapes"
    """What the bootstraps treat as independent: shapes (each shape's misfit is shared by all
    its budgets and seeds: shape and run effects are resampled, ``analysis.fit.structure``;
    as iid where no shape has two runs) or iid (every run independent, as before)."""
    approach2_estimator: str = "parabola"
    """Approach 2's per-budget optimum: parabola (Hoffmann et al.: windowed parabola vertex) or
    porian (Porian et al. 2024: Akima interpolation, seed-noise bootstrap, weighted fit)."""
    porian_seed_noise: float | None = None
    """approach2_estimator=porian: std of one run's final loss (null = the pooled parabola
    residuals' std; Porian et al. use 0.002 on RefinedWeb, 0.01 on OpenWebText2)."""
    seed: int = 0
    """Seed of the bootstrap's random generator (results are reproducible)."""
    confidence: float = 0.95
    """Coverage of the reported percentile intervals."""
    window_decades: float | None = 0.5
    """Approach 2: half-width, in decades of N, of the window around the lowest-loss run."""
    min_points: int = 3
    """Approach 2: fewest runs in a budget's window for a parabola."""
    bucket_decades: float = 0.2
    """Approach 2: bucket width (decades of C) when FLOPs are not on a few discrete budgets."""
    huber_delta: float = 1e-3
    """Approach 3: Huber loss threshold on log-loss residuals (Hoffmann et al.: 1e-3)."""
    min_interval_budgets: int = 3
    """Fewest budgets for a reported interval (both approaches): with fewer, the power law
    through the budgets' optima has no residual degrees of freedom (Approach 2) and every
    resample keeps the same budgets (Approach 3), so an interval would be falsely narrow."""
    flat_loss_rel_range: float = 1e-4
    """A budget (or the whole law's data) whose losses span less than this fraction of the
    loss is flat: N_opt is not identified there. Far below evaluation noise (~0.5%), above
    float and 4-decimal CSV rounding (~3e-5)."""
    one_step_min_points: int = 10_000
    """Approach 3's bootstrap takes one Newton step per resample instead of a refit from this
    many points: 1,000 refits of 9,600 points take 10 s (minutes at 100,000); measured
    against refits, one-step standard errors are 3% off at 9,600 points but 6-23% too wide
    at 2,500-4,000 (the Huber loss's curvature counts the points inside its zone)."""
    target_budgets: list[float] = field(default_factory=lambda: list(FLAME_BUDGETS))
    """Budgets (FLOPs) to select configurations for (default: FLAME-MoE's seven release
    budgets)."""
    max_extrapolation_decades: float = 1.5
    """Selection: a target budget more than this many decades of compute outside the fitted
    budgets is flagged as an extrapolation (FLAME-MoE's own largest target is 0.9 decades past
    its sweep; farther out the law's assumed form, not the data, decides the answer)."""
    max_pick_distance_decades: float = 0.3
    """Selection: a pick whose N is more than this many decades from the law's N_opt is
    flagged (far_from_optimum): the optimum lies outside the family's sizes (or in a gap
    between them). 0.3 (a factor of 2) never flags a family whose sizes step by at most 4x
    while the optimum lies among them."""
    figures: bool = True
    """Draw figures/ (false: fit.json and selection.csv only, for quick refits; drawing is
    most of a small fit's time)."""
    diverge_rise: float = 0.1
    """collect: a run whose final val loss exceeds its best by this fraction is diverged."""
    routing_min_share: float = 0.1
    """collect: routing collapsed when an expert of some MoE layer took less than this fraction
    of its uniform share 1/E of the last window's routed tokens (a dead expert)."""
    routing_max_load: float = 3.0
    """collect: routing collapsed when some MoE layer's busiest expert took more than this many
    times the mean share over the last window."""
    routing_max_aux_loss: float = 1.5
    """collect: routing collapsed when a layer's load-balancing loss without its coefficient
    (1 = balanced, E/k = all tokens on k experts; Megatron's layer mean when per-layer logging
    is off) exceeds this over the last window."""

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> FitSettings:
        """Settings from the ``fit`` config mapping; unknown or bad keys raise ConfigError."""
        return to_typed(cls, cfg, "fit")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not N_COLUMN_RE.match(self.n_column):
            raise ConfigError(f"fit.n_column={self.n_column!r}: must be one of "
                              f"{', '.join(N_COLUMNS)}")
        bad = sorted(set(self.include_flags) - set(FLAGS))
        if bad:
            raise ConfigError(f"fit.include_flags: unknown flags {bad}; choose from {FLAGS}")
        if self.approach2_estimator not in APPROACH2_ESTIMATORS:
            raise ConfigError(f"fit.approach2_estimator={self.approach2_estimator!r}: choose "
                              f"one of {', '.join(APPROACH2_ESTIMATORS)}")
        if self.porian_seed_noise is not None and not self.porian_seed_noise >= 0:
            raise ConfigError(f"fit.porian_seed_noise={self.porian_seed_noise!r}: must be >= 0 "
                              "(a loss std), or null to estimate it from the parabolas")
        if self.bootstrap_structure not in BOOTSTRAP_STRUCTURES:
            raise ConfigError(f"fit.bootstrap_structure={self.bootstrap_structure!r}: choose "
                              f"one of {', '.join(BOOTSTRAP_STRUCTURES)}")
        if self.approach2_bootstrap not in APPROACH2_BOOTSTRAPS:
            raise ConfigError(f"fit.approach2_bootstrap={self.approach2_bootstrap!r}: choose "
                              f"one of {', '.join(APPROACH2_BOOTSTRAPS)}")
        checks = [("bootstrap", self.bootstrap >= 0), ("min_points", self.min_points >= 3),
                  ("confidence", 0 < self.confidence < 1), ("huber_delta", self.huber_delta > 0),
                  ("min_interval_budgets", self.min_interval_budgets >= 2),
                  ("flat_loss_rel_range", 0 <= self.flat_loss_rel_range < 1),
                  ("one_step_min_points", self.one_step_min_points >= 1),
                  ("bucket_decades", self.bucket_decades > 0),
                  ("drop_highest_loss", self.drop_highest_loss >= 0),
                  ("diverge_rise", self.diverge_rise > 0),
                  ("routing_min_share", 0 <= self.routing_min_share < 1),
                  ("routing_max_load", self.routing_max_load > 1),
                  ("routing_max_aux_loss", self.routing_max_aux_loss > 1),
                  ("max_extrapolation_decades", self.max_extrapolation_decades > 0),
                  ("max_pick_distance_decades", self.max_pick_distance_decades > 0),
                  ("window_decades", self.window_decades is None or self.window_decades > 0)]
        if not self.target_budgets or not all(0 < b <= MAX_TARGET_BUDGET
                                              for b in self.target_budgets):
            raise ConfigError(f"fit.target_budgets={self.target_budgets!r}: give one or more "
                              f"budgets (FLOPs) in (0, {MAX_TARGET_BUDGET:.0e}] to select "
                              "configurations for, e.g. fit.target_budgets=[1e21]")
        for name, ok in checks:
            if not ok:
                raise ConfigError(f"fit.{name}={getattr(self, name)!r} is out of range; see "
                                  f"`flame fit --help` for what it means")

    @property
    def alpha_tails(self) -> tuple[float, float]:
        """Percentiles (0-100) bounding the confidence interval."""
        tail = (1 - self.confidence) / 2 * 100
        return tail, 100 - tail

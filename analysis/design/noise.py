"""The noise `flame design` simulates: the law's misfit per shape, seed noise per run, and the
share of it that branches of one trunk have in common.

A run's log loss is the law's plus three normal terms (Hoffmann et al. 2022's law is a smooth
surface; real shapes sit off it):

- ``shape_sd``: one offset per shape (family member), shared by every budget and seed of it:
  the law's misfit (architecture effects the law does not have, a learning rate that suits one
  width better). Seeds never average it away; only more shapes do.
- ``seed_sd``: the run's own seed-to-seed noise, independent between independent runs;
- of that, the share ``branch_shared`` of the variance is one draw per trunk when the points
  are WSD cooldown branches of one trunk (its trajectory is common to them), the rest the
  branch's own.

With shape_sd = 0 and independent runs this is the iid model ``flame fit``'s bootstrap and the
earlier `flame design` assumed. The split comes from the config, else from the prior
fit.json's ``variance_components`` (``flame fit`` estimates them where a study has replicates).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweep.errors import ConfigError


@dataclass(frozen=True)
class NoiseModel:
    """The three components of a simulated run's log-loss error."""

    shape_sd: float
    """SD of the per-shape offset (the law's misfit), shared by all runs of a shape."""
    seed_sd: float
    """SD of a run's own noise (seed to seed)."""
    branch_shared: float
    """Share of seed_sd^2 common to the branches of one trunk."""
    source: str
    """Where the split came from (config keys, the prior's variance_components, or iid)."""

    @property
    def total(self) -> float:
        """Total SD of one run's log-loss error."""
        return math.hypot(self.shape_sd, self.seed_sd)

    @property
    def known(self) -> bool:
        """Whether the split was given or measured (not the iid default)."""
        return not self.source.startswith("iid")


def prior_components(path: Path | None) -> dict | None:
    """A fit.json's ``variance_components`` when it has seed_sd and shape_sd, else None."""
    if path is None:
        return None
    try:
        comp = json.loads(Path(path).read_text()).get("variance_components")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(comp, dict):
        return None
    seed, shape = comp.get("seed_sd"), comp.get("shape_sd")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (seed, shape)):
        return None
    return {"seed_sd": float(seed), "shape_sd": max(float(shape), 0.0)}


def resolve(total: float, shape_sd: float | None, seed_sd: float | None, branch_shared: float,
            components: dict | None) -> NoiseModel:
    """The noise model from the config's keys, the prior's components and the total."""
    if shape_sd is not None and seed_sd is not None:
        return NoiseModel(shape_sd, seed_sd, branch_shared, "design.shape_sd, design.seed_sd")
    if shape_sd is not None:
        if shape_sd >= total:
            raise ConfigError(f"design.shape_sd={shape_sd:g}: not below the total noise "
                              f"{total:.4g}; give design.seed_sd too, or a smaller shape_sd")
        return NoiseModel(shape_sd, math.sqrt(total ** 2 - shape_sd ** 2), branch_shared,
                          f"design.shape_sd, seed_sd the rest of {total:.4g}")
    if seed_sd is not None:
        if seed_sd > total:
            raise ConfigError(f"design.seed_sd={seed_sd:g}: above the total noise {total:.4g}; "
                              "give design.shape_sd too, or a smaller seed_sd")
        return NoiseModel(math.sqrt(total ** 2 - seed_sd ** 2), seed_sd, branch_shared,
                          f"design.seed_sd, shape_sd the rest of {total:.4g}")
    if components is not None:  # their shares, at the total (theirs unless design.noise)
        scale = total / math.hypot(components["shape_sd"], components["seed_sd"])
        return NoiseModel(components["shape_sd"] * scale, components["seed_sd"] * scale,
                          branch_shared, "the prior fit.json's variance_components")
    return NoiseModel(0.0, total, branch_shared, "iid: no split given (design.shape_sd / "
                      "design.seed_sd) or measured (prior variance_components)")


def draw_log_errors(noise: NoiseModel, shape: np.ndarray, trunk: np.ndarray,
                    replications: int, rng: np.random.Generator) -> np.ndarray:
    """Log-loss errors (replications, runs): shape offsets + trunk draws + own noise.

    ``shape``: each run's shape index; ``trunk``: each run's trunk index, -1 for an
    independent run (whose seed noise is all its own)."""
    own = rng.standard_normal((replications, shape.size))
    branch = trunk >= 0
    if branch.any() and noise.branch_shared > 0:  # seed noise = trunk's common draw + own
        common = rng.standard_normal((replications, int(trunk.max()) + 1))
        mixed = (math.sqrt(noise.branch_shared) * common[:, np.maximum(trunk, 0)]
                 + math.sqrt(1 - noise.branch_shared) * own)
        own = np.where(branch[None], mixed, own)
    out = noise.seed_sd * own
    if noise.shape_sd > 0:
        offsets = rng.standard_normal((replications, int(shape.max()) + 1))
        out += noise.shape_sd * offsets[:, shape]
    return out

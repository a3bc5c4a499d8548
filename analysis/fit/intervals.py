"""One study's exponent a with both approaches' intervals, as ``flame fit`` computes them.

``fit_intervals`` is the structured bootstrap's entry point for code that fits many simulated
studies (coverage tests, ``benchmarks/bench_fit_coverage.py``, ``flame design``'s honesty
checks): the same law fit, noise structure (``analysis.fit.structure``) and bootstraps as
``analysis.fit.driver.fit_sweep``, without files, warnings or selection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.fit.degenerate import approach2_interval_reason
from analysis.fit.driver import (
    exponent_interval,
    parameter_samples,
    parametric_with_bootstrap,
)
from analysis.fit.isoflop import interval
from analysis.fit.porian import fit_approach2
from analysis.fit.structure import VarianceComponents
from analysis.settings import FitSettings


@dataclass(frozen=True)
class StudyIntervals:
    """Both approaches' a and its interval for one study."""

    a2: float | None
    """Approach 2's a (None: no law)."""
    a2_ci: list[float] | None
    """Its percentile interval (None: no bootstrap, or too few usable resamples)."""
    a3: float | None
    """Approach 3's a (None: not fitted)."""
    a3_ci: list[float] | None
    """Its interval (``analysis.fit.driver.exponent_interval``: percentile, t-widened where
    the structured bootstrap drew it)."""
    variance_components: dict | None
    """fit.json's ``variance_components`` (None without replicates)."""
    bootstrap: str
    """How the resamples were drawn (Approach 2's ``bootstrap_kind``)."""
    components: VarianceComponents | None = None
    """The estimated components, also without replicates (None: shapes and runs cannot be
    told apart, or no Approach 3 law)."""
    a2_withheld: str = ""
    """Why Approach 2's interval is withheld ("" when it is not)."""

    def covers(self, truth: float) -> dict[str, bool | None]:
        """Whether each approach's interval holds ``truth`` (None: no interval)."""
        return {name: None if ci is None else bool(ci[0] <= truth <= ci[1])
                for name, ci in (("approach2", self.a2_ci), ("approach3", self.a3_ci))}

    def halfwidths(self) -> dict[str, float | None]:
        """Half of each approach's interval width (None: no interval)."""
        return {name: None if ci is None else (ci[1] - ci[0]) / 2
                for name, ci in (("approach2", self.a2_ci), ("approach3", self.a3_ci))}


def fit_intervals(points: pd.DataFrame, settings: FitSettings) -> StudyIntervals:
    """Fit ``points`` (columns budget, n, tokens, loss; ``shape`` or ``member`` naming each
    run's architecture, else N does) with ``settings``: a and its interval per approach."""
    points = points.reset_index(drop=True)
    fit, thetas, _, _, noise = parametric_with_bootstrap(points, settings)
    structured = noise if settings.bootstrap_structure == "shapes" else None
    iso = fit_approach2(points, settings, structured)
    a3_ci = exponent_interval(parameter_samples(thetas)["a"], fit.a, structured, settings) \
        if thetas is not None else None
    # withheld where flame fit withholds it, the same reason first (fit.json's
    # approach2.interval_reason: too few budgets, then a bias too unstable to correct)
    withheld = approach2_interval_reason(sum(b.used for b in iso.budgets),
                                         settings.min_interval_budgets) or iso.interval_reason
    a2_ci = interval(iso.samples.get("exp_n"), settings) \
        if iso.samples and not withheld else None
    return StudyIntervals(
        a2=iso.n_law.exponent if iso.n_law is not None else None, a2_ci=a2_ci,
        a3=fit.a if fit is not None else None, a3_ci=a3_ci,
        variance_components=noise.components.as_json() if noise is not None else None,
        bootstrap=iso.bootstrap_kind, components=noise.components if noise else None,
        a2_withheld=withheld if iso.n_law is not None else "")


def misfit_losses(law, n: np.ndarray, tokens: np.ndarray, shape: np.ndarray, shape_sd: float,
                  seed_sd: float, rng: np.random.Generator) -> np.ndarray:
    """Losses of runs drawn from ``law`` with a shared per-shape log offset (SD
    ``shape_sd``, one per distinct ``shape``) and per-run noise (SD ``seed_sd``)."""
    shapes, index = np.unique(shape, return_inverse=True)
    offset = shape_sd * rng.standard_normal(shapes.size)
    return law.loss(n, tokens) * np.exp(offset[index] + seed_sd * rng.standard_normal(n.size))

"""Approach 2's structured bootstrap: resamples drawn from the Approach 3 law, a pivot
(bias-corrected) interval, and where that interval is withheld.

Where a study's runs share shapes (``analysis.fit.structure``), Approach 2's interval is a
parametric bootstrap of the random-effects model: each resample's log losses are the fitted
Approach 3 law's plus one shape effect per shape and one run effect per run
(``NoiseStructure.draw``, the draws Approach 3's own bootstrap adds), fitted by the same
parabolas and power laws as the data (``isoflop.fit_rows``). The interval is the basic
(pivotal) bootstrap interval (Efron & Tibshirani 1993, "An Introduction to the Bootstrap",
chapter 10, bias; Davison & Hinkley 1997, "Bootstrap Methods and their Application",
sections 2.4 and 5.2): the estimator's error is taken as distributed like a resample's
error against the generating law's own value (its exponent ``beta / (alpha + beta)``, its
``N_opt``, ``D_opt``, ``L_opt`` lines over the budgets the resample used), so a sample is
``estimate - (resample - law)``, and the percentile interval of the samples is the
bias-corrected interval. Parabolas fitted to asymmetric isoFLOP curves are biased (their
vertex is pulled toward the window's middle, and budgets count only where the noise
happened to bracket the minimum); resamples drawn around the fitted parabolas, as before,
carried the bias into the interval's centre (FLAME's law on a seeded 176-run design:
estimates near 0.39 for a true 0.78, 53% coverage; docs/design_studies.md). Cost: as before,
one set of parabola fits per resample (plus the law's losses at the runs, once).

The correction is only as good as the bias is stable, and it is not where Approach 2 fails
in most resamples: the studies in which it works are those whose noise happened to bracket
the budgets' minima, and the bias given that selection moves with the law as fast as the
law's own a (FLAME's law on the seeded design, misfit world, 100 studies: the bias estimated
at each study's Approach 3 law correlated -0.85 with that law's a; the pivot intervals of the
8 studies with three or more usable budgets covered in 2). So the interval is withheld, with
the reason, where fewer than ``MIN_USABLE`` of the resamples give a law (two bracketed
budgets). The threshold is set from measurements, not derived: that design's studies' resamples
gave a law in 27-58%; on FLAME's plan, as branches, the default search's 52 runs and a
quarter-compute search, the studies whose resamples reached 60% covered in 92-96%
(docs/design_studies.md, "Is the simulation honest?").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.fit.isoflop import (
    RESAMPLE_CHUNK_ELEMENTS,
    BudgetGroup,
    IsoflopFit,
    LawRows,
    RowFits,
    _power_law,
    _samples,
    budget_groups,
    fit_isoflop,
    fit_rows,
)
from analysis.fit.parametric import closed_form_optimum, row_chunks
from analysis.fit.structure import NoiseStructure
from analysis.settings import FitSettings

MIN_USABLE = 0.6
"""Fewest of the law's resamples that must give a law for the interval to be reported."""


@dataclass(frozen=True)
class PivotBootstrap:
    """Approach 2's law-based bootstrap: samples, their kind, and why no interval (if so)."""

    samples: dict[str, np.ndarray]
    """Pivot samples of ln_k, exp for n, d, l (resamples with >= 2 usable budgets)."""
    kind: str
    """How they were drawn (fit.json's ``bootstrap_kind``)."""
    withheld: str
    """Why the interval is withheld ("" when it is not)."""


def fit_isoflop_structured(points: pd.DataFrame, settings: FitSettings,
                           noise: NoiseStructure | None) -> IsoflopFit:
    """``isoflop.fit_isoflop``, its samples drawn by ``pivot_bootstrap`` where ``noise``
    (the runs' shape and run effects from an Approach 3 law, in the points' order) exists
    and the residual bootstrap is asked for; else exactly ``fit_isoflop``."""
    if noise is None or noise.theta is None or not settings.bootstrap or \
            settings.approach2_bootstrap != "residual":
        return fit_isoflop(points, settings)

    def resample(groups: list[BudgetGroup], full: RowFits) -> tuple[dict, str, str]:
        pivot = pivot_bootstrap(points, groups, full, settings, noise)
        return pivot.samples, pivot.kind, pivot.withheld

    return fit_isoflop(points, settings, resample)


def pivot_bootstrap(points: pd.DataFrame, groups: list[BudgetGroup], full: RowFits,
                    settings: FitSettings, noise: NoiseStructure) -> PivotBootstrap:
    """The law-based pivot bootstrap of the data's fit ``full`` (one row) of ``groups``."""
    budgets, _ = budget_groups(points["budget"].to_numpy(float), settings.bucket_decades)
    masks = [budgets == g.budget for g in groups]
    log_c = np.log(np.array([g.budget for g in groups]))
    parts = []
    for boot, own in _resamples(groups, masks, log_c, settings, noise):
        laws = {name: LawRows(full.laws[name].intercept + own[name].intercept - law.intercept,
                              full.laws[name].slope + own[name].slope - law.slope)
                for name, law in boot.laws.items()}
        parts.append((boot.ok, laws))
    samples = _samples(parts)
    usable = float(samples["ok_fraction"][0])
    withheld = "" if usable >= MIN_USABLE else (
        f"Approach 2 fails (fewer than 2 bracketed budgets) in {1 - usable:.0%} of resamples "
        f"drawn from the Approach 3 law (at most {1 - MIN_USABLE:.0%} allowed): where it "
        "works, the noise chose the budgets, and its bias then moves with the law too fast "
        "to correct")
    return PivotBootstrap(samples, f"{noise.describe()}, from the Approach 3 law (pivot)",
                          withheld)


def _resamples(groups: list[BudgetGroup], masks: list[np.ndarray], log_c: np.ndarray,
               settings: FitSettings, noise: NoiseStructure
               ) -> Iterator[tuple[RowFits, dict[str, LawRows]]]:
    """Per chunk of resamples drawn from the noise structure's law (its log losses at the
    runs, ``noise.fitted_log``; seeded by ``settings.seed``): their fits, and the law's own
    power laws (Hoffmann et al.'s closed-form optimum, the a Approach 3 reports) over each
    resample's usable budgets."""
    n_opt, d_opt, l_opt = closed_form_optimum(noise.theta, np.exp(log_c))
    truth = {"n": np.log(n_opt), "d": np.log(d_opt), "l": np.log(l_opt)}
    rng = np.random.default_rng(settings.seed)
    width = sum(g.x.size for g in groups)
    for rows in row_chunks(settings.bootstrap, width, RESAMPLE_CHUNK_ELEMENTS):
        log_loss = noise.fitted_log + noise.draw(rng, rows.stop - rows.start)
        losses = [np.exp(log_loss[:, mask]) for mask in masks]
        boot = fit_rows(groups, [np.ones_like(y) for y in losses], settings, losses)
        own = {name: _power_law(log_c, np.broadcast_to(y, boot.valid.shape), boot.valid)
               for name, y in truth.items()}
        yield boot, own

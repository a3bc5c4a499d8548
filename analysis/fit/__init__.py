"""Fit: ``results.csv`` (or any CSV of budget, n, loss) -> ``fit.json``, ``selection.csv`` and
``figures/``: Approach 2 (isoFLOP parabolas, or Porian et al.'s estimator) and Approach 3 (the
parametric law), bootstrap intervals, the extrapolation check, degenerate-data warnings and the
selection of family members for target budgets."""

from analysis.fit.driver import fit_sweep, summary_text
from analysis.fit.isoflop import IsoflopFit, fit_isoflop
from analysis.fit.parametric import ParametricFit, fit_parametric
from analysis.fit.points import load_bare_csv, load_sweep_results, used_points
from analysis.fit.porian import fit_approach2, fit_porian
from analysis.fit.selection import select

__all__ = ["fit_sweep", "summary_text", "IsoflopFit", "fit_isoflop", "ParametricFit",
           "fit_parametric", "load_bare_csv", "load_sweep_results", "used_points",
           "fit_approach2", "fit_porian", "select"]

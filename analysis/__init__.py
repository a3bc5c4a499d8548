"""Analysis of a sweep: collect run results, fit scaling laws, select configurations, plot.

- ``collect``: ``runs/*/`` -> ``results.csv`` (flags: ok, diverged, nan, incomplete, missing);
- ``isoflop`` (Approach 2) and ``parametric`` (Approach 3) fits with bootstrap intervals;
- ``extrapolation``, ``selection``, ``plots``; ``report.fit_sweep`` ties them together and
  writes ``fit.json``, ``selection.csv`` and ``figures/``.
"""

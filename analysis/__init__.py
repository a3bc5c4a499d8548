"""Analysis of a sweep, one sub-package per stage (each ``__init__`` names its public entry
points; other packages import those, never a module's private names):

- ``collect``: ``runs/*/`` -> ``results.csv`` (flags with reasons) and ``routing.csv``;
- ``fit``: ``results.csv`` -> ``fit.json`` (``FitResult``), ``selection.csv``, ``figures/``:
  Approach 2 (isoFLOP parabolas) and 3 (the parametric law) with bootstrap intervals,
  extrapolation check, degenerate-data warnings, selection;
- ``design``: simulated studies of candidate designs under a prior law (``flame design``);
- ``compare``: the compute multiplier of one fitted study over another (``flame compare``);
- ``report``: the study as one HTML page (``flame report``).

Shared by the stages: ``settings`` (the ``fit`` group), ``sources`` (readers of a run's
files), ``figures`` (colours and the PNG + SVG convention), ``jsonsafe`` (JSON of numpy
values), ``commands`` (the CLI's ``collect``, ``fit`` and ``compare``).
Layering: analysis imports ``sweep`` and ``trainers`` only, never ``jobs`` or ``conf``.
"""

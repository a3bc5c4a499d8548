"""A prior fit.json's degeneracies: the warnings ``flame fit`` gives its law, for ``flame design``.

A design is simulated with the prior's law as the truth, so its half-widths say how precisely a
design would measure that law, not how well the law is known. A prior fitted on two budgets, on
flat or duplicated losses, or whose E ran to zero, is itself falsely precise: ``flame design``
repeats the same warnings a fit of those data gives (``analysis.fit.degenerate``), taken from the
prior's own ``warnings`` and, for a fit.json written before a check existed, recomputed from
what the file holds.
"""

from __future__ import annotations

import numpy as np

from analysis.fit.degenerate import FitWarning, e_at_zero_warnings
from analysis.fit.parametric import closed_form_optimum
from analysis.fit.result import FitResult

# The prior's warnings about the data or the law the design draws from (Approach 2's and the
# selection's are about its own parabolas and picks, not the law).
LAW_CODES = ("duplicates", "flat_losses")
LAW_PREFIX = "Approach 3"


def prior_warnings(fit: FitResult) -> list[FitWarning]:
    """The warnings a fit of the prior's data gives its Approach 3 law, in the prior's order;
    those its fit.json lacks (an older flame wrote it) recomputed from the file."""
    found = [w for w in fit.warnings
             if w.code in LAW_CODES or w.message.startswith(LAW_PREFIX)]
    a3 = fit.approach3
    if a3.interval_reason:
        found.append(FitWarning("few_budgets", f"{LAW_PREFIX}: {a3.interval_reason}"))
    smallest = _smallest_loss(fit)
    if smallest is not None:
        found += e_at_zero_warnings(a3.E, smallest)
    return _unique(found)


def _smallest_loss(fit: FitResult) -> float | None:
    """The smallest loss the prior's law gives at its own optimum over the budgets it was
    fitted on (fit.json keeps the budgets, not the losses), or None without budgets."""
    budgets = [b.budget for b in fit.approach2.budgets]
    if not budgets:
        return None
    a3 = fit.approach3
    theta = np.array([np.log(a3.A), np.log(a3.B), np.log(max(a3.E, 1e-300)), a3.alpha, a3.beta])
    _, _, loss = closed_form_optimum(theta, np.array([max(budgets)], float))
    return float(np.min(loss))


def _unique(warnings: list[FitWarning]) -> list[FitWarning]:
    """Each warning once: by message, and one per code for the recomputed checks."""
    out: list[FitWarning] = []
    for w in warnings:
        same = [o for o in out if o.message == w.message or
                (o.code == w.code and w.code in ("few_budgets", "e_at_zero"))]
        if not same:
            out.append(w)
    return out

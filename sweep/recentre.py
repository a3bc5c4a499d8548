"""Adaptive budgets: the prior law updated from finished budgets, and where the next runs go.

Pure arithmetic on what the fits found (``jobs/adaptive.py`` runs the waves). The planner keeps
runs within ``span_log10`` decades of ``N_opt = k.C^a`` (``planner.prior``); re-centring is
that same window moved to a better estimate of the optimum:

- two or more bracketed budgets: k and a of Approach 2's N_opt(C) power law on them;
- one bracketed budget: the law through its optimum, a from the prior (one point fixes the
  level, not the slope);
- none: the law through the lowest-loss runs so far, a from the prior.

A budget already run but not bracketed is re-centred on its own evidence: when its lowest loss
sits at the smallest (largest) size, the optimum lies below (above) that size, so the window
moves there at least; otherwise onto its lowest-loss run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sweep.planner import Prior

EDGES = ("low", "high", "")


@dataclass(frozen=True)
class BudgetEvidence:
    """What the finished runs of one budget say about its optimum."""

    budget: float
    """The budget C (FLOPs)."""
    n_opt: float | None
    """Approach 2's N_opt when the budget is bracketed (its parabola is used), else None."""
    n_best: float
    """N of the budget's lowest-loss run."""
    edge: str
    """low | high: the lowest loss is at the smallest | largest sampled N; "" otherwise."""

    def __post_init__(self) -> None:
        if self.edge not in EDGES:
            raise ValueError(f"edge={self.edge!r}: use one of {EDGES}")

    @property
    def bracketed(self) -> bool:
        return self.n_opt is not None


@dataclass(frozen=True)
class Law:
    """``N_opt = k.C^a``: the prior, or what the finished budgets made of it."""

    k: float
    """Prefactor."""
    a: float
    """Exponent of C."""
    source: str
    """Where k and a come from (logged with each decision)."""

    def __call__(self, budget: float) -> float:
        return self.k * budget ** self.a


def updated_law(prior: Prior, evidence: Sequence[BudgetEvidence],
                fitted: tuple[float, float] | None = None) -> Law:
    """The prior updated from ``evidence``; ``fitted``: Approach 2's (k, a) on the bracketed
    budgets, used when there are at least two of them."""
    bracketed = [e for e in evidence if e.bracketed]
    if len(bracketed) >= 2 and fitted is not None:
        return Law(fitted[0], fitted[1], f"Approach 2 on {len(bracketed)} bracketed budgets")
    if bracketed:
        points = [(e.budget, e.n_opt) for e in bracketed]
        what = f"through {len(points)} bracketed budget(s)' N_opt, a from the prior"
    elif evidence:
        points = [(e.budget, e.n_best) for e in evidence]
        what = (f"through the lowest-loss runs of {len(points)} unbracketed budget(s), "
                "a from the prior")
    else:
        return Law(prior.k, prior.a, "the prior (planner.prior)")
    # Geometric mean of k over the points: least squares in log space with a fixed.
    log_k = sum(math.log(n) - prior.a * math.log(c) for c, n in points) / len(points)
    return Law(math.exp(log_k), prior.a, what)


def centre(law: Law, budget: float, evidence: BudgetEvidence | None) -> float:
    """The N the next runs at ``budget`` are centred on."""
    if evidence is None:
        return law(budget)
    if evidence.bracketed:
        return evidence.n_opt
    if evidence.edge == "low":  # the optimum is below every size run: go at least that far
        return min(law(budget), evidence.n_best)
    if evidence.edge == "high":
        return max(law(budget), evidence.n_best)
    return evidence.n_best


def centred_prior(law: Law, budget: float, n_centre: float, span_log10: float) -> Prior:
    """A planner prior whose N_opt at ``budget`` is ``n_centre`` (slope ``law.a``)."""
    return Prior(k=n_centre / budget ** law.a, a=law.a, span_log10=span_log10)


__all__ = ["BudgetEvidence", "Law", "updated_law", "centre", "centred_prior"]

"""Synthetic isoFLOP sweeps drawn from a known law: for tests, benchmarks and demos."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.fit.parametric import closed_form_optimum, tokens_6nd
from sweep import law


@dataclass
class Law(law.Law):
    """The law synthetic sweeps default to: Chinchilla-like exponents, round coefficients."""

    E: float = 1.7
    """Irreducible loss."""
    A: float = 400.0
    """Parameter term's scale."""
    B: float = 1200.0
    """Data term's scale."""
    alpha: float = 0.34
    """Parameter exponent."""
    beta: float = 0.28
    """Data exponent."""


def isoflop_sweep(law: Law, budgets: np.ndarray, per_budget: int = 9, span_decades: float = 0.8,
                  noise: float = 0.005, seed: int = 0) -> pd.DataFrame:
    """Points ``budget, n, tokens, loss`` on an isoFLOP grid around the law's optimum.

    Sizes are ``per_budget`` log-spaced points within +-``span_decades`` of the true N_opt
    (the same pattern at every budget, as a sweep planned from a prior would be); tokens
    ``C / (6 N)``; loss multiplied by ``exp(noise . z)``, z standard normal.
    """
    rng = np.random.default_rng(seed)
    n_opt, _, _ = closed_form_optimum(law.theta[None], np.asarray(budgets, float))
    offsets = np.linspace(-span_decades, span_decades, per_budget)
    n = (n_opt[:, None] * 10.0 ** offsets[None]).ravel()
    c = np.repeat(np.asarray(budgets, float), per_budget)
    d = tokens_6nd(c, n)
    loss = law.loss(n, d) * np.exp(noise * rng.standard_normal(n.size))
    return pd.DataFrame({"budget": c, "n": n, "tokens": d, "loss": loss})

"""The parametric scaling law ``L(N, D) = E + A/N^alpha + B/D^beta`` (Hoffmann et al. 2022,
"Training Compute-Optimal Large Language Models", eq. 2): one definition for the simulated
trainer, synthetic sweeps and the fits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Law:
    """L(N, D) = E + A/N^alpha + B/D^beta."""

    E: float
    """Irreducible loss (nats)."""
    A: float
    """Parameter term's scale."""
    B: float
    """Data term's scale."""
    alpha: float
    """Parameter term's exponent."""
    beta: float
    """Data term's exponent."""

    @property
    def a(self) -> float:
        """Exponent of N_opt(C) (Hoffmann et al. 2022, eq. 4)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def theta(self) -> np.ndarray:
        """The fits' parameter vector: log A, log B, log E, alpha, beta."""
        return np.array([np.log(self.A), np.log(self.B), np.log(self.E), self.alpha, self.beta])

    def loss(self, n: Any, d: Any) -> Any:
        """The law at ``n`` parameters and ``d`` tokens (scalars or numpy arrays)."""
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

"""The seven models FLAME-MoE released, beside what a fit selects at their budgets.

The released models are data, kept once: ``analysis/data/flame_moe_released.csv`` (Kang et al.
2025, "FLAME-MoE: A Transparent End-to-End Research Platform for Mixture-of-Experts Language
Models"; shapes and iterations from cmu-flame/FLAME-MoE ``scripts/release/*.sh``, names =
published active-total parameters; see docs/flame_recipe.md). ``conf/family/flame_release.yaml``
lists the same shapes for planning, and ``tests/analysis/fit/test_release.py`` checks that the two
agree (shapes, and the planner's iterations equal the released ones).

``beside_released`` adds ``released_*`` columns to a selection table: the released model at
the same budget, its N counted as the fit counts N, tokens, and a sentence saying whether the
chosen member is that model and, if not, where and why they differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from analysis.fit.selection import member_n
from sweep.arch import MoEArch

RELEASED_CSV = "flame_moe_released.csv"
# A chosen N within this many decades of the released N is "the same size" for the note.
SAME_SIZE_DECADES = 0.02


@dataclass(frozen=True)
class ReleasedModel:
    """One released FLAME-MoE model."""

    name: str
    """Published name: active-total parameters, e.g. ``290M-1.3B``."""
    budget: float
    """Training compute (FLOPs) it was sized for."""
    arch: MoEArch
    """Its architecture."""
    iterations: int
    """Training iterations of its release script."""
    tokens: float
    """Training tokens: iterations x global batch x sequence length."""
    active_published: float
    """Active parameters as published."""
    total_published: float
    """Total parameters as published."""

    @property
    def shape(self) -> str:
        """``L<layers>-h<hidden>``, as family members are named."""
        return f"L{self.arch.num_layers}-h{self.arch.hidden_size}"


def released_models() -> list[ReleasedModel]:
    """The seven released models, from the package's data file."""
    with resources.files("analysis").joinpath("data", RELEASED_CSV).open() as handle:
        table = pd.read_csv(handle)
    models = []
    for row in table.to_dict(orient="records"):
        arch = MoEArch.from_mapping(row)
        models.append(ReleasedModel(
            name=row["name"], budget=float(row["budget"]), arch=arch,
            iterations=int(row["train_iters"]),
            tokens=float(row["train_iters"] * row["global_batch_size"] * arch.seq_length),
            active_published=float(row["active_published"]),
            total_published=float(row["total_published"])))
    return models


def released_at(budget: float) -> ReleasedModel | None:
    """The model released for ``budget`` (FLOPs), or None."""
    return next((m for m in released_models()
                 if math.isclose(m.budget, budget, rel_tol=1e-6)), None)


def beside_released(table: pd.DataFrame, n_column: str) -> pd.DataFrame:
    """``table`` (selection rows) with ``released_*`` columns; unchanged when none of its
    budgets is a release budget."""
    found = [released_at(b) for b in table["budget"]]
    if not any(found):
        return table
    rows = [_released_row(row, model, n_column)
            for row, model in zip(table.to_dict(orient="records"), found)]
    return pd.concat([table, pd.DataFrame(rows, index=table.index)], axis=1)


def _released_row(row: dict, model: ReleasedModel | None, n_column: str) -> dict:
    if model is None:
        return {"released_name": "", "released_note": "no model was released at this budget"}
    n_released = member_n(model.arch, n_column)
    out = {"released_name": model.name, "released_shape": model.shape,
           "released_n": n_released, "released_active": model.active_published,
           "released_total": model.total_published, "released_tokens": model.tokens,
           "released_iterations": model.iterations,
           "released_log10_n_vs_opt": math.log10(n_released / row["n_opt"])}
    out["released_same"] = bool(row.get("member")) and row["member"] == model.shape and \
        _close(row.get("member_n"), n_released)
    out["released_note"] = _note(row, out, model)
    return out


def _close(a, b) -> bool:
    return a is not None and not np.isnan(a) and abs(math.log10(a / b)) < SAME_SIZE_DECADES


def _note(row: dict, rel: dict, model: ReleasedModel) -> str:
    """Where the choice and the released model differ, and why (one sentence)."""
    gap = rel["released_log10_n_vs_opt"]
    law = (f"the law's N_opt is {row['n_opt']:.3g}; the released {model.shape} has "
           f"{rel['released_n']:.3g} ({10 ** gap:.2f}x, {gap:+.2f} decades)")
    far = row.get("extrapolation_decades") or 0.0
    why_far = (f"; the budget is {far:.1f} decades outside the fitted budgets, so the law's form, "
               "not data, places N_opt" if far > 0 else "")
    if rel["released_same"]:
        return f"same shape: {law}{why_far}"
    if not row.get("member"):
        return f"no family to select from: {law}{why_far}"
    chosen = row["member_n"]
    side = "larger" if chosen > rel["released_n"] else "smaller"
    return (f"differs: chose {row['member']} ({chosen:.3g}, {side}, "
            f"{row['member_tokens'] / model.tokens:.2f}x the released tokens) because it is "
            f"nearer in log N: {law}{why_far}")

"""Degenerate data: what makes a fit falsely precise, detected before numbers are reported.

Each check returns warnings (a code and one sentence saying what was found and what was done)
that go into fit.json's ``warnings`` and the printed summary (issue 11, item 6):

- exact duplicate rows are counted once (``data._finish``): a copied row is not a second run,
  and a bootstrap resampling copies as independent runs makes its intervals falsely narrow;
- Approach 2 reports no interval with fewer than ``MIN_INTERVAL_BUDGETS`` usable budgets: a
  power law through two points has no residual degrees of freedom, so nothing measures how
  far the exponent could move;
- Approach 3 is not fitted on fewer than ``MIN_PARAMETRIC_BUDGETS`` budgets (within a budget
  D = C / 6N, so one budget cannot tell the N term from the D term) nor on flat losses
  (``isoflop.FLAT_LOSS_REL_RANGE``: nothing to fit); below ``MIN_INTERVAL_BUDGETS`` it is
  fitted but reports no interval: how the optimum moves with C rests on two budgets, which
  every resample keeps, so the resamples cannot show that uncertainty;
- an interval of zero width is not reported: the resamples did not vary;
- Approach 3's E at zero (``E_ZERO_FRACTION`` of the loss) is named: the fit ran to its
  boundary (typically on two budgets), so the irreducible loss was not identified;
- a budget whose lowest loss is at its smallest or largest size is not bracketed (named, with
  the side to add members on), and a pick more than ``fit.max_pick_distance_decades`` from
  the law's N_opt is flagged: the optimum is outside the family's sizes;
- a selection more than ``fit.max_extrapolation_decades`` of compute outside the fitted budgets
  is flagged in selection.csv and the summary as an extrapolation;
- a budget whose parabola vertex lies in the outer ``OFF_CENTRE_FRACTION`` of its window (in
  ln N) is off-centre: a parabola fitted to a loss curve that is not symmetric in ln N (the
  law's is not: steeper on the small-N side) puts its vertex toward the window's middle, so
  the farther the optimum is from the middle the more N_opt is biased, and the bias grows
  with the window (Hoffmann et al.'s Approach 2 assumes sizes centred on the optimum).

The thresholds are module constants for now (to become fit config fields).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from analysis.fit.isoflop import FLAT_LOSS_REL_RANGE

MIN_INTERVAL_BUDGETS = 3  # defaults of fit.min_interval_budgets (analysis.settings)
OFF_CENTRE_FRACTION = 0.2
# Approach 3's E below this fraction of the smallest loss fitted is at zero, its boundary (a
# law whose E is identified has it at a sizeable share of the loss: 0.785 of ~1.15 in the demo).
E_ZERO_FRACTION = 1e-3
MIN_PARAMETRIC_BUDGETS = 2
DUPLICATE_REASON = "duplicate: same budget, n, tokens and loss as an earlier row; counted once"


@dataclass(frozen=True)
class FitWarning:
    """One finding about the data or a fit that limits what the numbers mean."""

    code: str
    """Short identifier: duplicates, few_budgets, flat_losses, zero_width, extrapolation,
    off_centre, not_bracketed, e_at_zero, far_from_optimum, biased (Approach 2 fails in
    most resamples drawn from the law: its interval withheld)."""
    message: str
    """What was found, why it matters and what the fit did about it."""

    def as_dict(self) -> dict:
        return asdict(self)


def duplicate_warnings(points: pd.DataFrame) -> list[FitWarning]:
    """A warning when ``data._finish`` collapsed exact duplicate rows."""
    count = int((points["excluded_reason"] == DUPLICATE_REASON).sum())
    if not count:
        return []
    return [FitWarning("duplicates", f"{count} of {len(points)} rows repeat an earlier row "
                       "exactly (budget, n, tokens, loss) and were counted once: a copied row "
                       "is not another run, and resampling copies as runs makes intervals "
                       "falsely narrow")]


def flat_losses(loss: np.ndarray, rel_range: float = FLAT_LOSS_REL_RANGE) -> bool:
    """Whether losses span less than ``rel_range`` (fit.flat_loss_rel_range) of their largest
    value."""
    return bool(np.ptp(loss) <= rel_range * np.abs(loss).max())


def parametric_unidentified(loss: np.ndarray, n_budgets: int,
                            rel_range: float = FLAT_LOSS_REL_RANGE) -> str:
    """Why the parametric law cannot be identified from these points ("" when it can)."""
    if flat_losses(loss, rel_range):
        return (f"flat losses (range {np.ptp(loss):.3g}, below {rel_range:.0e} of "
                "the loss): N and D explain nothing, so the law is not identified")
    if n_budgets < MIN_PARAMETRIC_BUDGETS:
        return (f"only {n_budgets} budget(s); within a budget D = C / 6N, so at least "
                f"{MIN_PARAMETRIC_BUDGETS} budgets are needed to separate the N and D terms")
    return ""


def approach3_interval_reason(n_budgets: int, least: int = MIN_INTERVAL_BUDGETS) -> str:
    """Why Approach 3's intervals are withheld for this many budgets ("" if they are not);
    ``least``: fit.min_interval_budgets."""
    if n_budgets >= least:
        return ""
    return (f"fitted on only {n_budgets} budgets: how the optimum moves with C rests on them, "
            f"and every resample keeps the same {n_budgets}, so no interval is reported; at "
            f"least {least} are needed (fit.min_interval_budgets)")


def approach2_interval_reason(n_used_budgets: int, least: int = MIN_INTERVAL_BUDGETS) -> str:
    """Why Approach 2's interval is withheld for this many usable budgets ("" if it is not);
    ``least``: fit.min_interval_budgets."""
    if n_used_budgets >= least:
        return ""
    return (f"only {n_used_budgets} usable budgets: the power law passes exactly through "
            f"them (no residual degrees of freedom), so its exponent has no interval; at "
            f"least {least} are needed (fit.min_interval_budgets)")


def e_at_zero_warnings(e: float, smallest_loss: float) -> list[FitWarning]:
    """A warning when Approach 3's E is at zero (below E_ZERO_FRACTION of ``smallest_loss``):
    the fit ran to the boundary, so the data did not identify the irreducible loss."""
    if not (e < E_ZERO_FRACTION * smallest_loss):
        return []
    return [FitWarning("e_at_zero", f"Approach 3: E = {e:.3g}, below {E_ZERO_FRACTION:.1%} of "
                       f"the smallest loss ({smallest_loss:.4g}): the fit put the irreducible "
                       "loss at zero, its boundary, so the data did not identify it; the law's "
                       "loss then falls as a power of C with no floor, and what it predicts "
                       "beyond the data rests on that")]


def zero_width(ci: list[float] | None) -> bool:
    """Whether an interval has (relative) zero width: its resamples did not vary."""
    return ci is not None and abs(ci[1] - ci[0]) <= 1e-12 * max(abs(ci[0]), abs(ci[1]), 1e-300)


def extrapolation_decades(targets: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """Decades of compute from each target to the fitted budgets' range (0 inside it)."""
    lo, hi = math.log10(float(np.min(fitted))), math.log10(float(np.max(fitted)))
    log_t = np.log10(np.asarray(targets, float))
    return np.maximum(0.0, np.maximum(log_t - hi, lo - log_t))


def unbracketed_warnings(budgets) -> list[FitWarning]:
    """A warning per side naming the budgets (``isoflop.BudgetFit``) rejected as not bracketed:
    their lowest loss is at the smallest (or largest) size run, so the optimum lies beyond the
    family's sizes there, and neither approach measured it."""
    out = []
    for edge, more in (("smallest", "smaller"), ("largest", "larger")):
        found = [f"{b.budget:.3g}" for b in budgets
                 if not b.used and b.reason.startswith("not bracketed") and edge in b.reason]
        if found:
            out.append(FitWarning("not_bracketed", f"Approach 2: {len(found)} of {len(budgets)} "
                                  f"budget(s) are not bracketed: the lowest loss is at the "
                                  f"{edge} size ({', '.join(found)} FLOPs), so their optimum "
                                  f"lies beyond the sizes run and they are not used; add "
                                  f"{more} members (planner.adaptive=true re-centres such "
                                  "budgets)"))
    return out


def far_pick_warnings(table: pd.DataFrame, allowed: float) -> list[FitWarning]:
    """Flag, in selection's ``warning`` column (joined to what is there), each pick whose N is
    more than ``allowed`` decades (fit.max_pick_distance_decades) from the law's N_opt: no
    member near the optimum, so the pick is the family's closest, not the optimum. The
    warning, if any."""
    ratio = table["log10_n_ratio"].to_numpy(float)
    far = np.abs(np.nan_to_num(ratio)) > allowed
    if not far.any():
        return []
    rows = table[far]
    for i, row in rows.iterrows():
        side = "below" if row["log10_n_ratio"] < 0 else "above"
        note = (f"far from the optimum: {row['member']} is {abs(row['log10_n_ratio']):.2f} "
                f"decades {side} N_opt (no member within {allowed} decades)")
        table.loc[i, "warning"] = "; ".join(x for x in (table.loc[i, "warning"], note) if x)
    worst = rows.loc[rows["log10_n_ratio"].abs().idxmax()]
    sides = {"below" if r < 0 else "above" for r in rows["log10_n_ratio"]}
    add = "larger" if sides == {"below"} else "smaller" if sides == {"above"} else "other"
    return [FitWarning("far_from_optimum", f"{len(rows)} of {len(table)} picks are more than "
                       f"{allowed} decades (fit.max_pick_distance_decades) from the law's "
                       f"N_opt, up to {abs(worst['log10_n_ratio']):.2f} decades "
                       f"{'below' if worst['log10_n_ratio'] < 0 else 'above'} it at "
                       f"{worst['budget']:.3g} FLOPs ({worst['member']}, N_opt "
                       f"{worst['n_opt']:.3g}): the family has no member near the optimum "
                       f"there, so these picks are its closest, not compute-optimal; add "
                       f"{add} members near N_opt (selection.csv's warning column)")]


def off_centre_warnings(budgets) -> list[FitWarning]:
    """A warning naming the used budgets (``isoflop.BudgetFit``) whose parabola vertex lies
    in the outer OFF_CENTRE_FRACTION of its window (in ln N)."""
    found = []
    for b in budgets:
        if not b.used or b.coef is None or b.window is None or b.window[1] <= b.window[0]:
            continue
        where = math.log(b.n_opt / b.window[0]) / math.log(b.window[1] / b.window[0])
        if min(where, 1 - where) < OFF_CENTRE_FRACTION:
            found.append(f"{b.budget:.3g} ({where:.0%} of the way across)")
    if not found:
        return []
    return [FitWarning("off_centre", f"Approach 2: {len(found)} budget(s) have their optimum "
                       f"near the edge of the sizes fitted: {', '.join(found)}; a parabola's "
                       "vertex is biased toward the window's middle there (the loss is not "
                       "symmetric in ln N), so N_opt and the exponent may be biased: add sizes "
                       "on the far side of the optimum, or compare with "
                       "fit.approach2_estimator=porian")]

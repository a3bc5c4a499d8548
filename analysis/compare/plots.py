"""``flame compare``'s figure (matplotlib, Agg): both loss frontiers and the compute
multiplier of A over B per budget."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import ScalarFormatter

from analysis.figures import plt  # pyplot on the Agg backend


def compare_figure(a, b, result: dict):
    """``flame compare``: both loss frontiers with their minima (left); the compute
    multiplier of A over B per budget with its interval, and the crossover (right)."""
    table = pd.DataFrame(result["budgets"])
    budgets = table["budget"].to_numpy(float)
    span = np.geomspace(budgets.min() / 1.5, budgets.max() * 1.5, 200)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for study, colour, label in ((a, "C3", "A"), (b, "C0", "B")):
        used = [x for x in (study.iso.budgets if study.iso else ()) if x.used]
        axes[0].scatter([x.budget for x in used], [x.loss_opt for x in used], color=colour,
                        s=50, edgecolor="k", zorder=4)
        f = study.frontier()
        axes[0].plot(span, study.frontier_loss(span), color=colour,
                     label=f"{label} = {study.name}: L_opt = {f['E']:.3g} + "
                           f"{f['K']:.3g}·C^-{f['gamma']:.3f}")
    axes[0].set_title("Loss frontiers (isoFLOP minima and Approach 3 laws)")
    axes[0].set_ylabel("optimal validation loss (nats/token)")
    ax = axes[1]
    inside = ~table["extrapolated"].to_numpy(bool)
    # Percentile intervals need not contain the point estimate: clip the bars at it.
    err = np.clip(np.vstack([table["multiplier"] - table["multiplier_lo"],
                             table["multiplier_hi"] - table["multiplier"]]), 0, None)
    err = np.nan_to_num(err)
    ax.errorbar(budgets[inside], table["multiplier"][inside], yerr=err[:, inside], fmt="o",
                color="k", capsize=4, label="multiplier (interval: bootstrap)")
    if (~inside).any():
        ax.errorbar(budgets[~inside], table["multiplier"][~inside], yerr=err[:, ~inside],
                    fmt="o", mfc="none", color="0.5", capsize=4,
                    label="extrapolated (B's compute outside B's budgets)")
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
    if result["multiplier"] is not None:
        ci = result["multiplier_ci"]
        ax.axhline(result["multiplier"], color="C2",
                   label=f"summary {result['multiplier']:.3g}" +
                         (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""))
        if ci:
            ax.axhspan(ci[0], ci[1], color="C2", alpha=0.15)
    cross = result["crossover"]["budget"]
    if cross is not None and span[0] <= cross <= span[-1]:
        ax.axvline(cross, color="C1", ls="--", label=f"frontiers cross at {cross:.3g}")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_title("Effective compute multiplier of A over B")
    ax.set_ylabel("C_B / C: B's compute for A's optimal loss at C")
    for axis in axes:
        axis.set_xscale("log")
        axis.set_xlabel("compute budget C (FLOPs)")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)
    return fig

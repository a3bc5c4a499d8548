"""The downstream figure: accuracy against validation loss, one panel per task, with the
fitted sigmoid and its bootstrap band, and the release's predicted vs scored accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.downstream.ladder import SigmoidFit, sigmoid
from analysis.downstream.results import ACC_PREFIX
from analysis.figures import BudgetColours, plt, save_figure
from sweep.io import RESULTS_CSV

FIGURES_DIR = "figures"
NAME = "downstream"


def plot_downstream(sweep_dir: Path, document: dict[str, Any],
                    fits: dict[str, SigmoidFit]) -> list[str]:
    """``figures/downstream.png`` and ``.svg`` in ``sweep_dir``; returns their paths relative
    to it (none when no task has accuracies)."""
    source = Path(document["source"])
    results = pd.read_csv(source / RESULTS_CSV)
    ok = results[results["flag"] == "ok"]
    tasks = [row["task"] for row in document["tasks"] if row["runs"]]
    if not tasks:
        return []
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.0), squeeze=False)
    colours = BudgetColours(ok["budget"].to_numpy(float))
    for ax, task in zip(axes[0], tasks):
        loss, acc = ok["final_val_loss"].to_numpy(float), ok[f"{ACC_PREFIX}{task}"].to_numpy(
            float)
        ax.scatter(loss, acc, c=colours(ok["budget"].to_numpy(float)), s=22,
                   label="sweep runs (colour: budget)")
        row = next(r for r in document["tasks"] if r["task"] == task)
        fit = fits[task]
        release = [r for r in document["release"] if r["task"] == task]
        lows = [r["predicted_loss"] for r in release if r.get("predicted_loss")]
        grid = np.linspace(min([np.nanmin(loss), *lows]) - 0.05, np.nanmax(loss) + 0.05, 200)
        if fit.params is not None:
            ax.plot(grid, fit.predict(grid), color="black", lw=1.2,
                    label="sigmoid (Bhagia et al. 2024)")
            if len(fit.boot):
                band = np.clip(np.percentile([sigmoid(grid, *p) for p in fit.boot],
                                             [2.5, 97.5], axis=0), 0, 1)
                ax.fill_between(grid, band[0], band[1], color="grey", alpha=0.25,
                                label="95% bootstrap band")
        for r in release:
            if r.get("predicted_acc") is not None:
                ax.errorbar([r["predicted_loss"]], [r["predicted_acc"]],
                            yerr=[[r["predicted_acc"] - r["predicted_low"]],
                                  [r["predicted_high"] - r["predicted_acc"]]],
                            fmt="D", color="tab:red", mfc="none", capsize=3,
                            label="release: predicted from the sweep")
            if r.get("scored_acc") is not None and r.get("achieved_loss") is not None:
                ax.plot([r["achieved_loss"]], [r["scored_acc"]], "*", color="tab:red", ms=11,
                        label="release: scored")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower left")
        rho = row.get("spearman_law_loss") or row.get("spearman_val_loss")
        ax.set_title(f"{task}: Spearman {rho:.2f}" if rho is not None else task, fontsize=9)
        ax.set_xlabel("final validation loss")
        ax.set_ylabel("accuracy (lm-eval acc)")
    (sweep_dir / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    paths = save_figure(fig, sweep_dir / FIGURES_DIR, NAME)
    return [str(p.relative_to(sweep_dir)) for p in paths]


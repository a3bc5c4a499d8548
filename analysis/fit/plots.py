"""Figures of a fit (matplotlib, Agg): isoFLOP curves, N_opt/D_opt vs C, loss frontier,
residuals. Each is written as PNG and SVG; a budget has the same colour in every figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.figures import BudgetColours, save_figure  # noqa: E402
from analysis.fit.isoflop import IsoflopFit, budget_groups, token_line  # noqa: E402
from analysis.fit.parametric import ParametricFit, closed_form_optimum  # noqa: E402
from analysis.fit.points import roles  # noqa: E402
from analysis.settings import FitSettings  # noqa: E402
from sweep.io import FIGURES_DIR  # noqa: E402

# Most runs drawn as markers per figure: beyond this a seeded random sample is drawn and the
# figure says so (100,000 markers took ~2 minutes to render, mostly SVG, and hide each other).
PLOT_MAX_POINTS = 3000
BRANCH_MARKER = "^"  # a branch's point (a cooldown from a trunk's checkpoint); runs: "o"
BRANCH_LABEL = "branch (cooldown from a trunk)"


def branch_mask(points: pd.DataFrame) -> np.ndarray:
    """True for the rows that are branches (planner.strategy=branches)."""
    return (roles(points) == "branch").to_numpy()


def _branch_key(ax, branch: np.ndarray) -> None:
    """A legend entry for the branch marker, when any branch is drawn."""
    if branch.any():
        ax.scatter([], [], marker=BRANCH_MARKER, color="0.4", s=30, label=BRANCH_LABEL)


def plotted_sample(size: int) -> tuple[np.ndarray, str]:
    """Indices of the runs drawn as markers (all, or a seeded random PLOT_MAX_POINTS of
    them) and a note saying how many are shown ("" when all are)."""
    if size <= PLOT_MAX_POINTS:
        return np.arange(size), ""
    keep = np.sort(np.random.default_rng(0).choice(size, PLOT_MAX_POINTS, replace=False))
    return keep, f"markers: a random {PLOT_MAX_POINTS:,} of the {size:,} runs"


def write_figures(sweep_dir: Path, points: pd.DataFrame, iso: IsoflopFit,
                  param: ParametricFit | None, thetas: np.ndarray | None,
                  selection: pd.DataFrame | None, settings: FitSettings) -> list[Path]:
    """All figures into ``<sweep_dir>/figures/``; returns the written paths."""
    out_dir = Path(sweep_dir) / FIGURES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    groups, _ = budget_groups(points["budget"].to_numpy(float), settings.bucket_decades)
    colours = BudgetColours(groups)
    drawn, note = plotted_sample(len(points))
    shown, shown_groups = points.iloc[drawn].reset_index(drop=True), groups[drawn]
    paths = save_figure(_noted(isoflop_figure(shown, shown_groups, iso, param, colours),
                               note), out_dir, "isoflop")
    paths += save_figure(optimum_figure(iso, param, thetas, selection, colours, settings),
                         out_dir, "scaling_laws")
    paths += save_figure(_noted(frontier_figure(shown, shown_groups, iso, param, colours,
                                                selection), note), out_dir, "loss_frontier")
    if param is not None:
        paths += save_figure(_noted(residual_figure(points, groups, param, colours, drawn),
                                    note), out_dir, "residuals")
    if selection is not None and "released_name" in selection:
        paths += save_figure(release_figure(selection), out_dir, "release")
    return paths


def _noted(fig, note: str):
    """The figure with ``note`` (which runs are drawn) written under it."""
    if note:
        fig.text(0.01, 0.005, note, fontsize=8, color="0.3", ha="left", va="bottom")
    return fig


def isoflop_figure(points, groups, iso: IsoflopFit, param, colours):
    fig, ax = plt.subplots(figsize=(8, 5.5))
    branch = branch_mask(points)
    for b in iso.budgets:
        sel = groups == b.budget
        if not sel.any():  # every run of this budget fell outside the drawn sample
            continue
        n, loss, c = points["n"].to_numpy()[sel], points["loss"].to_numpy()[sel], colours(b.budget)
        label = f"{b.budget:.2g} FLOPs" + ("" if b.used else " (rejected)")
        for part, marker in ((~branch[sel], "o" if b.used else "x"),
                             (branch[sel], BRANCH_MARKER)):
            if part.any():
                ax.scatter(n[part], loss[part], color=c, s=22, zorder=3, label=label,
                           marker=marker)
                label = None
        if b.coef is not None and b.window is not None:
            grid = np.geomspace(*b.window, 100)
            ax.plot(grid, b.parabola(grid), color=c, lw=1.6 if b.used else 0.8,
                    ls="-" if b.used else ":")
        if b.used:
            ax.scatter([b.n_opt], [b.loss_opt], color=c, marker="*", s=160, edgecolor="k",
                       zorder=4)
        if param is not None:
            grid, curve = approach3_curve(param, n, points["tokens"].to_numpy()[sel])
            ax.plot(grid, curve, color=c, lw=0.8, ls="--", alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N (count, log scale)")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title("isoFLOP curves: parabolas in log N (solid), minima (stars),\n"
                 "Approach 3 law at each budget (dashed)")
    _branch_key(ax, branch)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2, title="budget")
    return fig


def approach3_curve(param: ParametricFit, n: np.ndarray, tokens: np.ndarray,
                    grid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Approach 3's law along one budget's isoFLOP curve, at ``grid`` (default: 100 sizes
    from its runs' smallest / 1.5 to largest x 1.5), with D from the runs' own tokens
    (``token_line``: the study's FLOP formula, as the runs were planned and trained;
    Approach 2's D_opt reads the same line)."""
    n, tokens = np.asarray(n, float), np.asarray(tokens, float)
    d0, d1 = token_line(np.log(n), np.log(tokens))
    if grid is None:
        grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 100)
    return grid, param.predict(grid, np.exp(d0 + d1 * np.log(grid)))


def _band(ax, iso, key, budgets, settings, colour):
    s = iso.samples
    if not s or s.get(f"ln_k{key}") is None or s[f"ln_k{key}"].size < 2:
        return
    curves = s[f"ln_k{key}"][:, None] + s[f"exp_{key}"][:, None] * np.log(budgets)[None]
    lo, hi = np.percentile(curves, settings.alpha_tails, axis=0)
    ax.fill_between(budgets, np.exp(lo), np.exp(hi), color=colour, alpha=0.18,
                    label=f"Approach 2 {int(settings.confidence * 100)}% band")


def optimum_figure(iso, param, thetas, selection, colours, settings):
    used = [b for b in iso.budgets if b.used]
    targets = np.array(settings.target_budgets)
    fitted = np.array([b.budget for b in iso.budgets]) if iso.budgets else targets
    span = np.geomspace(min(fitted.min(), targets.min()) / 1.5,
                        max(fitted.max(), targets.max()) * 1.5, 200)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, key, attr, label in ((axes[0], "n", "n_opt", "optimal parameters N_opt (count)"),
                                 (axes[1], "d", "d_opt", "optimal tokens D_opt (count)")):
        for i, b in enumerate(used):
            ax.scatter([b.budget], [getattr(b, attr)], color=colours(b.budget), s=60,
                       edgecolor="k", zorder=4, label="isoFLOP minima" if i == 0 else None)
        law = iso.n_law if key == "n" else iso.d_law
        if law is not None:
            ax.plot(span, law(span), color="C3", label=f"Approach 2: ∝ C^{law.exponent:.3f}")
            _band(ax, iso, key, span, settings, "C3")
        if param is not None:
            n_opt, d_opt, _ = param.optimum(span)
            exp_ = param.a if key == "n" else param.b
            ax.plot(span, n_opt if key == "n" else d_opt, color="C0", ls="--",
                    label=f"Approach 3: ∝ C^{exp_:.3f}")
            if thetas is not None:
                n_b, d_b, _ = closed_form_optimum(thetas, span)
                lo, hi = np.percentile(n_b if key == "n" else d_b, settings.alpha_tails, axis=0)
                ax.fill_between(span, lo, hi, color="C0", alpha=0.15,
                                label=f"Approach 3 {int(settings.confidence * 100)}% band")
        if selection is not None:
            ax.scatter(selection["budget"], selection["n_opt" if key == "n" else "d_opt"],
                       marker="D", facecolor="none", edgecolor="k", s=40, zorder=5,
                       label="predicted at target budgets")
            if key == "n" and selection["member"].astype(bool).any():
                ax.scatter(selection["budget"], selection["member_n"], marker="_", color="k",
                           s=200, zorder=5, label="selected family member")
        if fitted.max() > fitted.min():
            ax.axvspan(fitted.min(), fitted.max(), color="0.9", zorder=0, label="fitted range")
        else:  # one budget: a zero-width span would make the log axis singular
            ax.axvline(fitted.min(), color="0.8", zorder=0, label="fitted budget")
        ax.set_xlim(span[0], span[-1])  # also when nothing but that line is drawn
        _budget_axis(ax, label)
    axes[0].set_title("Compute-optimal model size")
    axes[1].set_title("Compute-optimal training tokens")
    return fig


def frontier_figure(points, groups, iso, param, colours, selection):
    fig, ax = plt.subplots(figsize=(7, 5))
    branch = branch_mask(points)
    for part, marker, label in ((~branch, "o", "runs"), (branch, BRANCH_MARKER, BRANCH_LABEL)):
        if part.any():
            ax.scatter(points["budget"][part], points["loss"][part], c=colours(groups[part]),
                       s=12, alpha=0.5, marker=marker, label=label)
    used = [b for b in iso.budgets if b.used]
    if used:
        ax.scatter([b.budget for b in used], [b.loss_opt for b in used], marker="*", s=160,
                   c=[colours(b.budget) for b in used], edgecolor="k", zorder=4,
                   label="isoFLOP minima")
    lo = points["budget"].min() / 1.5
    hi = max(points["budget"].max(), max(selection["budget"]) if selection is not None else 0)
    span = np.geomspace(lo, hi * 1.5, 200)
    if iso.loss_law is not None:
        ax.plot(span, iso.loss_law(span), color="C3",
                label=f"Approach 2: L_opt ∝ C^{iso.loss_law.exponent:.3f}")
    if param is not None:
        ax.plot(span, param.optimum(span)[2], color="C0", ls="--",
                label=f"Approach 3 frontier (E = {param.E:.3f})")
        ax.axhline(param.E, color="C0", lw=0.7, ls=":", label="irreducible loss E")
    _budget_axis(ax, "validation loss (nats/token)", log_y=False)
    ax.set_title("Loss frontier: best achievable loss per budget")
    return fig


def residual_figure(points, groups, param: ParametricFit, colours,
                    drawn: np.ndarray | None = None):
    """Every run's residual in the histogram; the ``drawn`` ones (default all) as markers."""
    n, d, loss = (points[c].to_numpy(float) for c in ("n", "tokens", "loss"))
    resid = np.log(param.predict(n, d)) - np.log(loss)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 1]})
    drawn = np.arange(n.size) if drawn is None else drawn
    branch = branch_mask(points)
    for g in np.unique(groups[drawn]):
        sel = drawn[groups[drawn] == g]
        label = f"{g:.2g} FLOPs"
        for part, marker in ((sel[~branch[sel]], "o"), (sel[branch[sel]], BRANCH_MARKER)):
            if part.size:
                axes[0].scatter(n[part], resid[part], color=colours(g), s=16, label=label,
                                marker=marker)
                label = None
    _branch_key(axes[0], branch)
    if np.unique(groups).size <= 12:
        axes[0].legend(fontsize=7, title="budget", ncol=2)
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("parameters N (count, log scale)")
    axes[0].set_ylabel("log L_pred − log L_observed")
    axes[0].set_title(f"Approach 3 residuals (colour = budget; summed Huber "
                      f"{param.objective:.3g})")
    axes[0].grid(alpha=0.3)
    axes[1].hist(resid, bins=30, orientation="horizontal", color="0.5")
    axes[1].set_xlabel("points")
    axes[1].set_title("distribution")
    axes[1].sharey(axes[0])
    return fig


def release_figure(selection: pd.DataFrame):
    """Chosen members beside FLAME-MoE's released models: N and tokens per target budget."""
    rel = selection[selection["released_name"].astype(str) != ""]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, fit_col, chosen_col, released_col, label in (
            (axes[0], "n_opt", "member_n", "released_n", "parameters N (as the fit counts N)"),
            (axes[1], "d_opt", "member_tokens", "released_tokens", "training tokens D")):
        ax.plot(selection["budget"], selection[fit_col], color="C0", marker="D", mfc="none",
                label="the law's optimum")
        if selection["member"].astype(bool).any():
            ax.scatter(selection["budget"], selection[chosen_col], marker="o", s=70,
                       color="C2", zorder=4, label="chosen member")
        ax.scatter(rel["budget"], rel[released_col], marker="x", s=80, color="C3", zorder=5,
                   label="FLAME-MoE released")
        for row in rel.to_dict(orient="records"):
            same = "" if row["released_same"] else f" (chose {row['member'] or '-'})"
            ax.annotate(f"{row['released_name']}{same}", (row["budget"], row[released_col]),
                        textcoords="offset points", xytext=(5, -12), fontsize=7)
        _budget_axis(ax, label)
    axes[0].set_title("Model size: chosen vs released")
    axes[1].set_title("Tokens: chosen vs released")
    return fig


def _budget_axis(ax, ylabel: str, log_y: bool = True) -> None:
    """Compute budget on a log x axis (and y log unless told), labels, grid and legend."""
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("compute budget C (FLOPs)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)

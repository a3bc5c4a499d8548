"""The design figure: predicted 95% half-width of a against compute, one point per design."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from analysis.figures import save_figure  # noqa: E402  (PNG + SVG, the convention)
from sweep.io import FIGURES_DIR  # noqa: E402

MARKERS = {"approach2": "s", "approach3": "o"}


def design_figure(sweep_dir: Path, entries: list[dict], screened: list[tuple[float, float]],
                  chosen: str | None, target: float | None, approach: str,
                  cap: float | None = None) -> list[Path]:
    """``figures/design.{png,svg}``: simulated designs (both approaches), the screened
    candidates' asymptotic Approach 3 half-widths in grey, the target as a line."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    if screened:
        xs, ys = zip(*[(f, h) for f, h in screened if h < 10])
        ax.scatter(xs, ys, s=6, color="0.8", label="screened candidates (asymptotic, A3)",
                   zorder=1)
    for i, entry in enumerate(entries):
        colour = f"C{i % 10}"
        for name, marker in MARKERS.items():
            value = entry["a_halfwidth"].get(name)
            if value is None:
                continue
            ax.scatter(entry["flops"], value, marker=marker, s=50 if i < 2 else 22,
                       color=colour, edgecolor="k" if entry["name"] == chosen else colour,
                       zorder=3, label=f"{_short(entry['name'])} ({name[-1]})" if i < 2
                       else None)
            branch = (entry.get("branches") or {}).get("flops")
            if branch:  # the same points as trunks + cooldowns (precision assumed equal)
                ax.scatter(branch, value, marker=marker, s=50 if i < 2 else 22,
                           facecolor="none", edgecolor=colour, zorder=3,
                           label="hollow: the same points as branches (trunks + "
                           "cooldowns; precision assumed)" if i == 0 and name == "approach3"
                           else None)
                ax.annotate("", (branch, value), (entry["flops"], value), zorder=2,
                            arrowprops={"arrowstyle": "->", "color": colour, "lw": 0.6})
    if target is not None:
        ax.axhline(target, color="k", ls="--", lw=0.8, label=f"target ({approach}) {target:.3g}")
    if cap is not None:
        ax.axvline(cap, color="k", ls=":", lw=0.8, label=f"compute cap {cap:.3g} FLOPs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # less than a decade shown: no crowded minor labels
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training compute of the design (FLOPs)")
    ax.set_ylabel("predicted 95% half-width of a")
    ax.set_title("Designs: precision of the exponent a vs compute "
                 "(o Approach 3, s Approach 2)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(True, which="both", alpha=0.3)
    out_dir = Path(sweep_dir) / FIGURES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, out_dir, "design")


def _short(name: str) -> str:
    return name if len(name) < 40 else name[:37] + "..."

"""Routing health per run: results.csv's ``routing_*`` columns, ``routing.csv`` (one row per
run and MoE layer) and ``figures/routing.{png,svg}``.

What each trainer reports (``analysis.sources.read_routing``): the embedded trainer, per MoE
layer, the share of routed tokens each expert took, the busiest expert's load over the mean,
the router's entropy and the aux and z losses, over the training steps since the previous
evaluation (its last routing record); Megatron-LM, the load-balancing and z losses (means over
the MoE layers in train.log and TensorBoard; per layer in TensorBoard with
``--moe-per-layer-logging``), read over the last quarter of the iterations.

A collapsed router is reported in ``routing_status``, not in ``flag``: the run's loss is what
that configuration reached under the recipe, so it stays in the fit (excluding it would credit
the law with a routing the family did not achieve); the column says which points to doubt.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.settings import FitSettings
from analysis.sources import LAYER_KEYS, Routing
from sweep.io import FIGURES_DIR

ROUTING_CSV = "routing.csv"
ROUTING_COLUMNS = ("routing_load_max_mean", "routing_min_expert_fraction", "routing_entropy",
                   "routing_aux_loss", "routing_z_loss", "routing_status", "routing_reason")
NO_DATA = "no routing data (a dense model, the simulated trainer, or no MoE losses logged)"


def health(routing: Routing | None, settings: FitSettings) -> dict:
    """One run's ``routing_*`` columns:

    - ``routing_load_max_mean``: the worst MoE layer's busiest-expert share over the mean
      share (1 = balanced; E/k = every token on the same k experts);
    - ``routing_min_expert_fraction``: the worst layer's least-used expert's share RELATIVE TO
      UNIFORM, i.e. x E (1 = balanced, 0 = an expert that got nothing);
    - ``routing_entropy``: mean over layers of the router's normalised entropy (1 = uniform
      probabilities: an undecided router, not a collapsed one);
    - ``routing_aux_loss``, ``routing_z_loss``: means over layers, without coefficients;
    - ``routing_status``: ok | collapsed | unknown, ``routing_reason``: why (worst evidence).
    NaN where the source does not say (Megatron reports no per-expert loads)."""
    if routing is None:
        return _columns(status="unknown", reason=NO_DATA)
    layers = routing.layers
    loads = [(lay["load_max_mean"], lay["layer"]) for lay in layers if "load_max_mean" in lay]
    shares = [(min(lay["expert_fraction"]) * len(lay["expert_fraction"]),
               int(np.argmin(lay["expert_fraction"])), lay["layer"])
              for lay in layers if lay.get("expert_fraction")]
    entropy = [lay["entropy"] for lay in layers if "entropy" in lay]
    cols = _columns(load=max(loads)[0] if loads else math.nan,
                    share=min(shares)[0] if shares else math.nan,
                    entropy=float(np.mean(entropy)) if entropy else math.nan,
                    aux=routing.aux_loss, z=routing.z_loss)
    where = f"{routing.source} at iteration {routing.iteration}"
    problems = _problems(loads, shares, _aux_by_layer(routing), settings)
    if problems and entropy:  # near 1: an undecided router (tokens go where ties fall)
        problems.append(f"router entropy {np.mean(entropy):.3g} of uniform")
    if problems:
        return cols | {"routing_status": "collapsed",
                       "routing_reason": f"{'; '.join(problems)} ({where})"}
    if not (loads or shares or np.isfinite(routing.aux_loss)
            or any("aux_loss" in lay for lay in layers)):
        return cols | {"routing_status": "unknown",
                       "routing_reason": f"no load or load-balancing loss in {where}"}
    return cols | {"routing_status": "ok", "routing_reason": f"checked {where}"}


def _columns(load=math.nan, share=math.nan, entropy=math.nan, aux=math.nan, z=math.nan,
             status="", reason="") -> dict:
    return dict(zip(ROUTING_COLUMNS, (load, share, entropy, aux, z, status, reason)))


def _aux_by_layer(routing: Routing) -> list[tuple[float, str]]:
    """(load-balancing loss, what it is) per layer, or the layer mean when that is all."""
    per_layer = [(lay["aux_loss"], f"layer {lay['layer']}") for lay in routing.layers
                 if "aux_loss" in lay and np.isfinite(lay["aux_loss"])]
    if per_layer:
        return per_layer
    return [(routing.aux_loss, "mean over layers")] if np.isfinite(routing.aux_loss) else []


def _problems(loads, shares, aux, settings: FitSettings) -> list[str]:
    """One phrase per threshold the worst layer crosses."""
    out = []
    if shares and min(shares)[0] < settings.routing_min_share:
        share, expert, layer = min(shares)
        out.append(f"layer {layer}: expert {expert} took {share:.3g} of its uniform share "
                   f"(< fit.routing_min_share={settings.routing_min_share:g})")
    if loads and max(loads)[0] > settings.routing_max_load:
        load, layer = max(loads)
        out.append(f"layer {layer}: busiest expert at {load:.3g}x the mean load "
                   f"(> fit.routing_max_load={settings.routing_max_load:g})")
    if aux and max(aux)[0] > settings.routing_max_aux_loss:
        value, what = max(aux)
        out.append(f"load-balancing loss {value:.3g} ({what}) "
                   f"> fit.routing_max_aux_loss={settings.routing_max_aux_loss:g}")
    return out


def layer_rows(run_id: str, routing: Routing | None) -> list[dict]:
    """routing.csv rows of one run: one per MoE layer (one row, layer NaN, when only the
    means over layers are known); expert shares as space-separated numbers."""
    if routing is None:
        return []
    base = {"run_id": run_id, "source": routing.source, "iteration": routing.iteration}
    if not routing.layers:
        return [base | {"layer": math.nan, "aux_loss": routing.aux_loss,
                        "z_loss": routing.z_loss}]
    rows = []
    for lay in routing.layers:
        row = base | {k: lay.get(k, math.nan) for k in ("layer", *LAYER_KEYS)}
        shares = lay.get("expert_fraction")
        row["expert_fraction"] = " ".join(f"{x:.6g}" for x in shares) if shares else ""
        row["min_expert_fraction"] = min(shares) * len(shares) if shares else math.nan
        rows.append(row)
    return rows


def routing_figure(sweep_dir: Path, points: pd.DataFrame, settings: FitSettings) -> list[Path]:
    """``figures/routing.{png,svg}``: the worst layer's max/mean expert load against N, one
    series per budget, the collapse threshold as a line (the load-balancing loss instead when
    the runs report no loads: Megatron's). No figure without routing data."""
    metric, limit, label = _plotted(points, settings)
    if metric is None:
        return []
    from analysis.figures import BudgetColours, plt, save_figure  # matplotlib only when drawn

    shown = points[np.isfinite(pd.to_numeric(points[metric], errors="coerce"))]
    budgets = shown["budget"].to_numpy(float)
    colours = BudgetColours(budgets)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for budget, group in shown.sort_values("n").groupby("budget"):
        y = pd.to_numeric(group[metric]).to_numpy(float)
        ax.plot(group["n"], y, "o-", color=colours(budget), ms=5, label=f"{budget:.2g} FLOPs")
        bad = (group["routing_status"] == "collapsed").to_numpy()
        if bad.any():
            ax.scatter(group["n"][bad], y[bad], s=120, facecolors="none", edgecolors="red",
                       zorder=5)
    ax.axhline(limit, color="red", ls="--", lw=1, label=f"fit.{_SETTING[metric]}={limit:g}")
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    collapsed = int((shown["routing_status"] == "collapsed").sum())
    ax.set(xscale="log", xlabel=f"N ({settings.n_column})", ylabel=label,
           title=f"Routing: {collapsed} of {len(shown)} runs collapsed (red rings; any rule, "
                 "see routing_reason)")
    ax.legend(fontsize=7)
    out_dir = Path(sweep_dir) / FIGURES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, out_dir, "routing")


_SETTING = {"routing_load_max_mean": "routing_max_load",
            "routing_aux_loss": "routing_max_aux_loss"}


def _plotted(points: pd.DataFrame, settings: FitSettings) -> tuple[str | None, float, str]:
    for metric, limit, label in (
            ("routing_load_max_mean", settings.routing_max_load,
             "busiest expert / mean load (worst MoE layer)"),
            ("routing_aux_loss", settings.routing_max_aux_loss,
             "load-balancing loss without coefficient (mean over layers)")):
        if metric in points and np.isfinite(pd.to_numeric(points[metric], errors="coerce")).any():
            return metric, limit, label
    return None, math.nan, ""

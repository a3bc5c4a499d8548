"""A release's check: each release run's achieved loss against the law's prediction interval
(both approaches), and whether the picked member beat its neighbours at that budget.

A release is a sweep directory of its own (``flame release`` plans it, by default
``<source>/release/``) holding, beside the usual files:

- ``release.json``: the source sweep (its path), the sha256 of the source's fit.json and
  selection.csv when the release was planned, the law's approach, and the picks (budget,
  member, run_id, and whether the selection or the user named it);
- ``prediction.csv``: one row per release run, written when the release is planned, before
  any of it trains (the prediction is registered before the outcome): run_id, budget, member,
  n, tokens, how, and ``predicted_<approach>[_low|_high|_scatter_sd|_reason]`` for both
  approaches (``analysis.fit.prediction.prediction_columns``).

``check_table`` joins these with the release's results.csv (the achieved loss: a run flagged
``ok``) and the source's results.csv (the neighbours); ``write_check`` adds the check's columns
to the release's results.csv, so the results carry it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.csvsafe import write_csv
from analysis.fit.prediction import APPROACHES, stored_prediction
from analysis.fit.selection import member_n
from sweep.errors import ConfigError
from sweep.family import build_family
from sweep.io import RESULTS_CSV

RELEASE_DIR = "release"
RELEASE_JSON = "release.json"
PREDICTION_CSV = "prediction.csv"
RELEASE_VERSION = 1
CHECK_COLUMNS = ("achieved", *(f"inside_{a}" for a in APPROACHES), "neighbours",
                 "best_of_neighbours", "best_neighbour", "best_neighbour_loss")
SAME_BUDGET_RTOL = 1e-6


@dataclass(frozen=True)
class ReleaseLink:
    """``release.json``: what a release was planned from."""

    source: str
    """The source sweep directory (absolute)."""
    fit_sha256: str
    """sha256 of the source's fit.json when the release was planned."""
    selection_sha256: str
    """sha256 of its selection.csv then ("" when the picks were all named by hand)."""
    approach: str
    """The law the selection used (approach2 | approach3)."""
    picks: list[dict[str, Any]]
    """One per release run: budget, member, run_id, how (selection | by hand)."""
    version: int = RELEASE_VERSION
    """The file's format."""

    def to_json(self) -> str:
        """The file's text."""
        return json.dumps({"version": self.version, "source": self.source,
                           "fit_sha256": self.fit_sha256,
                           "selection_sha256": self.selection_sha256,
                           "approach": self.approach, "picks": self.picks}, indent=2) + "\n"


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes ("" when it does not exist)."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def read_link(release_dir: Path) -> ReleaseLink | None:
    """``release.json`` of ``release_dir``; None when it is not a release."""
    path = Path(release_dir) / RELEASE_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("version", 0) > RELEASE_VERSION:
            raise ConfigError(f"{path}: version {data['version']} is newer than this flame "
                              "reads; upgrade flame")
        return ReleaseLink(**{k: data[k] for k in ("source", "fit_sha256", "selection_sha256",
                                                  "approach", "picks")},
                           version=data.get("version", 0))
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a release.json ({type(err).__name__}: {err}); plan "
                          "the release again with `flame release`") from None


def find_release(sweep_dir: Path) -> Path | None:
    """The release of ``sweep_dir``: itself when it is one, else ``<sweep_dir>/release/``."""
    sweep_dir = Path(sweep_dir)
    for candidate in (sweep_dir, sweep_dir / RELEASE_DIR):
        if (candidate / RELEASE_JSON).is_file() and (candidate / PREDICTION_CSV).is_file():
            return candidate
    return None


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, dtype={"run_id": str}) if Path(path).is_file() else None


def check_table(release_dir: Path) -> pd.DataFrame:
    """prediction.csv with the achieved loss, whether each approach's interval holds it, and
    the neighbours check (one row per release run)."""
    release_dir = Path(release_dir)
    predicted = _read(release_dir / PREDICTION_CSV)
    if predicted is None:
        raise ConfigError(f"{release_dir}: no {PREDICTION_CSV}; plan the release with "
                          "`flame release`")
    results = _read(release_dir / RESULTS_CSV)
    link = read_link(release_dir)
    source = _read(Path(link.source) / RESULTS_CSV) if link else None
    achieved = _achieved(results)
    rows = []
    for row in predicted.to_dict(orient="records"):
        loss = achieved.get(row["run_id"])
        out = dict(row)
        out["achieved"] = loss
        for approach in APPROACHES:
            out[f"inside_{approach}"] = stored_prediction(row, approach).inside(loss)
        out.update(neighbours(row, loss, results, source, link))
        rows.append(out)
    return pd.DataFrame(rows)


def _achieved(results: pd.DataFrame | None) -> dict[str, float]:
    """The final validation loss of each run collect flagged ok."""
    if results is None or "flag" not in results:
        return {}
    ok = results[results["flag"] == "ok"]
    return {str(r): float(v) for r, v in zip(ok["run_id"], ok["final_val_loss"])
            if pd.notna(v)}


def _losses_by_member(results: pd.DataFrame | None, budget: float,
                      exclude: str = "") -> dict[str, float]:
    """Mean final loss of each member's ok runs at ``budget`` (replicates averaged)."""
    if results is None or not {"flag", "budget", "member", "final_val_loss"} <= set(results):
        return {}
    at = results[(results["flag"] == "ok") & np.isclose(results["budget"].astype(float),
                                                        budget, rtol=SAME_BUDGET_RTOL)]
    if exclude:
        at = at[at["run_id"] != exclude]
    return {str(k): float(v) for k, v in at.groupby("member")["final_val_loss"].mean().items()}


def neighbours(row: dict, loss: float | None, results: pd.DataFrame | None,
               source: pd.DataFrame | None, link: ReleaseLink | None) -> dict[str, Any]:
    """Was the pick the best of its neighbours at its budget? The neighbours are the
    members next smaller and next larger in N that were trained at the same budget, in the
    source sweep or in the release itself (replicates averaged)."""
    budget, member = float(row["budget"]), str(row["member"])
    others = {**_losses_by_member(source, budget),
              **_losses_by_member(results, budget, exclude=str(row["run_id"]))}
    others.pop(member, None)
    none = {"neighbours": "", "best_of_neighbours": None, "best_neighbour": "",
            "best_neighbour_loss": None}
    if not others or loss is None or link is None:
        return none
    sizes = _member_sizes(link, set(others) | {member}, row)
    if member not in sizes:
        return none
    smaller = [m for m in others if m in sizes and sizes[m] < sizes[member]]
    larger = [m for m in others if m in sizes and sizes[m] > sizes[member]]
    near = [max(smaller, key=sizes.get)] if smaller else []
    near += [min(larger, key=sizes.get)] if larger else []
    if not near:
        return none
    best = min(near, key=others.get)
    return {"neighbours": "; ".join(f"{m} {others[m]:.4f}" for m in near),
            "best_of_neighbours": bool(loss <= others[best]), "best_neighbour": best,
            "best_neighbour_loss": others[best]}


def _member_sizes(link: ReleaseLink, names: set[str], row: dict) -> dict[str, float]:
    """N of each named member, from the source's family (as the fit counts N)."""
    from sweep.config import read_config

    config = read_config(Path(link.source)) or {}
    n_column = str(row.get("n_column") or "n_active_flame")
    try:
        family = build_family(config["family"])
    except (KeyError, ConfigError):
        return {}
    return {m.name: float(member_n(m.arch, n_column)) for m in family if m.name in names}


def write_check(release_dir: Path) -> pd.DataFrame:
    """Add the check's columns (prediction and outcome) to the release's results.csv; return
    the check table."""
    release_dir = Path(release_dir)
    table = check_table(release_dir)
    results = _read(release_dir / RESULTS_CSV)
    if results is not None:
        extra = [c for c in table.columns if c.startswith("predicted_") or c in CHECK_COLUMNS]
        results = results.drop(columns=[c for c in extra if c in results.columns])
        merged = results.merge(table[["run_id", *extra]], on="run_id", how="left")
        write_csv(release_dir / RESULTS_CSV, merged)
    return table


def check_lines(table: pd.DataFrame) -> list[str]:
    """The check as a few printed lines: one per release run and approach."""
    lines = []
    for row in table.to_dict(orient="records"):
        confidence = row.get("confidence")
        level = "" if confidence is None or pd.isna(confidence) else f"{confidence:.0%} "
        achieved = row.get("achieved")
        got = "not finished" if achieved is None or pd.isna(achieved) else f"{achieved:.4f}"
        lines.append(f"{row['budget']:.3g} FLOPs  {row['member']} ({row['run_id']}): achieved "
                     f"{got}")
        for approach in APPROACHES:
            p = stored_prediction(row, approach)
            if p.loss is None:
                lines.append(f"    {approach}: no prediction ({p.reason})")
                continue
            span = (f"{level}interval [{p.low:.4f}, {p.high:.4f}]" if p.low is not None
                    else f"no interval ({p.reason})")
            verdict = row.get(f"inside_{approach}")
            said = "" if verdict is None or _missing(verdict) else \
                ("  inside" if verdict else "  OUTSIDE")
            lines.append(f"    {approach}: predicted {p.loss:.4f}, {span}{said}")
        if row.get("neighbours"):
            best = row.get("best_of_neighbours")
            lines.append(f"    neighbours at this budget: {row['neighbours']}: the pick is "
                         + ("the best" if best else f"beaten by {row['best_neighbour']}"))
    return lines


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)

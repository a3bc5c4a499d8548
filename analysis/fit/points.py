"""The points a fit uses: results.csv (a sweep) or any CSV of ``budget, n, loss[, tokens]``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.collect.results import read_csv
from analysis.fit.degenerate import DUPLICATE_REASON
from analysis.fit.parametric import tokens_6nd
from analysis.settings import FitSettings
from sweep.errors import ConfigError

BARE_COLUMNS = ("budget", "n", "loss")
# A trunk (planner.strategy=branches) trains at the stable learning rate and never cools down:
# its loss is not a point of the law (its branches' are), and its budget is its own FLOPs,
# not an isoFLOP budget.
TRUNK_REASON = "trunk: stable learning rate, no cooldown (its branches are the points)"
FIT_COLUMNS = ("budget", "n", "tokens", "loss", "used", "excluded_reason")


def load_sweep_results(path: Path, settings: FitSettings) -> pd.DataFrame:
    """results.csv rows as fit points: N from ``settings.n_column``, loss = final_val_loss."""
    table = read_csv(path, "results")
    needed = ["budget", settings.n_column, "tokens", "final_val_loss", "flag"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ConfigError(f"results: {path} lacks columns {missing}; re-run `flame collect`, "
                          "or fit a plain CSV with results=FILE.csv (columns budget, n, loss)")
    points = table.copy()
    points["n"] = pd.to_numeric(table[settings.n_column], errors="coerce")
    points["loss"] = pd.to_numeric(table["final_val_loss"], errors="coerce")
    points["budget"] = pd.to_numeric(table["budget"], errors="coerce")
    points["tokens"] = pd.to_numeric(table["tokens"], errors="coerce")
    flags = table["flag"].astype(str)
    raw = table["reason"] if "reason" in table.columns else pd.Series(pd.NA, index=table.index)
    reasons = raw.astype(object).where(raw.notna(), "").astype(str)
    excluded = np.where(flags.isin(settings.include_flags), "",
                        "flag " + flags + ": " + reasons)
    excluded = np.where(roles(table) == "trunk", TRUNK_REASON, excluded)
    return _finish(points, pd.Series(excluded, index=table.index), settings)


def roles(table: pd.DataFrame) -> pd.Series:
    """Each row's ``role`` ("" | trunk | branch); "" for a table without the column (an older
    results.csv, a plain CSV)."""
    if "role" not in table.columns:
        return pd.Series("", index=table.index)
    return table["role"].astype(object).where(table["role"].notna(), "").astype(str)


def branch_summary(points: pd.DataFrame) -> dict:
    """How many fitted points are branches, from which trunks; how many trunks are listed."""
    role = roles(points)
    used = points["used"].to_numpy(bool)
    branch = used & (role == "branch").to_numpy()
    parents = points.loc[branch, "parent"].astype(str) if "parent" in points.columns \
        else pd.Series(dtype=str)
    return {"points": int(branch.sum()), "independent_points": int((used & (role == "")
                                                                      .to_numpy()).sum()),
            "trunks_listed": int((role == "trunk").sum()),
            "from_trunks": {str(k): int(v) for k, v in parents.value_counts().sort_index()
                            .items()}}


def load_bare_csv(path: Path, settings: FitSettings) -> pd.DataFrame:
    """Any CSV with ``budget, n, loss`` and optional ``tokens`` (default budget / (6 n))."""
    table = read_csv(path, "results")
    missing = [c for c in BARE_COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(f"results={path}: missing columns {missing}; a plain CSV needs "
                          "budget, n, loss (and optionally tokens); rename its columns")
    points = table.copy()
    for col in ("budget", "n", "loss"):
        points[col] = pd.to_numeric(table[col], errors="coerce")
    if "tokens" in table.columns:
        points["tokens"] = pd.to_numeric(table["tokens"], errors="coerce")
    else:
        # No plan, no FLOP formula: the C = 6.N.D convention (Hoffmann et al. 2022).
        points["tokens"] = tokens_6nd(points["budget"], points["n"])
    return _finish(points, pd.Series([""] * len(table), index=table.index), settings)


def _finish(points: pd.DataFrame, excluded: pd.Series, settings: FitSettings) -> pd.DataFrame:
    """Mark invalid, excluded-budget and dropped points; keep every row with its reason."""
    values = points[["budget", "n", "tokens", "loss"]].to_numpy(float)
    invalid = ~(np.isfinite(values) & (values > 0)).all(axis=1)
    excluded = excluded.where(~(invalid & (excluded == "")),
                              "budget, n, tokens or loss missing or not positive")
    if settings.exclude_budgets:
        drop = np.isclose(points["budget"].to_numpy(float)[:, None],
                          np.array(settings.exclude_budgets)[None], rtol=1e-6).any(axis=1)
        excluded = excluded.where(~(drop & (excluded == "")), "budget in fit.exclude_budgets")
    excluded = _mark_duplicates(points, excluded)
    if settings.drop_highest_loss:
        candidates = points["loss"].where(excluded == "")
        worst = candidates.nlargest(settings.drop_highest_loss).index
        excluded.loc[worst] = "one of the fit.drop_highest_loss highest losses"
    points["excluded_reason"] = excluded.to_numpy()
    points["used"] = points["excluded_reason"] == ""
    return points


def _mark_duplicates(points: pd.DataFrame, excluded: pd.Series) -> pd.Series:
    """Exclude, as duplicates, used rows equal to an earlier used row in budget, n, tokens and
    loss (and run_id when the table has one: distinct runs are never merged)."""
    key = ["budget", "n", "tokens", "loss"] + (["run_id"] if "run_id" in points else [])
    used = excluded == ""
    repeated = points.loc[used, key].duplicated(keep="first")
    return excluded.where(~repeated.reindex(points.index, fill_value=False), DUPLICATE_REASON)


def used_points(points: pd.DataFrame) -> pd.DataFrame:
    """The rows the fits use."""
    return points[points["used"]].reset_index(drop=True)

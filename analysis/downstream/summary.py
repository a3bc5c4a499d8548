"""``downstream.json``: accuracy against loss for a sweep, and the release's accuracy predicted
from the sweep alone against what it scored (fields: docs/design.md, "downstream.json").

The sweep whose runs are fitted is the *source*; its release (``<source>/release/``, linked
back by ``release.json``'s ``source``) holds the models whose accuracy is predicted. Called on
either, the same document is computed and written into the directory it was called on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.downstream.ladder import SigmoidFit, fit_sigmoid, spearman
from analysis.downstream.results import (
    ACC_PREFIX,
    accuracy_tasks,
    checkpoint_labels,
    eval_dir,
    iteration_of,
    read_scores,
)
from analysis.fit.result import read_fit
from analysis.jsonsafe import dumps
from sweep.errors import ConfigError
from sweep.io import FIT_JSON, RESULTS_CSV, atomic_write_text

DOWNSTREAM_JSON = "downstream.json"
DOWNSTREAM_VERSION = 1
RELEASE_DIR, RELEASE_JSON, PREDICTION_CSV = "release", "release.json", "prediction.csv"
LOSS = "final_val_loss"


def release_pair(sweep_dir: Path) -> tuple[Path, Path | None]:
    """(source sweep, its release or None) for a source or a release directory."""
    sweep_dir = Path(sweep_dir)
    link = sweep_dir / RELEASE_JSON
    if link.is_file():
        source = json.loads(link.read_text()).get("source")
        return Path(source), sweep_dir
    release = sweep_dir / RELEASE_DIR
    return sweep_dir, release if (release / RELEASE_JSON).is_file() else None


def _results(sweep_dir: Path) -> pd.DataFrame | None:
    path = sweep_dir / RESULTS_CSV
    return pd.read_csv(path) if path.is_file() else None


def law_losses(sweep_dir: Path, results: pd.DataFrame) -> np.ndarray | None:
    """The sweep's fitted law (Approach 3) at each run's parameters and tokens."""
    if not (sweep_dir / FIT_JSON).is_file():
        return None
    fit = read_fit(sweep_dir)
    law = fit.law()
    column = fit.fit_settings().n_column
    if law is None or column not in results or "tokens" not in results:
        return None
    return np.asarray(law.loss(results[column].to_numpy(float),
                               results["tokens"].to_numpy(float)), float)


def summarise(sweep_dir: Path, n_boot: int = 200, seed: int = 0
              ) -> tuple[dict[str, Any], dict[str, SigmoidFit]]:
    """The downstream document of ``sweep_dir`` (a source sweep or its release), and the
    sigmoid fitted for each task."""
    source, release = release_pair(Path(sweep_dir))
    results = _results(source)
    if results is None or not accuracy_tasks(results):
        raise ConfigError(f"{source}/{RESULTS_CSV}: no acc_<task> columns; run `flame eval "
                          f"sweep_dir={source}` first")
    ok = results[results["flag"] == "ok"].reset_index(drop=True)
    predicted = law_losses(source, ok)
    tasks, fits = [], {}
    for task in accuracy_tasks(results):
        acc = ok[f"{ACC_PREFIX}{task}"].to_numpy(float)
        loss = ok[LOSS].to_numpy(float)
        samples = _samples(source, ok, task)
        fits[task] = fit = fit_sigmoid(loss, acc, n_boot=n_boot, seed=seed, samples=samples)
        tasks.append(_task_row(task, fit, loss, acc, predicted, n_boot))
    document = {"version": DOWNSTREAM_VERSION, "source": str(source),
                "release_dir": None if release is None else str(release), "loss": LOSS,
                "tasks": tasks,
                "release": _release_rows(source, release, fits) if release else [],
                "checkpoints": _checkpoint_rows(source) + (_checkpoint_rows(release)
                                                           if release else [])}
    return document, fits


def _samples(sweep_dir: Path, ok: pd.DataFrame, task: str) -> int | None:
    for run_id in ok["run_id"]:
        score = read_scores(eval_dir(sweep_dir, str(run_id))).get(task)
        if score is not None and score.samples:
            return score.samples
    return None


def _task_row(task: str, fit: SigmoidFit, loss: np.ndarray, acc: np.ndarray,
              predicted: np.ndarray | None, n_boot: int) -> dict[str, Any]:
    row: dict[str, Any] = {"task": task, "runs": int(np.isfinite(acc).sum()),
                           "acc_min": _num(np.nanmin(acc)) if np.isfinite(acc).any() else None,
                           "acc_max": _num(np.nanmax(acc)) if np.isfinite(acc).any() else None,
                           "spearman_val_loss": _num(spearman(loss, acc)),
                           "spearman_law_loss": None if predicted is None else
                           _num(spearman(predicted, acc))}
    params = fit.params or {}
    row.update({k: _num(params.get(k)) for k in ("a", "k", "L0", "b")})
    row.update({"rmse": _num(fit.rmse), "n_boot": n_boot, "boot_converged": len(fit.boot),
                "samples": fit.samples, "reason": fit.reason})
    return row


def _prediction_losses(release: Path) -> dict[str, tuple[float, str]]:
    """Release run -> (the law's predicted final loss, which approach) from prediction.csv."""
    path = release / PREDICTION_CSV
    if not path.is_file():
        return {}
    table = pd.read_csv(path)
    out = {}
    for row in table.to_dict(orient="records"):
        for approach in ("approach3", "approach2"):
            value = row.get(f"predicted_{approach}")
            if value is not None and math.isfinite(float(value)):
                out[str(row["run_id"])] = (float(value), approach)
                break
    return out


def _release_rows(source: Path, release: Path, fits: dict[str, SigmoidFit]) -> list[dict]:
    """Each release run and task: accuracy predicted from the sweep alone (the law's loss,
    then the sigmoid), with its interval, against the accuracy it scored."""
    results = _results(release)
    predictions = _prediction_losses(release)
    rows = []
    run_ids = [str(r) for r in results["run_id"]] if results is not None else \
        sorted(predictions)
    achieved = dict(zip(run_ids, results[LOSS])) if results is not None and LOSS in results \
        else {}
    for run_id in run_ids:
        scores = read_scores(eval_dir(release, run_id))
        for task, fit in fits.items():
            loss, approach = predictions.get(run_id, (math.nan, ""))
            row: dict[str, Any] = {"run_id": run_id, "task": task, "approach": approach,
                                   "predicted_loss": _num(loss),
                                   "achieved_loss": _num(achieved.get(run_id))}
            if fit.params is not None and math.isfinite(loss):
                interval = fit.interval(loss)
                row.update({"predicted_acc": _num(float(fit.predict(loss))),
                            "predicted_low": interval[0] if interval else None,
                            "predicted_high": interval[1] if interval else None})
            if fit.params is not None and math.isfinite(row["achieved_loss"] or math.nan):
                row["acc_at_achieved_loss"] = _num(float(fit.predict(row["achieved_loss"])))
            score = scores.get(task)
            row["scored_acc"] = None if score is None else _num(score.acc)
            row["scored_stderr"] = None if score is None else _num(score.stderr)
            low, high = row.get("predicted_low"), row.get("predicted_high")
            row["inside"] = (None if score is None or low is None
                             else bool(low <= score.acc <= high))
            rows.append(row)
    return rows


def _checkpoint_rows(sweep_dir: Path) -> list[dict]:
    """Every evaluated checkpoint of every run (kept ones: training dynamics)."""
    runs = sweep_dir / "runs"
    rows = []
    for run in sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []:
        for label in checkpoint_labels(sweep_dir, run):
            for task, score in read_scores(eval_dir(sweep_dir, run, label)).items():
                rows.append({"sweep": sweep_dir.name, "run_id": run, "checkpoint": label,
                             "iteration": iteration_of(label), "task": task,
                             "acc": _num(score.acc), "stderr": _num(score.stderr)})
    return rows


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def write_downstream(sweep_dir: Path, n_boot: int = 200, seed: int = 0) -> dict[str, Any]:
    """Compute and write ``<sweep_dir>/downstream.json`` (atomically) and its figures."""
    from analysis.downstream.plots import plot_downstream

    document, fits = summarise(sweep_dir, n_boot, seed)
    document["figures"] = plot_downstream(Path(sweep_dir), document, fits)
    atomic_write_text(Path(sweep_dir) / DOWNSTREAM_JSON, dumps(document))
    return document

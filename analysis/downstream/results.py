"""Reading what ``flame eval`` left in a run directory: lm-eval's results JSON, one folder per
evaluated checkpoint.

``runs/<id>/eval/<label>/`` holds one or more files in lm-eval's results format (what
``lm_eval.simple_evaluate`` returns and ``lm_eval --output_path`` writes: ``results`` ->
task -> ``"acc,none"``, ``"acc_stderr,none"``; ``n-samples``; ``versions``; ``configs``).
``label`` is ``final`` (the run's last checkpoint) or ``iter_<step:07d>`` (a kept one). The
embedded trainer's job writes ``results.json`` there (plus a ``flame`` section: run, checkpoint
iteration, seconds); a Megatron job's ``lm_eval`` writes ``<model>/results_<date>.json`` under
a folder per few-shot setting. Several files merge, the newest winning per task.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sweep.io import run_dir
from trainers.lm_eval_tasks import FINAL

EVAL_DIR = "eval"
ACC_PREFIX = "acc_"
METRIC = "acc,none"
STDERR = "acc_stderr,none"
_ITER = re.compile(r"^iter_(\d{7})$")


@dataclass(frozen=True)
class Score:
    """One task's accuracy on one checkpoint."""

    acc: float
    """Accuracy (lm-eval's ``acc``: the highest-likelihood choice is the right one)."""
    stderr: float
    """lm-eval's standard error of ``acc`` (NaN when it gives none)."""
    samples: int | None
    """Documents scored."""


def iteration_of(label: str) -> int | None:
    found = _ITER.match(label)
    return int(found[1]) if found else None


def eval_dir(sweep_dir: Path, run_id: str, label: str = FINAL) -> Path:
    return run_dir(sweep_dir, run_id) / EVAL_DIR / label


def _float(value: object) -> float:
    try:
        number = float(value)  # lm-eval writes "N/A" when it has no stderr
    except (TypeError, ValueError):
        return math.nan
    return number


def read_scores(folder: Path) -> dict[str, Score]:
    """Task -> score over every lm-eval results file under ``folder`` (newest wins); {} when
    there is none or none is readable (a job still writing has not renamed its file yet)."""
    files = sorted(folder.rglob("results*.json"), key=lambda p: p.stat().st_mtime) \
        if folder.is_dir() else []
    scores: dict[str, Score] = {}
    for path in files:
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        samples = document.get("n-samples") or {}
        for task, metrics in (document.get("results") or {}).items():
            if METRIC in metrics:
                count = (samples.get(task) or {}).get("effective")
                scores[task] = Score(_float(metrics[METRIC]), _float(metrics.get(STDERR)),
                                     None if count is None else int(count))
    return scores


def checkpoint_labels(sweep_dir: Path, run_id: str) -> list[str]:
    """The evaluated checkpoints of a run: kept ones by step, then ``final``."""
    root = run_dir(sweep_dir, run_id) / EVAL_DIR
    labels = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    steps = sorted(label for label in labels if iteration_of(label) is not None)
    return steps + ([FINAL] if FINAL in labels else [])


def accuracy_columns(sweep_dir: Path, run_ids: list[str]) -> pd.DataFrame:
    """``acc_<task>`` and ``acc_<task>_stderr`` of each run's final checkpoint (NaN where a run
    was not evaluated on a task); no columns when no run was evaluated."""
    rows = [read_scores(eval_dir(sweep_dir, rid)) for rid in run_ids]
    tasks = sorted({task for row in rows for task in row})
    data: dict[str, list[float]] = {}
    for task in tasks:
        data[f"{ACC_PREFIX}{task}"] = [r[task].acc if task in r else math.nan for r in rows]
        data[f"{ACC_PREFIX}{task}_stderr"] = [r[task].stderr if task in r else math.nan
                                            for r in rows]
    return pd.DataFrame(data, index=range(len(run_ids)))


def accuracy_tasks(results: pd.DataFrame) -> list[str]:
    """The tasks of results.csv's ``acc_<task>`` columns."""
    return [c[len(ACC_PREFIX):] for c in results.columns
            if c.startswith(ACC_PREFIX) and not c.endswith("_stderr")]

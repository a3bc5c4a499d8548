"""Readers of one run's artefacts for ``flame collect``: the loss evidence, routing and
throughput each trainer reports (``trainers.base.Trainer``; the readers themselves are in
``trainers.readers`` and the trainers' modules), state.json, and what a run's summary.json says
about the numbers it computed (numerics version, Megatron-LM commit).

Each reader returns what it could read and never raises on a truncated or corrupt file: a
half-written last line, binary garbage or a damaged event record only shortens what it sees.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sweep.io import STATE_JSON, SUMMARY_JSON
from trainers.base import Reader
from trainers.megatron_readers import routing_log as _routing_log  # noqa: F401 - tests use it
from trainers.readers import (  # noqa: F401 - collect and analysis.routing import them here
    LAYER_KEYS,
    Evidence,
    Routing,
    Throughput,
    read_metrics,
    read_tensorboard,
    read_throughput,
    read_train_log,
)
from trainers.readers import tb_scalars as _tb_scalars  # noqa: F401 - tests use it
from trainers.readers import window as _window  # noqa: F401 - tests use it
from trainers.registry import trainer_for

PROVENANCE_COLUMNS = {"numerics_version": "numerics_version",
                      "trainer_commit": "megatron_commit"}
"""results.csv column -> the summary.json key it comes from (empty when absent)."""


def read_routing(run_dir: Path, trainer: Any) -> Routing | None:
    """The run's routing as its trainer reports it (``Trainer.routing``: the embedded
    trainer's last routing record, Megatron's MoE losses; None for the simulated trainer, whose
    log lines carry made-up MoE losses). ``trainer``: a name, a trainer config or a Trainer;
    None (no config.yaml) reads nothing."""
    if trainer is None:
        return None
    return trainer_for(trainer).routing(Path(run_dir))


def evidence_readers(run_dir: Path, train_iters: int | None, seq_length: int | None,
                     trainer: Any = None) -> list[Reader]:
    """The sources of a run's losses in collect's order of precedence: its trainer's
    (``Trainer.evidence_readers``), or every trainer's common artefacts (metrics.jsonl,
    train.log, TensorBoard) when the trainer is not known."""
    run_dir = Path(run_dir)
    if trainer is not None:
        return trainer_for(trainer).evidence_readers(run_dir, train_iters, seq_length)
    return [lambda: read_metrics(run_dir), lambda: read_train_log(run_dir, seq_length),
            lambda: read_tensorboard(run_dir, train_iters)]


def read_provenance(run_dir: Path) -> dict[str, Any]:
    """``PROVENANCE_COLUMNS`` from the run's summary.json (a completed run's); empty strings
    when there is none or it does not say."""
    try:
        summary = json.loads((Path(run_dir) / SUMMARY_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        summary = {}
    if not isinstance(summary, dict):
        summary = {}
    return {col: "" if summary.get(key) is None else summary[key]
            for col, key in PROVENANCE_COLUMNS.items()}


def read_state(run_dir: Path) -> tuple[str, str]:
    """(state, problem): the ledger's ``state`` ('planned' without a file) and any read error."""
    path = run_dir / STATE_JSON
    if not path.is_file():
        return "planned", ""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))["state"]
        return str(state), ""
    except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError) as err:
        return "unknown", f"state.json unreadable ({type(err).__name__})"


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)

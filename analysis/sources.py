"""Readers of one run's artefacts: metrics.jsonl, train.log, TensorBoard events, state.json.

Each reader returns what it could read and never raises on a truncated or corrupt file: a
half-written last line, binary garbage or a damaged event record only shortens what it sees.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from sweep.io import METRICS_JSONL, STATE_JSON, TENSORBOARD_DIR, TRAIN_LOG
from trainers.logformat import parse_lines

TB_TRAIN_TAG = "lm loss"
TB_VAL_TAG = "lm loss validation"


@dataclass
class Evidence:
    """What one source says about a run's progress and losses."""

    source: str
    """metrics.jsonl | train.log | tensorboard."""
    evals: list[tuple[int, float, bool]] = field(default_factory=list)
    """(iteration, validation loss, final) in file order."""
    train_losses: list[tuple[int, float]] = field(default_factory=list)
    """(iteration, training loss) in file order."""
    tokens: float | None = None
    """Largest consumed-token count the source reports."""
    train_iters: int | None = None
    """Planned iterations, when the source states them (Megatron's ``N/M``)."""

    @property
    def last_iteration(self) -> int:
        its = [e[0] for e in self.evals] + [t[0] for t in self.train_losses]
        return max(its, default=0)

    @property
    def has_final(self) -> bool:
        return any(final for _, _, final in self.evals)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def read_metrics(run_dir: Path) -> Evidence | None:
    """metrics.jsonl, skipping lines that are not complete JSON objects."""
    path = run_dir / METRICS_JSONL
    if not path.is_file():
        return None
    ev = Evidence(METRICS_JSONL)
    for line in _lines(path):
        try:
            rec = json.loads(line)
            it = int(rec["iteration"])
            if rec.get("kind") == "eval":
                ev.evals.append((it, float(rec["val_loss"]), bool(rec.get("final", False))))
            elif rec.get("kind") == "train":
                ev.train_losses.append((it, float(rec["train_loss"])))
            tokens = rec.get("consumed_tokens")
            if tokens is not None:
                ev.tokens = max(ev.tokens or 0.0, float(tokens))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a truncated or foreign line
    return ev


def read_train_log(run_dir: Path, seq_length: int | None) -> Evidence | None:
    """train.log through the shared Megatron parser (trainers.logformat)."""
    path = run_dir / TRAIN_LOG
    if not path.is_file():
        return None
    parsed = parse_lines(_lines(path))
    ev = Evidence(TRAIN_LOG)
    ev.evals = [(r["iteration"], r["lm loss value"], r["final"]) for r in parsed.validation]
    ev.train_losses = [(r["iteration"], r["lm loss"]) for r in parsed.train if "lm loss" in r]
    if parsed.train:
        ev.train_iters = parsed.train[-1]["train_iters"]
        samples = max((r.get("consumed samples", 0.0) for r in parsed.train), default=0.0)
        if samples and seq_length:
            ev.tokens = samples * seq_length
    return ev


THROUGHPUT = "throughput per GPU (TFLOP/s/GPU)"  # core_v0.16.1 training.py:2043-2044
STEP_MS = "elapsed time per iteration (ms)"  # training.py:2039-2041


@dataclass
class Throughput:
    """What Megatron's training lines say about speed: each line averages the iterations since
    the previous line of the same process (``--log-interval``; 1 for a process's first)."""

    iterations: int = 0
    """Iterations the lines cover."""
    step_seconds: float = 0.0
    """Sum of the iterations' wall time (excludes start-up, evaluation and checkpoint I/O)."""
    tflop: float = 0.0
    """Sum of TFLOP/s/GPU x seconds over those iterations (for the time-weighted mean)."""

    @property
    def tflops_per_gpu(self) -> float | None:
        return self.tflop / self.step_seconds if self.step_seconds and self.tflop else None


def read_throughput(run_dir: Path) -> Throughput:
    """Megatron's own ``elapsed time per iteration`` and ``throughput per GPU`` from train.log.
    A line at or below the previous line's iteration starts a new process (a resume): it
    covers one iteration, as Megatron's first line after a start does (training.py:2008)."""
    out, previous = Throughput(), None
    for rec in parse_lines(_lines(run_dir / TRAIN_LOG)).train:
        ms, it = rec.get(STEP_MS), rec["iteration"]
        count = it - previous if previous is not None and it > previous else 1
        previous = it
        if ms is None:
            continue
        seconds = ms / 1000.0 * count
        out.iterations += count
        out.step_seconds += seconds
        out.tflop += (rec.get(THROUGHPUT) or 0.0) * seconds
    return out


def read_tensorboard(run_dir: Path, train_iters: int | None) -> Evidence | None:
    """Scalars ``lm loss`` / ``lm loss validation`` of the run's TensorBoard event files.

    Read with tensorboard's own event reader; a damaged file yields what precedes the damage.
    Megatron marks no evaluation as final, so the one at ``train_iters`` counts as final.
    """
    tb_dir = run_dir / TENSORBOARD_DIR
    if not tb_dir.is_dir() or not any(tb_dir.rglob("events.out.tfevents.*")):
        return None
    from tensorboard.backend.event_processing import event_file_loader

    ev = Evidence("tensorboard")
    for path in sorted(tb_dir.rglob("events.out.tfevents.*")):
        try:
            for event in event_file_loader.EventFileLoader(str(path)).Load():
                for value in event.summary.value:
                    _tb_value(ev, event.step, value, train_iters)
        except Exception:  # noqa: BLE001 - a corrupt record ends this file, never the collect
            continue
    ev.evals.sort(key=lambda e: e[0])
    ev.train_losses.sort(key=lambda t: t[0])
    return ev


def _tb_value(ev: Evidence, step: int, value, train_iters: int | None) -> None:
    if value.HasField("simple_value"):
        number = float(value.simple_value)
    elif value.HasField("tensor") and value.tensor.float_val:
        number = float(value.tensor.float_val[0])
    else:
        return
    if value.tag == TB_VAL_TAG:
        ev.evals.append((int(step), number, train_iters is not None and step >= train_iters))
    elif value.tag == TB_TRAIN_TAG:
        ev.train_losses.append((int(step), number))


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

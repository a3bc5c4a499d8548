"""Readers of one run's artefacts as every trainer writes them (metrics.jsonl, train.log in
Megatron's format, TensorBoard events): the loss evidence, throughput and routing that
``flame collect`` reads through each trainer (``trainers.base.Trainer``).

Each reader returns what it could read and never raises on a truncated or corrupt file: a
half-written last line, binary garbage or a damaged event record only shortens what it sees.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sweep.io import METRICS_JSONL, TENSORBOARD_DIR, TRAIN_LOG
from trainers.logformat import MOE_LAYER_TAG_RE, MOE_LOSSES, ParsedLog, parse_lines

TB_TRAIN_TAG = "lm loss"
TB_VAL_TAG = "lm loss validation"
TB_ARG_TAG = "{}/text_summary"  # an argument as Megatron writes it (initialize.py:430-436)
LAUNCH_MARK = "[flame] launcher started"
"""The line flame writes into a node's log before each launch of Megatron (a new process)."""


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


def lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


@dataclass
class EventFile:
    """One TensorBoard event file: the scalars flame reads (``RunFiles.tensorboard``)."""

    scalars: list[tuple[int, str, float]] = field(default_factory=list)
    """(step, tag, value) in file order: the loss tags and the MoE losses."""
    flags: dict[str, bool] = field(default_factory=dict)
    """``do_valid`` / ``do_test`` as the process's arguments say (Megatron's text summaries)."""


class RunFiles:
    """One run's artefacts, each file read and parsed at most once in this object's life:
    ``flame collect`` reads a run's losses, routing and speed from one (``reading``), where
    each reader alone would parse metrics.jsonl, train.log or the event files again."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    @cached_property
    def metrics(self) -> list[dict]:
        """metrics.jsonl's complete JSON objects, in order (a truncated or foreign line is
        skipped)."""
        records = []
        for line in lines(self.run_dir / METRICS_JSONL):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
        return records

    @cached_property
    def launches(self) -> list[ParsedLog]:
        """train.log parsed, one ParsedLog per launch of Megatron (split at ``LAUNCH_MARK``)."""
        parts: list[list[str]] = [[]]
        for line in lines(self.run_dir / TRAIN_LOG):
            if line.startswith(LAUNCH_MARK):
                parts.append([])
            else:
                parts[-1].append(line)
        return [parse_lines(part) for part in parts]

    @cached_property
    def log(self) -> ParsedLog:
        """train.log parsed (its launches together)."""
        out = ParsedLog()
        for part in self.launches:
            out.train += part.train
            out.validation += part.validation
            out.test += part.test
        return out

    @cached_property
    def tensorboard(self) -> list[EventFile]:
        """Every event file under tensorboard/, read once with tensorboard's own reader: the
        tags flame reads (a damaged record ends its file, never the read)."""
        tb_dir = self.run_dir / TENSORBOARD_DIR
        paths = sorted(tb_dir.rglob("events.out.tfevents.*")) if tb_dir.is_dir() else []
        if not paths:
            return []
        from tensorboard.backend.event_processing import event_file_loader

        out = []
        for path in paths:
            found = EventFile()
            try:
                for event in event_file_loader.EventFileLoader(str(path)).Load():
                    for value in event.summary.value:
                        _tb_value(found, int(event.step), value)
            except Exception:  # noqa: BLE001 - a corrupt record ends this file, never the collect
                pass
            out.append(found)
        return out


_READING: ContextVar[RunFiles | None] = ContextVar("flame_run_files", default=None)


@contextmanager
def reading(run_dir: Path) -> Iterator[RunFiles]:
    """Within it, every reader of ``run_dir`` (loss evidence, routing, throughput, through
    whichever trainer) shares one ``RunFiles``: each of the run's files is parsed once."""
    files = RunFiles(run_dir)
    token = _READING.set(files)
    try:
        yield files
    finally:
        _READING.reset(token)


def run_files(run_dir: Path) -> RunFiles:
    """The ``RunFiles`` of ``run_dir`` being read (``reading``), else a fresh one."""
    current = _READING.get()
    if current is not None and current.run_dir == Path(run_dir):
        return current
    return RunFiles(run_dir)


def read_metrics(run_dir: Path) -> Evidence | None:
    """metrics.jsonl, skipping lines that are not complete JSON objects."""
    path = Path(run_dir) / METRICS_JSONL
    if not path.is_file():
        return None
    ev = Evidence(METRICS_JSONL)
    for rec in run_files(run_dir).metrics:
        try:
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
    path = Path(run_dir) / TRAIN_LOG
    if not path.is_file():
        return None
    parsed = run_files(run_dir).log
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
    the previous line of the same process (``--log-interval``), a process's first line only its
    first iteration (see ``read_throughput``)."""

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

    core_v0.16.1 training.py: a process prints its first iteration (``is_first_iteration``,
    :2008) without resetting anything (:1797 ``should_reset``; :2016 the interval timer, :2085
    the iteration count), so its next line averages every iteration since the process started,
    the first one included (:2017, :1874). So the first line of a process counts only when no
    line follows it in that process; the next line covers the iterations from the first line's
    on; every later line those since the line before. A process begins at flame's
    ``LAUNCH_MARK`` line, and (logs without it) at a line not above the one before."""
    out = Throughput()
    for process in _processes(run_files(run_dir).launches):
        for rec, count in _covered(process):
            ms = rec.get(STEP_MS)
            if ms is None:
                continue
            seconds = ms / 1000.0 * count
            out.iterations += count
            out.step_seconds += seconds
            out.tflop += (rec.get(THROUGHPUT) or 0.0) * seconds
    return out


def _processes(launches: list[ParsedLog]) -> list[list[dict]]:
    """The training lines of each Megatron process in a log, in order: each launch's, split
    where an iteration is not above the one before (a restart without flame's mark)."""
    found: list[list[dict]] = []
    for launch in launches:
        found.append([])
        for rec in launch.train:
            if found[-1] and rec["iteration"] <= found[-1][-1]["iteration"]:
                found.append([])
            found[-1].append(rec)
    return [process for process in found if process]


def _covered(process: list[dict]) -> list[tuple[dict, int]]:
    """(line, iterations it covers) for one process's lines (``read_throughput``)."""
    if len(process) == 1:
        return [(process[0], 1)]
    out, previous = [], process[0]["iteration"] - 1
    for rec in process[1:]:
        out.append((rec, rec["iteration"] - previous))
        previous = rec["iteration"]
    return out


def read_tensorboard(run_dir: Path, train_iters: int | None) -> Evidence | None:
    """Scalars ``lm loss`` / ``lm loss validation`` of the run's TensorBoard event files.

    Read with tensorboard's own event reader; a damaged file yields what precedes the damage.
    Megatron marks no evaluation as final, so the one at ``train_iters`` counts as final.
    Its final TEST evaluation is written under the same tag at the same step, right after the
    final validation (core_v0.16.1 training.py:1094-1107 -> :3258-3259); each process writes
    one event file, with its arguments as text (training.py:2511, initialize.py:430-436), so
    ``do_valid``/``do_test`` there say which points of the file are the test set's
    (``_validation_points``).
    """
    files = run_files(run_dir).tensorboard
    if not files:
        return None
    ev = Evidence("tensorboard")
    for found in files:
        points = [(step, x) for step, tag, x in found.scalars if tag == TB_VAL_TAG]
        ev.train_losses += [(step, x) for step, tag, x in found.scalars if tag == TB_TRAIN_TAG]
        ev.evals += [(step, x, train_iters is not None and step >= train_iters)
                     for step, x in _validation_points(points, found.flags)]
    ev.evals.sort(key=lambda e: e[0])
    ev.train_losses.sort(key=lambda t: t[0])
    return ev


def _tb_number(value) -> float | None:
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor") and value.tensor.float_val:
        return float(value.tensor.float_val[0])
    return None


def read_tag(tag: str) -> bool:
    """The TensorBoard tags flame reads: the losses and Megatron's MoE losses (means, and per
    layer with --moe-per-layer-logging)."""
    return tag in (TB_TRAIN_TAG, TB_VAL_TAG) or tag in MOE_LOSSES or \
        MOE_LAYER_TAG_RE.match(tag) is not None


def _tb_value(found: EventFile, step: int, value) -> None:
    for flag in ("do_valid", "do_test"):
        if value.tag == TB_ARG_TAG.format(flag) and value.tensor.string_val:
            found.flags[flag] = value.tensor.string_val[0].decode(errors="replace") == "True"
    if read_tag(value.tag) and (number := _tb_number(value)) is not None:
        found.scalars.append((step, value.tag, number))


def _validation_points(points: list[tuple[int, float]],
                       flags: dict[str, bool]) -> list[tuple[int, float]]:
    """One event file's ``lm loss validation`` points less the test set's. Without a
    validation set every point is a test one; with both, the process's final evaluations are
    its last two points, at its last step (validation, then test: training.py:1068-1107), after
    any evaluation in the loop at that step (:2914): the last of two or more points at the last
    step is the test's. One point there is an evaluation in the loop (the process ended on a
    signal or an exit condition, :3021-3030, before the final ones). Files without the
    arguments (not Megatron's) keep every point."""
    if flags.get("do_valid") is False:
        return []
    if not flags.get("do_test") or not points:
        return points
    last = points[-1][0]
    at_last = [i for i, (step, _) in enumerate(points) if step == last]
    return [p for i, p in enumerate(points) if i != at_last[-1]] if len(at_last) >= 2 \
        else points


# Megatron's MoE losses are read over the last quarter of the run's iterations (the embedded
# trainer's default window: its routing record covers the steps since the previous of its
# four evaluations).
ROUTING_WINDOW = 0.25
LAYER_KEYS = ("expert_fraction", "load_max_mean", "step_load_max_mean", "entropy",
              "aux_loss", "z_loss")


@dataclass
class Routing:
    """What a run's artefacts say about its routing over the last window of training."""

    source: str
    """metrics.jsonl (the embedded trainer's routing records) | train.log | tensorboard."""
    iteration: int
    """Last training iteration the window covers."""
    layers: list[dict] = field(default_factory=list)
    """Per MoE layer (``layer``: 0-based over all layers) whatever the source knows of
    LAYER_KEYS; empty when only means over the layers are known."""
    aux_loss: float = math.nan
    """Load-balancing loss without its coefficient, mean over the MoE layers (1 = balanced)."""
    z_loss: float = math.nan
    """Router z-loss without its coefficient, mean over the MoE layers."""


def read_routing_record(run_dir: Path) -> Routing | None:
    """The last routing record of metrics.jsonl (``RunLog.routing``: per MoE layer over the
    steps since the previous evaluation); None without one."""
    found = None
    for rec in run_files(run_dir).metrics:
        try:
            if rec.get("kind") == "routing" and rec["layers"]:
                found = rec
        except (KeyError, TypeError):
            continue
    if found is None:
        return None
    layers = [{k: layer[k] for k in ("layer", *LAYER_KEYS) if k in layer}
              for layer in found["layers"] if isinstance(layer, dict) and "layer" in layer]
    return Routing(METRICS_JSONL, int(found["iteration"]), layers,
                   mean(layer.get("aux_loss") for layer in layers),
                   mean(layer.get("z_loss") for layer in layers))


def tb_scalars(run_dir: Path,
               wanted: Callable[[str], object]) -> dict[str, list[tuple[int, float]]]:
    """Scalars whose tag ``wanted`` accepts, of the tags flame reads (``read_tag``), from
    every event file (damage ends a file)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for found in run_files(run_dir).tensorboard:
        for step, tag, number in found.scalars:
            if wanted(tag):
                out.setdefault(tag, []).append((step, number))
    return out


def window(points: list[tuple[int, float]], last: int) -> float:
    """Mean of the values logged in the last ROUTING_WINDOW of the iterations (NaN if none)."""
    start = last * (1.0 - ROUTING_WINDOW)
    return mean(v for it, v in points if it > start or it == last)


def mean(values) -> float:
    kept = [float(v) for v in values if v is not None]
    return sum(kept) / len(kept) if kept else math.nan

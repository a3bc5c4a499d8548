"""The per-run artefacts every trainer writes: train.log (Megatron lines) and metrics.jsonl.

Both files are append-only. A checkpoint records their sizes (``offsets``); on resume they are
cut back to those sizes so lines logged after the checkpoint and before the interruption are
not duplicated by the resumed run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from sweep.io import METRICS_JSONL, TRAIN_LOG, naming
from trainers.logformat import train_line, validation_lines


def branch_checkpoint(run_dir: Path, step: int, trainer: Any) -> Path:
    """Where the trunk in ``run_dir`` keeps its checkpoint at ``step`` for its branches, for
    ``trainer`` (a name, a trainer config or a Trainer: ``Trainer.branch_checkpoint``)."""
    from trainers.registry import trainer_for

    return trainer_for(trainer).branch_checkpoint(run_dir, step)


def branch_ready(parent_run_dir: Path, step: int, trainer: Any) -> bool:
    """Whether a branch at ``step`` may start: its trunk's checkpoint there is complete
    (``Trainer.branch_ready``)."""
    from trainers.registry import trainer_for

    return trainer_for(trainer).branch_ready(parent_run_dir, step)


def parent_run_dir(run_dir: Path, parent: str) -> Path:
    """A branch's trunk's run directory: its sibling under the sweep's ``runs/``."""
    return Path(run_dir).parent / parent



class RunLog:
    """Writes one run's train.log and metrics.jsonl."""

    def __init__(self, run_dir: Path, echo: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.run_dir / TRAIN_LOG
        self.metrics_path = self.run_dir / METRICS_JSONL
        self.echo = echo
        """Also print train.log lines to stdout (a job's stdout)."""

    def offsets(self) -> dict[str, int]:
        """Current sizes of both files, to store in a checkpoint."""
        return {p.name: p.stat().st_size if p.exists() else 0
                for p in (self.log_path, self.metrics_path)}

    def rewind(self, offsets: dict[str, int]) -> None:
        """Cut both files back to the sizes a checkpoint recorded."""
        for path in (self.log_path, self.metrics_path):
            size = int(offsets.get(path.name, 0))
            if path.exists() and path.stat().st_size > size:
                os.truncate(path, size)

    def note(self, text: str) -> None:
        """A free-text line in train.log (ignored by the parser)."""
        self._append(self.log_path, text)

    def train(self, *, iteration: int, train_iters: int, global_batch_size: int,
              seq_length: int, lr: float, train_loss: float, aux_loss: float, z_loss: float,
              grad_norm: float, tokens_per_s: float, elapsed_ms: float) -> None:
        consumed = iteration * global_batch_size
        losses = {"lm loss": train_loss, "load_balancing_loss": aux_loss, "z_loss": z_loss}
        self._append(self.log_path, train_line(iteration, train_iters, consumed, elapsed_ms, lr,
                                                global_batch_size, losses, grad_norm))
        self._metric({"kind": "train", "iteration": iteration,
                      "consumed_tokens": consumed * seq_length, "lr": lr,
                      "train_loss": train_loss, "aux_loss": aux_loss, "z_loss": z_loss,
                      "grad_norm": grad_norm, "tokens_per_s": tokens_per_s})

    def eval(self, *, iteration: int, consumed_tokens: int, val_loss: float,
             final: bool) -> None:
        self._append(self.log_path, validation_lines(iteration, {"lm loss": val_loss}, final))
        self._metric({"kind": "eval", "iteration": iteration, "consumed_tokens": consumed_tokens,
                      "val_loss": val_loss, "final": final})

    def routing(self, *, iteration: int, layers: list[dict]) -> None:
        """Per-MoE-layer routing statistics of a window of training steps (metrics.jsonl only:
        Megatron prints no such line)."""
        self._metric({"kind": "routing", "iteration": iteration, "layers": layers})

    def _metric(self, record: dict) -> None:
        record["time"] = time.time()
        self._append(self.metrics_path, json.dumps(record), echo=False)

    def _append(self, path: Path, text: str, echo: bool = True) -> None:
        with naming(path), open(path, "a", encoding="utf-8") as handle:  # ENOSPC names it
            handle.write(text + "\n")
        if echo and self.echo:
            print(text, flush=True)

"""Megatron-LM's own train.log line formats: written by our trainers, read by ``flame collect``.

Formats follow ``megatron/training/training.py`` (core_v0.16): ``training_log`` builds
`` [time] iteration {:8d}/{:8d} | consumed samples: {:12d} | ... | lm loss: {:.6E} | ...`` and
``evaluate_and_print_results`` builds `` validation loss at iteration N | lm loss value: X |
lm loss PPL: Y |`` (suffix `` on validation set`` / `` on test set`` for the final evaluation),
framed by lines of dashes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

# MoE router losses Megatron adds to the training line, averaged over the interval's iterations
# and over the MoE layers, without their coefficients (core_v0.16.1 training.py:1956-1987,
# moe_utils.py:1019-1025; router.py:448-455, 505-507): 1 = a balanced load-balancing loss.
# --moe-router-load-balancing-type seq_aux_loss / global_aux_loss log their loss under their own
# names (router.py:364, 409), and a single such type also tracks load_balancing_loss at 0
# (training.py:1960 tests "aux_loss" as a substring of the str arguments.py:1031-1032 makes).
MOE_AUX_LOSSES = ("load_balancing_loss", "seq_load_balancing_loss", "global_load_balancing_loss")
MOE_LOSSES = (*MOE_AUX_LOSSES, "z_loss")
# TensorBoard: the same losses every iteration under those names, and with
# --moe-per-layer-logging one scalar per layer, 0-based over all layers (dense ones 0):
# moe_utils.py:1030-1033.
MOE_LAYER_TAG_RE = re.compile(rf"^moe/({'|'.join(MOE_LOSSES)})_layer_(\d+)$")

TRAIN_RE = re.compile(r"\biteration\s+(\d+)/\s*(\d+)\s*\|(.*)")
# "validation-1 loss at ..." when Megatron evaluates several validation sets.
VAL_RE = re.compile(
    r"validation(?:-(\d+))? loss at iteration (\d+)( on (validation|test) set)?\s*\|(.*)")


def train_line(iteration: int, train_iters: int, consumed_samples: int, elapsed_ms: float,
               lr: float, global_batch_size: int, losses: Mapping[str, float],
               grad_norm: float | None = None, nan_iterations: int = 0) -> str:
    """One Megatron training-log line; ``losses`` maps names (``lm loss``, ...) to values."""
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")  # core_v0.16 adds microseconds
    parts = [f" [{stamp}] iteration {iteration:8d}/{train_iters:8d} |",
             f" consumed samples: {consumed_samples:12d} |",
             f" elapsed time per iteration (ms): {elapsed_ms:.1f} |",
             f" learning rate: {lr:.6E} |",
             f" global batch size: {global_batch_size:5d} |"]
    parts += [f" {name}: {value:.6E} |" for name, value in losses.items()]
    parts.append(" loss scale: 1.0 |")
    if grad_norm is not None:
        parts.append(f" grad norm: {grad_norm:.3f} |")
    parts += [" number of skipped iterations:   0 |",
              f" number of nan iterations: {nan_iterations:3d} |"]
    return "".join(parts)


def validation_lines(iteration: int, losses: Mapping[str, float], final: bool = False) -> str:
    """The framed validation block Megatron prints (three lines, no trailing newline)."""
    where = f"iteration {iteration}" + (" on validation set" if final else "")
    body = f" validation loss at {where} | " + "".join(
        f"{name} value: {value:.6E} | {name} PPL: {math.exp(min(20.0, value)):.6E} | "
        for name, value in losses.items())
    rule = "-" * (len(body) + 1)
    return f"{rule}\n{body}\n{rule}"


@dataclass
class ParsedLog:
    """What a train.log says: per-iteration training records and validation evaluations."""

    train: list[dict] = field(default_factory=list)
    """One dict per training line: iteration, train_iters, and every ``name: value`` field."""
    validation: list[dict] = field(default_factory=list)
    """One dict per validation line: iteration, final (bool), set (index of Megatron's
    multiple validation sets, 0 for the only one), and ``<name> value`` fields."""
    test: list[dict] = field(default_factory=list)
    """Evaluations ``on test set`` (kept apart: never a validation loss)."""

    @property
    def last_val_loss(self) -> float | None:
        for rec in reversed(self.validation):
            if "lm loss value" in rec and rec.get("set", 0) == 0:
                return rec["lm loss value"]
        return None


def parse_lines(lines: Iterable[str]) -> ParsedLog:
    """Parse Megatron train.log lines; unrecognised or truncated lines are skipped."""
    out = ParsedLog()
    for line in lines:
        if m := VAL_RE.search(line):
            rec = {"iteration": int(m.group(2)), "final": bool(m.group(3)),
                   "set": int(m.group(1) or 0)}
            rec.update(_fields(m.group(5)))
            if "lm loss value" in rec:
                (out.test if m.group(4) == "test" else out.validation).append(rec)
        elif (m := TRAIN_RE.search(line)) and line.rstrip().endswith("|"):
            # a complete Megatron line ends with "|"; one cut short by a kill is skipped
            rec = {"iteration": int(m.group(1)), "train_iters": int(m.group(2))}
            rec.update(_fields(m.group(3)))
            out.train.append(rec)
    return out


def _fields(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for chunk in text.split("|"):
        if ":" not in chunk:
            continue
        name, _, value = chunk.rpartition(":")
        try:
            found[name.strip()] = float(value.strip())
        except ValueError:
            continue  # a truncated last field, or a non-numeric one
    return found

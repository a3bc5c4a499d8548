"""Megatron-LM's MoE router losses as a run's routing (train.log lines and TensorBoard scalars,
core_v0.16.1): what ``trainers.megatron_trainer.MegatronTrainer.routing`` reads."""

from __future__ import annotations

import math
from pathlib import Path

from sweep.io import TRAIN_LOG
from trainers.logformat import MOE_AUX_LOSSES, MOE_LAYER_TAG_RE, MOE_LOSSES
from trainers.readers import Routing, run_files, tb_scalars, window


def read_routing(run_dir: Path) -> Routing | None:
    """Megatron's MoE losses per layer from TensorBoard (``--moe-per-layer-logging``), else
    their layer means from TensorBoard or train.log; None without any. The aux loss is
    ``load_balancing_loss``, else ``seq_``/``global_load_balancing_loss`` (``aux``); NaN scalars
    (a z-loss coefficient of 0) count as not logged."""
    return routing_tensorboard(run_dir) or routing_log(run_dir)


def routing_log(run_dir: Path) -> Routing | None:
    train = run_files(run_dir).log.train
    series = {name: [(r["iteration"], r[name]) for r in train if name in r] for name in MOE_LOSSES}
    if not any(series.values()):
        return None
    last = max(it for points in series.values() for it, _ in points)
    return Routing(TRAIN_LOG, last, [], window(aux(series, "{}"), last),
                   window(series["z_loss"], last))


def aux(series: dict[str, list], tag: str) -> list:
    """The load-balancing loss's points: ``load_balancing_loss``'s, else (absent, or dropped as
    all zeros) the seq_ or global_ variant's (--moe-router-load-balancing-type seq_aux_loss /
    global_aux_loss); ``tag`` formats each name into its tag."""
    return next((series[tag.format(name)] for name in MOE_AUX_LOSSES
                 if series.get(tag.format(name))), [])


def routing_tensorboard(run_dir: Path) -> Routing | None:
    scalars = tb_scalars(run_dir, lambda tag: tag in MOE_LOSSES or MOE_LAYER_TAG_RE.match(tag))
    # Non-finite values: Megatron's 0/0 for a z-loss with coefficient 0 (router.py:505-507,
    # NaN every iteration) is no measurement, so it is dropped like a loss not logged. All
    # zeros: a dense layer, or a loss Megatron tracks but does not compute (coefficient 0).
    scalars = {tag: kept for tag, pts in scalars.items()
               if (kept := [(s, v) for s, v in pts if math.isfinite(v)])
               and any(v != 0.0 for _, v in kept)}
    if not scalars:
        return None
    last = max(step for points in scalars.values() for step, _ in points)
    layers = []
    for i in sorted({int(m.group(2)) for tag in scalars if (m := MOE_LAYER_TAG_RE.match(tag))}):
        found = {"aux_loss": aux(scalars, f"moe/{{}}_layer_{i}"),
                 "z_loss": scalars.get(f"moe/z_loss_layer_{i}", [])}
        if layer := {k: window(pts, last) for k, pts in found.items() if pts}:
            layers.append({"layer": i, **layer})
    return Routing("tensorboard", last, layers, window(aux(scalars, "{}"), last),
                   window(scalars.get("z_loss", []), last))

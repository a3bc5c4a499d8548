#!/usr/bin/env python3
"""A stand-in for Megatron-LM's ``pretrain_gpt.py`` (no GPU, no model): same argv, same stdout
for the lines flame reads, under Megatron-LM core_v0.16.1's own rules.

Written from NVIDIA/Megatron-LM tag core_v0.16.1 (commit 55ac7082517c3878ae653c07c09c534b8aed49f6).
Line numbers below are in that commit's files; ``T`` = ``megatron/training/training.py``,
``C`` = ``megatron/training/checkpointing.py``, ``A`` = ``megatron/training/arguments.py``,
``M`` = ``megatron/core/transformer/moe/moe_utils.py``, ``R`` =
``megatron/core/transformer/moe/router.py``, ``G`` = ``megatron/training/global_vars.py``.

What it reproduces:
- argv: validated against the recorded core_v0.16.1 argument spec (``trainers.megatron_argspec``);
  a bad argv exits 2 with an argparse-style message, as argparse does.
- the training log line and its schedule (T:2008), the evaluation lines at ``--eval-interval``
  (T:2914) and after training (T:1068-1107), checkpoint save/load lines and the on-disk tracker
  layout (C:171, C:281, C:529, C:727, C:1212, C:1232, C:1898), ``--exit-signal-handler``,
  ``--exit-duration-in-mins`` and ``--exit-interval`` (T:2305-2414, T:3021-3030).
- the MoE losses (T:1956-1987 -> M:955-1049): each MoE layer's ``load_balancing_loss`` (when
  ``--moe-router-load-balancing-type`` is aux_loss and its coefficient is non-zero, R:283-313;
  ``seq_``/``global_load_balancing_loss`` likewise, R:315-410; a single seq_aux_loss or
  global_aux_loss also tracks ``load_balancing_loss`` at 0, T:1960 being a substring test on
  the str A:1031-1032 makes) and ``z_loss`` (when ``--moe-z-loss-coeff`` is given, R:484-507;
  NaN, 0/0, when that is 0), tracked without their
  coefficients (R:448-455, R:505-507) in a tensor over all ``--num-layers`` (dense layers stay
  0, M:896-897); every iteration their sum over the layers / the number of MoE layers
  (``--moe-layer-freq``, M:1004-1014) is added to the log line's averages (M:1021-1025) and,
  with ``--tensorboard-dir`` on the last rank (G:176-177), written as TensorBoard scalars
  ``load_balancing_loss`` / ``z_loss`` (M:1030, every iteration: not under
  ``--tensorboard-log-interval``) and, with ``--moe-per-layer-logging``, one scalar per layer
  ``moe/<name>_layer_<i>`` (M:1031-1033, ``i`` 0-based over all layers), flushed after the
  training loop (T:3000-3003).
- start-up (``start_up``): the arguments block, then the exit-signal handler installed only
  after the tokenizer is built (G:96-114): a signal before that kills the rank.
- TensorBoard besides the MoE losses: ``lm loss`` (T:1879, T:1902-1904), ``lm loss
  validation`` for every evaluation, the final test evaluation's included under the same tag
  and step (T:3258-3264 via T:1094-1107), and every argument as text (T:2511,
  ``megatron/training/initialize.py``:430-436; ``do_valid``/``do_test`` among them).
What it does not: the timers' "(min, max) time across ranks" blocks, memory reports, warnings,
data loading (``--data-path`` is not opened), the other TensorBoard scalars,
and Megatron's exact FLOP count (the throughput field has Megatron's format; its value comes
from a 6·N·tokens estimate, see ``_flops``).

The "model" is two numbers: ``w`` shrinks every iteration by a factor drawn from (seed,
iteration) (the data at that position; the MoE losses follow it), and ``v`` is trained by a
momentum optimiser (state ``m``) at the scheduler's learning rate on a gradient with a little
noise from an RNG stream (Megatron's RNG state, e.g. dropout); ``lm loss`` is ``2 + w + v``.
All of it is saved in each checkpoint with the scheduler's state (optimizer_param_scheduler.py
state_dict) and restored on ``--load`` as Megatron restores it (C:1686-1693, 1731-1760, 1785-1832,
1841): so a resumed run, or a run started from another's checkpoint with ``--ckpt-step``
(C:215-216, C:1187-1189), ends with exactly the loss of an uninterrupted one only if the
checkpoint carried the model, the optimiser, the scheduler's step count and the RNG stream;
``--finetune``, ``--no-load-optim`` and ``--no-load-rng`` drop what Megatron drops, and the
scheduler's values are checked against the flags unless ``--override-opt_param-scheduler``
or ``--use-checkpoint-opt_param-scheduler`` (``S`` =
``megatron/core/optimizer_param_scheduler.py``, S:312-330), with Megatron's assertion message.

Environment: ``FLAME_STANDIN_STEP_S`` seconds per iteration (default 0.001) so that a test can
preempt a run mid-way; ``FLAME_STANDIN_STARTUP_S`` seconds of start-up before the exit-signal
handler is installed (default 0; Megatron's take tens of seconds); ``RANK``/``WORLD_SIZE``
(default 0/1, as torchrun or flame's srun line
sets them): rank 0 prints what Megatron prints with print_rank_0 and writes the checkpoint files,
the last rank prints the training and validation lines (print_rank_last), and the throughput is
per GPU of WORLD_SIZE. Every rank computes the same numbers, but with several ranks they form one
torch.distributed world (gloo, from torchrun's environment, after the handler as
initialize.py:96 then 163 -> 355) and meet where Megatron's ranks meet, so none runs ahead of the
others: the tracker's iteration agreed by MAX (checkpointing.py:316), the signal flags gathered at
every iteration (training.py:2324, dist_signal_handler.py:54-55: any rank's signal stops all),
and barriers around a save (checkpointing.py:701, 798) for the gradient all-reduce that keeps
Megatron's ranks in step. One rank alone never imports torch.

To use it as a Megatron-LM checkout (flame's launch.sh runs ``$MEGATRON/pretrain_gpt.py``):
make a directory whose ``pretrain_gpt.py`` is a symlink to this file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the flame checkout
from trainers.megatron_argspec import check_argv, load  # noqa: E402

_START = time.time()  # T:2370 measures --exit-duration-in-mins from the program's start
TRACKER = "latest_checkpointed_iteration.txt"  # C:277-281
STATE = "standin_state.json"  # our stand-in for the torch_dist files in iter_NNNNNNN/
RECEIVED: list[int] = []  # signals caught by the --exit-signal-handler handler
_WORLD: list = []  # torch.distributed, once joined (several ranks only)


def join_world() -> None:
    """I:163 -> I:355: init_process_group from torchrun's MASTER_ADDR/PORT, RANK, WORLD_SIZE;
    it returns once every rank has joined."""
    if WORLD_SIZE > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        _WORLD.append(dist)


def agree(value: int) -> int:
    """The largest of every rank's ``value`` (an all-reduce MAX); ``value`` on one rank."""
    if not _WORLD:
        return value
    import torch

    tensor = torch.tensor([value])
    _WORLD[0].all_reduce(tensor, op=_WORLD[0].ReduceOp.MAX)
    return int(tensor.item())


def barrier() -> None:
    if _WORLD:
        _WORLD[0].barrier()


def _now() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")


RANK = int(os.environ.get("RANK", "0"))  # set by torchrun (flame's launch.sh runs it)
WORLD_SIZE = int(os.environ.get("WORLD_SIZE", "1"))


def _say(text: str) -> None:
    """print_rank_0 (megatron/training/utils.py:394-401): checkpoint, datetime, loading lines."""
    if RANK == 0:
        print(text, flush=True)


def _say_last(text: str) -> None:
    """print_rank_last (megatron/training/utils.py:425-431): training and validation lines."""
    if RANK == WORLD_SIZE - 1:
        print(text, flush=True)


def print_datetime(text: str) -> None:
    """T:210-218: ``[text] datetime: YYYY-mm-dd HH:MM:SS.ffffff `` (note the trailing space)."""
    _say(f"[{text}] datetime: {_now()} ")


def parse(argv: list[str]) -> argparse.Namespace:
    """The options this stand-in acts on, with core_v0.16.1's recorded defaults."""
    problems = check_argv(argv)
    if problems:  # argparse's own behaviour: usage error on stderr, exit status 2
        sys.stderr.write("usage: pretrain_gpt.py [-h] ...\npretrain_gpt.py: error: "
                         + "; ".join(problems) + "\n")
        sys.exit(2)
    spec = {o["dest"]: o for o in load()["options"]}
    p = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    typed = {"train_iters": int, "log_interval": int, "eval_interval": int, "eval_iters": int,
             "save_interval": int, "exit_interval": int, "exit_duration_in_mins": int,
             "global_batch_size": int, "micro_batch_size": int, "seq_length": int,
             "seed": int, "lr": float, "min_lr": float, "lr_warmup_fraction": float,
             "lr_warmup_iters": int, "lr_wsd_decay_iters": int, "lr_decay_iters": int,
             "hidden_size": int, "num_layers": int, "ffn_hidden_size": int, "num_experts": int,
             "moe_router_topk": int, "moe_ffn_hidden_size": int, "vocab_size": int,
             "moe_shared_expert_intermediate_size": int,
             "moe_z_loss_coeff": float, "clip_grad": float,
             "tensor_model_parallel_size": int, "pipeline_model_parallel_size": int,
             "ckpt_step": int, "lr_warmup_init": float,
             "save": str, "load": str, "split": str, "ckpt_format": str, "lr_decay_style": str,
             "lr_wsd_decay_style": str,
             "tensorboard_dir": str, "tensorboard_log_interval": int, "tokenizer_type": str,
             "exit_signal": lambda name: signal.Signals[name]}
    for dest, kind in typed.items():
        p.add_argument(*spec[dest]["option_strings"], dest=dest, type=kind,
                       default=spec[dest]["default"])
    for dest in ("exit_signal_handler", "log_throughput", "skip_train", "mock_data",
                 "full_validation", "moe_per_layer_logging", "override_opt_param_scheduler",
                 "use_checkpoint_opt_param_scheduler", "no_load_optim", "no_load_rng",
                 "finetune"):
        p.add_argument(*spec[dest]["option_strings"], dest=dest, action="store_true")
    for dest, kind in (("moe_router_load_balancing_type", str), ("moe_aux_loss_coeff", float)):
        p.add_argument(*spec[dest]["option_strings"], dest=dest, type=kind, nargs="+",
                       default=spec[dest]["default"])  # A:2705-2710
    p.add_argument("--data-path", nargs="*", default=None)
    p.add_argument("--moe-layer-freq", dest="moe_layer_freq", type=moe_freq_type,
                   default=spec["moe_layer_freq"]["default"])
    args, _ = p.parse_known_args(argv)
    args.exit_signal = signal.Signals[args.exit_signal] if isinstance(args.exit_signal, str) \
        else args.exit_signal
    for dest in ("moe_router_load_balancing_type", "moe_aux_loss_coeff"):  # A:1031-1034
        if isinstance(getattr(args, dest), list) and len(getattr(args, dest)) == 1:
            setattr(args, dest, getattr(args, dest)[0])
    if args.train_iters is None:
        sys.exit("stand-in: --train-iters is required (--train-samples is not supported)")
    if args.override_opt_param_scheduler and args.use_checkpoint_opt_param_scheduler:
        raise AssertionError("both override and use-checkpoint are set.")  # S:172-175
    if args.save is not None:  # A:837-839
        assert args.save_interval is not None and args.save_interval > 0
    if args.data_path and args.split is None:  # A:468-472: the legacy default split
        args.split = "969, 30, 1"
    return args


def moe_freq_type(text: str) -> int | list[int]:
    """A:231-256 and A:198-206: an int, or a list expression such as ``[0]*1+[1]*5``."""
    if "[" not in text:
        return int(text)
    if re.search(r"[^,\d\[\]\(\)\+\*]", text):
        raise ValueError(f"Invalid pattern: {text}")
    return eval(text)  # as Megatron does, after the same character check


# --------------------------------------------------------------------------------------------
# The "model": deterministic, seeded, carried by the checkpoint
# --------------------------------------------------------------------------------------------

def _step(w: float, seed: int, iteration: int) -> float:
    """One optimiser step: ``w`` shrinks by a factor drawn from (seed, iteration)."""
    return w * (1.0 - 0.02 - 0.03 * random.Random(seed * 1_000_003 + iteration).random())


def _train_v(st: dict, args: argparse.Namespace, lr: float) -> None:
    """One optimiser step on ``v`` at learning rate ``lr``: momentum ``m`` (the optimiser's
    state), a gradient with noise from the RNG stream (its position ``rng``)."""
    noise = random.Random(args.seed * 7919 + st["rng"]).random()
    st["rng"] += 1
    st["m"] = 0.5 * st["m"] + st["v"] * (0.02 + 0.01 * noise)
    st["v"] -= (lr / args.lr if args.lr else 0.0) * 0.5 * st["m"]


def scheduler(args: argparse.Namespace) -> dict:
    """The scheduler's state as the flags make it (T:1358-1370, in samples; S:300-310 keys)."""
    gbs = args.global_batch_size or 1
    decay = (args.lr_decay_iters or args.train_iters) * gbs
    warmup = args.lr_warmup_fraction * decay if args.lr_warmup_fraction is not None \
        else (args.lr_warmup_iters or 0) * gbs
    return {"max_lr": args.lr or 0.0, "min_lr": args.min_lr or 0.0, "lr_warmup_steps": warmup,
            "lr_decay_steps": decay, "lr_decay_style": args.lr_decay_style, "num_steps": 0}


def load_scheduler(args: argparse.Namespace, saved: dict) -> dict:
    """S:312-386: each value from the flags (override), the checkpoint (use-checkpoint), or
    asserted equal; the step count always from the checkpoint."""
    mine = scheduler(args)
    names = {"max_lr": "learning rate", "min_lr": "minimum learning rate",
             "lr_warmup_steps": "warmup iterations",
             "lr_decay_steps": "total number of iterations",
             "lr_decay_style": "learning rate decay style"}
    for key, name in names.items():
        if args.override_opt_param_scheduler:
            _say(f" > overriding {name} value to {mine[key]}")
            continue
        if not args.use_checkpoint_opt_param_scheduler:
            assert mine[key] == saved[key], (
                f"OptimizerParamScheduler: class input value {mine[key]} and checkpoint"
                f"value {saved[key]} for {name} do not match")
        _say(f" > using checkpoint value {saved[key]} for {name}")
        mine[key] = saved[key]
    mine["num_steps"] = saved["num_steps"]
    return mine


def _lr(args: argparse.Namespace, sched: dict) -> float:
    """S:215-279 (get_lr) at the scheduler's step count; the WSD decay length and shape are the
    flags' (not in the scheduler's state_dict)."""
    lr, min_lr, n = sched["max_lr"], sched["min_lr"], sched["num_steps"]
    warmup, total = sched["lr_warmup_steps"], sched["lr_decay_steps"]
    if warmup > 0 and n <= warmup:
        init = args.lr_warmup_init or 0.0
        return init + (lr - init) * float(n) / float(warmup)
    if sched["lr_decay_style"] == "constant":
        return lr
    if n > total:
        return min_lr
    if sched["lr_decay_style"] == "WSD":
        decay = (args.lr_wsd_decay_iters or 0) * (args.global_batch_size or 1)
        start = total - decay
        if n <= start:
            return lr
        r = (n - start) / decay
        coeff = {"linear": 1.0 - r, "cosine": 0.5 * (math.cos(math.pi * r) + 1.0),
                 "exponential": 2.0 * 0.5 ** r - 1.0,
                 "minus_sqrt": 1.0 - math.sqrt(r)}[args.lr_wsd_decay_style]
        return min_lr + coeff * (lr - min_lr)
    r = (n - warmup) / (total - warmup)
    coeff = 0.5 * (math.cos(math.pi * r) + 1.0) if sched["lr_decay_style"] == "cosine" \
        else 1.0 - r
    return min_lr + coeff * (lr - min_lr)


def _flops(args: argparse.Namespace, batch: int) -> float:
    """6 x active parameters x tokens (an estimate; T:220-612 counts more precisely)."""
    h, layers = args.hidden_size or 0, args.num_layers or 0
    attention = 4 * h * h
    if args.num_experts:
        mlp = 3 * h * ((args.moe_router_topk or 2) * (args.moe_ffn_hidden_size or 0)
                       + (args.moe_shared_expert_intermediate_size or 0))
    else:
        mlp = 3 * h * (args.ffn_hidden_size or 4 * h)
    embeddings = 2 * (args.vocab_size or 50304) * h
    return 6.0 * (layers * (attention + mlp) + embeddings) * batch * (args.seq_length or 1)


# --------------------------------------------------------------------------------------------
# Checkpoints (C = megatron/training/checkpointing.py)
# --------------------------------------------------------------------------------------------

def save_checkpoint(args: argparse.Namespace, iteration: int, state: dict) -> None:
    """C:529-530 (announce), C:171 (iter_NNNNNNN), C:720-730 (tracker, then the success line)."""
    _say(f"[{_now()}] saving checkpoint at iteration {iteration:7d} to {args.save} "
         f"in {args.ckpt_format} format")
    if RANK == 0:  # every rank saves its shard (ours: rank 0 the one file)
        folder = Path(args.save) / f"iter_{iteration:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STATE).write_text(json.dumps(dict(state, iteration=iteration)))
    barrier()  # C:701: every rank's shard is written
    if RANK == 0:  # then rank 0 writes the tracker (C:704-723)
        (Path(args.save) / TRACKER).write_text(str(iteration))
    tp, pp = args.tensor_model_parallel_size or 1, args.pipeline_model_parallel_size or 1
    _say(f"  [{_now()}] successfully saved checkpoint from iteration {int(iteration):7d} to "
         f"{args.save} [ t 1/{tp}, p 1/{pp} ]")
    barrier()  # C:798


def load_checkpoint(args: argparse.Namespace, fresh: dict) -> dict:
    """C:1206-1233 and C:1898: the tracker names the iteration, ``--ckpt-step`` (when non-zero)
    overrides it, tracker or not (C:215-216, C:1187-1189); no iteration = start afresh. Then
    what Megatron restores: the iteration and consumed samples unless --finetune (C:1731-1752),
    the optimiser and the scheduler unless --finetune/--no-load-optim (C:1785-1823), the RNG
    unless --finetune/--no-load-rng (C:1841); the model always."""
    if not args.load:
        return fresh
    tracker = Path(args.load) / TRACKER
    iteration = agree(int(tracker.read_text().strip()) if tracker.is_file() else -1)  # C:316
    if args.ckpt_step:
        iteration = args.ckpt_step
    if iteration == -1:
        _say(f"WARNING: could not find the metadata file {tracker}")
        _say("    will not load any checkpoints and will start from random")
        return fresh
    folder = Path(args.load) / f"iter_{iteration:07d}"
    infix = "distributed " if args.ckpt_format == "torch_dist" else ""
    _say(f" loading {infix}checkpoint from {args.load} at iteration {iteration}")
    if not (folder / STATE).is_file():  # C:1142: os.listdir of a missing iter_ directory
        raise FileNotFoundError(f"[Errno 2] No such file or directory: {str(folder)!r}")
    saved = json.loads((folder / STATE).read_text())
    state = dict(fresh, w=saved["w"], v=saved["v"])  # the model, always
    if not args.finetune:
        state.update(iteration=saved["iteration"], consumed=saved["consumed"])
        if not args.no_load_optim:
            state.update(m=saved["m"], sched=load_scheduler(args, saved["sched"]))
        if not args.no_load_rng:
            state["rng"] = saved["rng"]
    tp, pp = args.tensor_model_parallel_size or 1, args.pipeline_model_parallel_size or 1
    _say(f"  successfully loaded checkpoint from {args.load} [ t 1/{tp}, p 1/{pp} ] "
         f"at iteration {iteration}")
    return state


# --------------------------------------------------------------------------------------------
# Log lines (T = megatron/training/training.py)
# --------------------------------------------------------------------------------------------

def training_line(args: argparse.Namespace, iteration: int, consumed: int, elapsed_s: float,
                  count: int, sums: dict[str, float], grad_norm: float, lr: float) -> str:
    """T:2030-2097, field for field, in order."""
    per_iter = elapsed_s / count
    world = WORLD_SIZE
    text = f" [{_now()}] iteration {iteration:8d}/{args.train_iters:8d} |"
    text += f" consumed samples: {consumed:12d} |"
    text += f" elapsed time per iteration (ms): {per_iter * 1000.0:.1f} |"
    if args.log_throughput:  # T:2043-2044
        tflops = _flops(args, args.global_batch_size or 1) / (per_iter * 10**12 * world)
        text += f" throughput per GPU (TFLOP/s/GPU): {tflops:.1f} |"
    text += f" learning rate: {lr:.6E} |"
    text += f" global batch size: {args.global_batch_size or 1:5d} |"
    for name, total in sums.items():  # T:2067-2075: averages over the interval, if > 0
        if total / max(1, count) > 0.0:
            text += f" {name}: {total / max(1, count):.6E} |"
    text += " loss scale: 1.0 |"  # bf16: constant loss scale 1.0
    if (args.clip_grad or 0.0) > 0.0:  # grad norm is computed (and logged) when clipping
        text += f" grad norm: {grad_norm:.3f} |"
    text += f" number of skipped iterations: {0:3d} |"
    text += f" number of nan iterations: {0:3d} |"
    return text


def validation_lines(prefix: str, lm_loss: float, writer: TensorBoard | None = None,
                     iteration: int = 0, consumed: int = 0) -> None:
    """T:3253-3281: `` validation loss at {prefix} | lm loss value: ... | lm loss PPL: ... | ``
    framed by dashes one longer than the line; with a writer (T:3206-3209) the scalars
    ``lm loss validation`` at the iteration and ``lm loss validation vs samples`` (T:3258-3264),
    under the same tags whether the set is the validation or the TEST one (the final test
    evaluation goes through the same function, T:1094-1107)."""
    if writer is not None:
        writer.add_scalar("lm loss validation", lm_loss, iteration)
        writer.add_scalar("lm loss validation vs samples", lm_loss, consumed)
    text = f" validation loss at {prefix} | "
    text += f"lm loss value: {lm_loss:.6E} | lm loss PPL: {math.exp(min(20, lm_loss)):.6E} | "
    _say_last("-" * (len(text) + 1))
    _say_last(text)
    _say_last("-" * (len(text) + 1))


def moe_layers(args: argparse.Namespace) -> list[int]:
    """1 for each MoE layer, 0 for a dense one, over ``--num-layers`` (M:1004-1014)."""
    layers, freq = args.num_layers or 1, args.moe_layer_freq
    if isinstance(freq, list):
        return list(freq)
    return [1 if i % freq == 0 else 0 for i in range(layers)]


# The load-balancing types and the name each one's loss is tracked under (R:283-313, 315-368,
# 370-410).
AUX_TYPES = {"aux_loss": "load_balancing_loss", "seq_aux_loss": "seq_load_balancing_loss",
             "global_aux_loss": "global_load_balancing_loss"}


def aux_loss_coeff(args: argparse.Namespace, kind: str) -> float:
    """R:253-266 (get_aux_loss_coeff): a single type (a str after A:1031-1032) must EQUAL
    ``kind``; a list of types holds it at the index of its coefficient; else 0."""
    types, coeff = args.moe_router_load_balancing_type, args.moe_aux_loss_coeff
    if isinstance(types, str):
        return coeff if types == kind else 0.0
    return coeff[types.index(kind)] if kind in types else 0.0


def tracked_moe_losses(args: argparse.Namespace) -> list[str]:
    """T:1958-1965: the names always tracked (zeros when not computed, M:993-1001). Megatron
    tests ``"aux_loss" in`` the type, a SUBSTRING test on a single type (a str, A:1031-1032),
    so seq_aux_loss and global_aux_loss also track load_balancing_loss (at 0)."""
    types = args.moe_router_load_balancing_type
    names = [name for kind, name in AUX_TYPES.items() if kind in types]
    return names + (["z_loss"] if args.moe_z_loss_coeff is not None else [])


def layer_moe_losses(args: argparse.Namespace, w: float) -> dict[str, list[float]]:
    """Each tracked MoE loss per layer (all ``--num-layers``; 0 for dense layers, M:896-897),
    without its coefficient as R:448-455 and R:505-507 track it. A load-balancing loss is
    computed only when its type's coefficient is non-zero (R:283-285, 331-333, 378-380: else
    the tracked values stay 0, which the log line omits, T:2069, and TensorBoard still gets).
    The z-loss is computed whenever its coefficient is given (R:484) and tracked as
    ``z_loss / coeff`` (R:505-507), and with coefficient 0 that is 0/0: NaN in every MoE layer
    (z_loss_func returns mean(lse^2) * 0, M:152-164), so TensorBoard gets NaN every iteration
    and the log line drops it (``NaN > 0.0`` is False, T:2067-2069). Stand-in values: a
    balanced router's 1 + a little per layer, the z-loss shrinking with ``w``."""
    if not args.num_experts:
        return {}
    pattern, out = moe_layers(args), {}
    for kind, name in AUX_TYPES.items():
        if name in tracked_moe_losses(args):
            on = 1.0 if aux_loss_coeff(args, kind) != 0 else 0.0
            out[name] = [on * m * (1.0 + 0.01 * w * (1 + i)) for i, m in enumerate(pattern)]
    if args.moe_z_loss_coeff is not None:
        z = math.nan if args.moe_z_loss_coeff == 0 else None  # 0/0 (R:505-507)
        out["z_loss"] = [m * (4.0 + w + 0.1 * i) if z is None or not m else z
                         for i, m in enumerate(pattern)]
    return out


def _losses(args: argparse.Namespace, w: float, v: float) -> dict[str, float]:
    """``lm loss`` (pretrain_gpt.py's loss_func), then the MoE losses T:1960-1966 tracks: the
    sum over layers / the number of MoE layers (M:1019-1025)."""
    out = {"lm loss": 2.0 + w + v}
    moe = max(1, sum(moe_layers(args)))
    out.update({name: sum(values) / moe for name, values in layer_moe_losses(args, w).items()})
    return out


class TensorBoard:
    """Megatron's SummaryWriter on the last rank when ``--tensorboard-dir`` is given (G:170-183):
    the same event files, written with the tensorboard package's EventFileWriter (what
    torch.utils.tensorboard's FileWriter wraps); opened at the first scalar."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.dir = args.tensorboard_dir if RANK == WORLD_SIZE - 1 else None
        self.writer = None

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        if self.dir is None:
            return
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        if self.writer is None:
            self.writer = EventFileWriter(self.dir, max_queue_size=1000)  # G:183
        self.writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(
            value=[Summary.Value(tag=tag, simple_value=value)])))

    def add_text(self, tag: str, text: str, step: int) -> None:
        """torch.utils.tensorboard's add_text: a string tensor under ``<tag>/text_summary``
        with the text plugin's metadata (torch/utils/tensorboard/summary.py ``text``)."""
        if self.dir is None:
            return
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        if self.writer is None:
            self.writer = EventFileWriter(self.dir, max_queue_size=1000)
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
        tensor = TensorProto(dtype="DT_STRING", string_val=[text.encode()],
                             tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
        self.writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(
            value=[Summary.Value(tag=f"{tag}/text_summary", metadata=meta, tensor=tensor)])))

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def track_moe_metrics(args: argparse.Namespace, writer: TensorBoard, iteration: int,
                      w: float) -> None:
    """M:1026-1036: every iteration, the layer mean; with --moe-per-layer-logging each layer."""
    moe = max(1, sum(moe_layers(args)))
    for name, values in layer_moe_losses(args, w).items():
        writer.add_scalar(name, sum(values) / moe, iteration)
        if args.moe_per_layer_logging:
            for i, value in enumerate(values):
                writer.add_scalar(f"moe/{name}_layer_{i}", value, iteration)


# --------------------------------------------------------------------------------------------
# pretrain() and train()
# --------------------------------------------------------------------------------------------

def splits(args: argparse.Namespace) -> tuple[bool, bool]:
    """(do_valid, do_test), T:3401-3403: a split exists and eval_iters > 0 (or full validation).
    Without a data path the datasets are mock ones split "1,1,1" whatever --split says
    (megatron/core/datasets/blended_megatron_dataset_config.py:137-149); a zero weight in
    --split builds no dataset for that split (same file, 175-215: a None in the split matrix)."""
    evaluates = bool(args.full_validation or (args.eval_iters or 0) > 0)
    if args.mock_data or not args.data_path:
        return evaluates, evaluates
    weights = [float(x) for x in (args.split or "1,0,0").replace(" ", "").split(",")] + [0, 0]
    return evaluates and weights[1] > 0, evaluates and weights[2] > 0


def start_up(args: argparse.Namespace) -> None:
    """initialize_megatron up to the exit-signal handler (``I`` =
    megatron/training/initialize.py): validate_args prints the arguments on rank 0 (A:1283,
    A:1288-1299), then set_global_variables (I:96) builds the tokenizer (its first line,
    megatron/training/tokenizer/tokenizer.py:24; from the model hub for FLAME's
    HuggingFaceTokenizer), the TensorBoard writer and the timers, and only then installs the
    handler (G:113-114 -> G:77-81 -> dist_signal_handler.py:60-70, a flag set by the signal).
    ``FLAME_STANDIN_STARTUP_S`` seconds stand for that start-up (Megatron's imports, the
    tokenizer's download: tens of seconds): a signal in it meets Python's default action
    and kills the rank (SIGTERM; SIGUSR2 too, which launch.sh ignores), as it kills Megatron's."""
    _say("------------------------ arguments ------------------------")
    for dest in sorted(vars(args), key=str.lower):
        _say(f"  {dest} {'.' * (48 - len(dest))} {getattr(args, dest)}")
    _say("-------------------- end of arguments ---------------------")
    _say(f"> building {args.tokenizer_type} tokenizer ...")
    time.sleep(float(os.environ.get("FLAME_STANDIN_STARTUP_S", "0")))
    if args.exit_signal_handler:  # only a flag is set (dist_signal_handler.py:65-66)
        signal.signal(args.exit_signal, lambda signum, frame: RECEIVED.append(signum))


def main(argv: list[str]) -> int:
    """pretrain_gpt.py's main: load, train (T:2417-3032), final save and evaluation
    (T:1030-1107)."""
    args = parse(argv)
    start_up(args)
    join_world()
    st = load_checkpoint(args, {"iteration": 0, "consumed": 0,
                                "w": 6.0 + random.Random(args.seed).random(), "v": 1.0,
                                "m": 0.0, "rng": 0, "sched": scheduler(args)})
    do_valid, do_test = splits(args)
    args.do_valid, args.do_test = do_valid, do_test  # T:3414-3415
    writer = TensorBoard(args)  # G:103 -> G:170-183, before the handler
    try:
        return _pretrain(args, st, writer)
    finally:
        # Megatron's last explicit flush is T:3001-3003; the final evaluations' scalars reach
        # the file through the writer's own thread. The stand-in closes it: they are there.
        writer.close()
        leave_world()


def leave_world() -> None:
    """pretrain() (core_v0.16.1 training.py, its end) returns without destroying its process
    group, and NCCL's destructor at exit only warns. gloo's does not: with the group alive,
    its threads were still joinable when the interpreter ended, and a rank aborted
    ("terminate called without an active exception", SIGABRT) after its last line in one run
    of the two-node test in about twenty, leaving the other node's launcher waiting 300 s
    for it. Destroying the group keeps the stand-in's exit Megatron's: 0."""
    if _WORLD:
        _WORLD.pop().destroy_process_group()


def _pretrain(args: argparse.Namespace, st: dict, writer: TensorBoard) -> int:
    """T:1026-1107: train, the final save, the final validation and test evaluations."""
    do_valid, do_test = args.do_valid, args.do_test
    if not args.skip_train:  # T:1026-1061
        _say("training ...")
        if args.train_iters > 0:  # T:1030 (do_train: a training dataset exists)
            stop = train(args, st, writer)
            if stop:
                # T:3021-3030: sys.exit(exit_code) from inside train(): no final validation
                # or test evaluation, even when the signal came at the last iteration; exit_code
                # is 0 unless the rerun state machine set it (T:2576, T:1687-1689)
                return 0
        else:
            st["iteration"] = 0  # T:1029
        print_datetime("after training is done")  # T:1045
        # T:1047: the final save unless the last iteration was just saved by save_interval.
        iteration = st["iteration"]
        if args.save and iteration != 0 and iteration % args.save_interval != 0:
            save_checkpoint(args, iteration, st)
    else:
        _say("skipping training (--skip-train is on) ...")  # T:1064
    iteration, loss = st["iteration"], st["w"] + st["v"]
    final_writer = None if args.skip_train else writer  # write_to_tensorboard=not skip_train
    if do_valid:  # T:1068-1092
        validation_lines(f"iteration {iteration} on validation set", 2.05 + loss,
                         final_writer, iteration, st["consumed"])
    if do_test:  # T:1094-1107
        validation_lines(f"iteration {iteration} on test set", 2.07 + loss,
                         final_writer, iteration, st["consumed"])
    return 0


def train(args: argparse.Namespace, st: dict, writer: TensorBoard) -> bool:
    """T:2417-3032's loop on the run state ``st``; returns whether it exited on a condition."""
    # T:2511 -> I:430-436: every argument as text at the loaded iteration (do_valid and
    # do_test among them: set before train(), T:3414-3415)
    for dest in vars(args):
        writer.add_text(dest, str(getattr(args, dest)), st["iteration"])
    print_datetime("before the start of training step")  # T:2572
    do_valid = args.do_valid
    try:
        return _loop(args, st, writer, do_valid)
    finally:
        writer.flush()  # T:3000-3003, after the loop whichever way it ended


def _loop(args: argparse.Namespace, st: dict, writer: TensorBoard, do_valid: bool) -> bool:
    """The iterations themselves (T:2684-3000)."""
    gbs = args.global_batch_size or 1
    sums: dict[str, float] = {}
    count, first, began = 0, True, time.time()
    step_s = float(os.environ.get("FLAME_STANDIN_STEP_S", "0.001"))
    while st["iteration"] < args.train_iters:  # T:2684
        time.sleep(step_s)
        st["w"] = w = _step(st["w"], args.seed, st["iteration"] + 1)
        _train_v(st, args, _lr(args, st["sched"]))  # the lr the scheduler set last
        st["sched"]["num_steps"] += gbs  # after the optimiser step (S:281-287)
        st["iteration"] = iteration = st["iteration"] + 1  # T:2839
        st["consumed"] += gbs  # T:2869
        consumed = st["consumed"]
        count += 1
        for name, value in _losses(args, w, st["v"]).items():
            sums[name] = sums.get(name, 0.0) + value
        if iteration % (args.tensorboard_log_interval or 1) == 0:  # T:1879, T:1902-1904
            writer.add_scalar("lm loss", _losses(args, w, st["v"])["lm loss"], iteration)
        track_moe_metrics(args, writer, iteration, w)  # T:1974-1987, every iteration
        # T:2008: printed when iteration % log_interval == 0, and on the first iteration of this
        # process (is_first_iteration, T:2577/2909-2911) -- which, after a --load, is the first
        # iteration after the checkpoint. The first one does not reset the sums (T:1797
        # should_reset), so the next line still averages the whole interval.
        if iteration % args.log_interval == 0 or first:
            _say_last(training_line(args, iteration, consumed, time.time() - began, count, sums,
                                    grad_norm=1.0 + w / 10, lr=_lr(args, st["sched"])))
            if not first:
                sums, count, began = {}, 0, time.time()
        first = False
        # T:2914-2950: evaluation every eval_interval (None = never) when there is a
        # validation set.
        if args.eval_interval and iteration % args.eval_interval == 0 and do_valid:
            validation_lines(f"iteration {iteration}", 2.05 + w + st["v"], writer, iteration,
                             consumed)
        if checkpoint_and_decide_exit(args, iteration, st, RECEIVED):
            return True
    return False


def checkpoint_and_decide_exit(args: argparse.Namespace, iteration: int, state: dict,
                               received: list[int]) -> bool:
    """T:2305-2414, in its order: signal (save, exit), regular save, duration, interval."""
    # every rank's flags (T:2324): one all-reduce an iteration, standing for the gradient
    # all-reduce too, which keeps Megatron's ranks in step with or without the handler
    signalled = agree(int(bool(received)))
    if args.exit_signal_handler and signalled:  # T:2322-2337, any rank's signal
        if args.save:
            save_checkpoint(args, iteration, state)
        print_datetime("exiting program after receiving SIGTERM.")  # whatever the signal
        return True
    saved = False
    if args.save and args.save_interval and iteration % args.save_interval == 0:  # T:2340
        save_checkpoint(args, iteration, state)
        saved = True
    if args.exit_duration_in_mins:  # T:2370-2390
        train_time = (time.time() - _START) / 60.0
        if train_time > args.exit_duration_in_mins:
            if args.save and not saved:
                save_checkpoint(args, iteration, state)
            print_datetime(f"exiting program after {train_time} minutes")
            return True
    if args.exit_interval and iteration % args.exit_interval == 0:  # T:2393-2411
        if args.save and not saved:
            save_checkpoint(args, iteration, state)
        print_datetime(f"exiting program at iteration {iteration}")
        return True
    return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

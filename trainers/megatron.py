"""The Megatron-LM launcher: renders ``runs/<run_id>/launch.sh`` (``pretrain_gpt.py`` with
Megatron-LM's own flags, core_v0.16+) and, inside a job, runs it.

Multi-node: ``srun`` with one task per GPU, each task taking ``RANK``/``LOCAL_RANK`` from
``SLURM_PROCID``/``SLURM_LOCALID`` and ``MASTER_ADDR`` from the allocation's first node (what
submitit's ``TorchDistributedEnvironment`` derives from the same variables). Chosen over
torchrun-under-srun because SLURM then delivers signals straight to every Megatron rank, whose
``--exit-signal-handler`` saves a checkpoint and exits together; an elastic agent in between
would have to forward them, and kills workers after a grace period. Outside SLURM (a user
running launch.sh by hand on one machine) the script falls back to ``torchrun --standalone``.

Checkpoints: ``--save``/``--load`` both point at ``runs/<run_id>/checkpoints`` so a requeued job
resumes; ``--save-interval`` gives 10 checkpoints per run (FLAME-MoE's recipe). Preemption: the
job's deferred SIGUSR2/SIGTERM is forwarded as SIGTERM (Megatron's default ``--exit-signal``) to
the launch's process group; Megatron checkpoints and exits; then the previous handler runs.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from sweep.arch import ConfigError, MoEArch
from sweep.planrow import PlanRow
from sweep.io import (CHECKPOINTS_DIR, METRICS_JSONL, TENSORBOARD_DIR, TRAIN_LOG,
                      atomic_write_text)
from trainers.logformat import ParsedLog, parse_lines
from trainers.signals import DeferredSignals, Preempted
from trainers.settings import MegatronConfig, Recipe, trainer_config

LAUNCH_SH = "launch.sh"
CHECKPOINTS_PER_RUN = 10


def _layer_pattern(arch: MoEArch) -> str:
    # Megatron's --moe-layer-freq list expression: 0 = dense layer, 1 = MoE layer.
    return f"([0]*{arch.first_dense_layers}+[1]*{arch.num_moe_layers})"


def megatron_args(row: PlanRow | Mapping[str, Any], cfg: Mapping[str, Any],
                  run_dir: Path) -> list[tuple[str, list[tuple[str, Any]]]]:
    """``pretrain_gpt.py`` flags as (section, [(flag, value or None for a switch)])."""
    spec, t = PlanRow.of(row), Recipe.from_cfg(cfg["training"])
    m = megatron_config(cfg)
    a, iters = spec.arch, spec.train_iters
    mbs = spec.micro_batch_size or m.micro_batch_size
    if spec.global_batch_size % (mbs * (m.nodes * m.gpus_per_node)):
        raise ConfigError(f"global_batch_size={spec.global_batch_size} is not a multiple of "
                          f"micro_batch_size={mbs} x {m.nodes * m.gpus_per_node} GPUs; change "
                          "the family's micro_batch_size or trainer.nodes/gpus_per_node")
    if a.num_moe_layers == 0:
        raise ConfigError(f"{spec.member}: no MoE layer (first_dense_layers = num_layers)")
    model = [("--num-layers", a.num_layers), ("--hidden-size", a.hidden_size),
             ("--num-attention-heads", a.num_attention_heads),
             ("--ffn-hidden-size", a.ffn_hidden_size), ("--seq-length", a.seq_length),
             ("--max-position-embeddings", a.seq_length), ("--position-embedding-type", "rope"),
             ("--normalization", "RMSNorm"), ("--swiglu", None), ("--disable-bias-linear", None),
             ("--init-method-std", t.init_std), ("--bf16", None)]
    if not a.tie_embeddings:
        model.append(("--untie-embeddings-and-output-weights", None))
    moe = [("--num-experts", a.num_experts), ("--moe-router-topk", a.moe_router_topk),
           ("--moe-ffn-hidden-size", a.moe_ffn_hidden_size),
           ("--moe-layer-freq", _layer_pattern(a)),
           ("--moe-router-load-balancing-type", "aux_loss"),
           ("--moe-aux-loss-coeff", t.aux_loss_coeff),
           ("--moe-z-loss-coeff", t.z_loss_coeff),
           ("--moe-token-dispatcher-type", "alltoall"), ("--moe-router-pre-softmax", None)]
    if a.shared_expert_size:
        moe.insert(3, ("--moe-shared-expert-intermediate-size", a.shared_expert_size))
    if m.moe_grouped_gemm:
        moe.append(("--moe-grouped-gemm", None))
    parallel = [("--expert-model-parallel-size", m.expert_model_parallel_size),
                ("--tensor-model-parallel-size", 1), ("--pipeline-model-parallel-size", 1)]
    if m.use_distributed_optimizer:
        parallel.append(("--use-distributed-optimizer", None))
    decay_iters = max(1, t.decay_iters(iters))
    optim = [("--micro-batch-size", mbs), ("--global-batch-size", spec.global_batch_size),
             ("--train-iters", iters), ("--seed", t.seed), ("--optimizer", "adam"),
             ("--lr", t.lr), ("--min-lr", t.min_lr), ("--lr-decay-style", "WSD"),
             ("--lr-wsd-decay-style", t.decay_style),
             ("--lr-wsd-decay-iters", decay_iters),
             ("--lr-warmup-fraction", t.warmup_fraction),
             ("--weight-decay", t.weight_decay), ("--adam-beta1", t.adam_beta1),
             ("--adam-beta2", t.adam_beta2), ("--clip-grad", t.clip_grad)]
    ckpt_dir = run_dir / CHECKPOINTS_DIR
    io = [("--eval-interval", m.eval_interval or max(1, math.ceil(iters / 10))),
          ("--eval-iters", m.eval_iters), ("--save", ckpt_dir), ("--load", ckpt_dir),
          ("--save-interval", max(1, math.ceil(iters / CHECKPOINTS_PER_RUN))),
          ("--exit-signal-handler", None), ("--log-interval", m.log_interval),
          ("--log-throughput", None), ("--tensorboard-dir", run_dir / TENSORBOARD_DIR)]
    if m.mock_data:
        data = [("--mock-data", None), ("--tokenizer-type", "NullTokenizer"),
                ("--vocab-size", a.vocab_size - 1)]  # NullTokenizer adds the EOD id
    else:
        data = [("--data-path", " ".join(m.data_path or [])), ("--split", m.split),
                ("--tokenizer-type", m.tokenizer_type)]
        if m.tokenizer_model:
            data.append(("--tokenizer-model", m.tokenizer_model))
    if m.data_cache_path:
        data.append(("--data-cache-path", m.data_cache_path))
    sections = [("model", model), ("mixture of experts", moe), ("parallelism", parallel),
                ("batch, optimiser, WSD schedule", optim),
                ("evaluation, checkpoints, logging", io), ("data", data)]
    if m.extra_args:
        words = [w for arg in m.extra_args for w in shlex.split(arg)]
        sections.append(("extra (trainer.extra_args)", [(w, None) for w in words]))
    return sections


def _fmt(flag: str, value: Any) -> str:
    # Every word is quoted: values come from configs and command lines, never from the shell.
    if value is None:
        return f"  {shlex.quote(flag)}"
    if flag == "--data-path":  # several prefixes (and weights): separate words
        return f"  {flag} {' '.join(shlex.quote(v) for v in str(value).split())}"
    return f"  {flag} {shlex.quote(str(value))}"


def megatron_config(cfg: Mapping[str, Any]) -> MegatronConfig:
    """The config's trainer as a validated MegatronConfig (ConfigError naming the key)."""
    m = trainer_config(cfg["trainer"])
    if not isinstance(m, MegatronConfig):
        raise ConfigError(f"trainer.name={m.name!r}: launch.sh is for trainer=megatron")
    m.validate()
    return m


def render_launch(row: PlanRow | Mapping[str, Any], cfg: Mapping[str, Any],
                  run_dir: Path) -> str:
    """The text of ``runs/<run_id>/launch.sh``: readable, runnable by hand."""
    run_dir = Path(run_dir).resolve()
    spec, m = PlanRow.of(row), megatron_config(cfg)
    lines = ["#!/usr/bin/env bash",
             f"# flame run {spec.run_id}: {spec.member} at budget {spec.budget:.3g} "
             f"FLOPs, {spec.train_iters} iterations x {spec.global_batch_size} x "
             f"{spec.arch.seq_length} tokens.",
             "# Written by trainers/megatron.py. Run by hand with `bash launch.sh` (inside a",
             "# SLURM allocation: srun, one task per GPU; elsewhere: torchrun on this machine).",
             "set -euo pipefail", "",
             f"MEGATRON={shlex.quote(m.megatron_path)}",
             f"PYTHON={shlex.quote(m.python)}",
             f"GPUS_PER_NODE={m.gpus_per_node}",
             f"NODES={m.nodes}",
             "export CUDA_DEVICE_MAX_CONNECTIONS=1", "", "ARGS=("]
    for title, flags in megatron_args(row, cfg, run_dir):
        lines.append(f"  # {title}")
        lines += [_fmt(flag, value) for flag, value in flags]
    lines += [")", "",
              'if [[ -n "${SLURM_JOB_ID:-}" ]]; then',
              '  # Ranks from SLURM, as submitit\'s TorchDistributedEnvironment derives them.',
              '  MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
              f"  export MASTER_ADDR MASTER_PORT={m.master_port}",
              "  export WORLD_SIZE=$((NODES * GPUS_PER_NODE))",
              '  exec srun --nodes="$NODES" --ntasks-per-node="$GPUS_PER_NODE" '
              "--kill-on-bad-exit=1 \\",
              "    bash -c 'export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID; "
              'exec "$0" "$@"\' \\',
              '    "$PYTHON" "$MEGATRON/pretrain_gpt.py" "${ARGS[@]}"',
              "else",
              '  exec "$PYTHON" -m torch.distributed.run --standalone '
              '--nproc-per-node="$GPUS_PER_NODE" \\',
              '    "$MEGATRON/pretrain_gpt.py" "${ARGS[@]}"',
              "fi", ""]
    return "\n".join(lines)


def write_launch(row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path) -> Path:
    """Write ``run_dir/launch.sh`` (atomically, executable) and return its path."""
    path = Path(run_dir) / LAUNCH_SH
    atomic_write_text(path, render_launch(row, cfg, run_dir))
    path.chmod(0o755)
    return path


def metrics_from_log(parsed: ParsedLog, global_batch_size: int, seq_length: int) -> list[dict]:
    """metrics.jsonl records from Megatron's own log lines."""
    out = []
    for rec in parsed.train:
        samples = rec.get("consumed samples", rec["iteration"] * global_batch_size)
        ms = rec.get("elapsed time per iteration (ms)")
        out.append({"kind": "train", "iteration": rec["iteration"],
                    "consumed_tokens": int(samples) * seq_length,
                    "lr": rec.get("learning rate"), "train_loss": rec.get("lm loss"),
                    "aux_loss": rec.get("load_balancing_loss"), "z_loss": rec.get("z_loss"),
                    "grad_norm": rec.get("grad norm"),
                    "tokens_per_s": global_batch_size * seq_length / (ms / 1000.0)
                    if ms else None, "time": None})
    for rec in parsed.validation:
        out.append({"kind": "eval", "iteration": rec["iteration"],
                    "consumed_tokens": rec["iteration"] * global_batch_size * seq_length,
                    "val_loss": rec["lm loss value"], "final": rec["final"], "time": None})
    return sorted(out, key=lambda r: (r["iteration"], r["kind"] == "eval"))


def train(row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path,
          signals: DeferredSignals) -> dict[str, Any]:
    """Run launch.sh, appending its output to train.log; forward a deferred signal as SIGTERM
    (Megatron checkpoints and exits), then hand it on; summarise from the log."""
    spec, run_dir = PlanRow.of(row), Path(run_dir)
    script = write_launch(row, cfg, run_dir)
    began = time.time()
    with open(run_dir / TRAIN_LOG, "ab") as log:
        proc = subprocess.Popen(["bash", str(script)], stdout=log, stderr=subprocess.STDOUT,
                                cwd=run_dir, start_new_session=True)
        while proc.poll() is None:
            if signals.pending is not None:
                os.killpg(proc.pid, signal.SIGTERM)  # Megatron's --exit-signal (default)
                proc.wait()
                signals.deliver(_last_iteration(run_dir))
            time.sleep(0.5)
    parsed = parse_lines(open(run_dir / TRAIN_LOG, errors="replace"))
    records = metrics_from_log(parsed, spec.global_batch_size, spec.arch.seq_length)
    atomic_write_text(run_dir / METRICS_JSONL, "".join(json.dumps(r) + "\n" for r in records))
    if proc.returncode != 0:
        tail = (run_dir / TRAIN_LOG).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"Megatron-LM exited with {proc.returncode}; end of train.log:\n{tail}")
    final = [v for v in parsed.validation if v["final"]]
    last_iter = parsed.train[-1]["iteration"] if parsed.train else 0
    if last_iter < spec.train_iters or not final:
        raise RuntimeError(f"Megatron-LM stopped at iteration {last_iter} of "
                           f"{spec.train_iters} without a final validation; see {TRAIN_LOG}")
    return {"trainer": "megatron", "final_val_loss": final[-1]["lm loss value"],
            "iterations": last_iter, "tokens": spec.tokens, "wall_s": time.time() - began}


def _last_iteration(run_dir: Path) -> int:
    parsed = parse_lines(open(run_dir / TRAIN_LOG, errors="replace"))
    return parsed.train[-1]["iteration"] if parsed.train else 0


__all__ = ["render_launch", "write_launch", "megatron_args", "metrics_from_log", "train",
           "MegatronConfig", "Preempted"]

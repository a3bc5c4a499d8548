"""The Megatron-LM launcher: renders ``runs/<run_id>/launch.sh`` (``pretrain_gpt.py`` with
FLAME-MoE's flags, Megatron-LM core_v0.16.1) and, inside a job, runs it.

Layout (FLAME-MoE's, configs/train/flame-moe.sh:4-11): a job of ``trainer.nodes`` nodes with
one task per node (submitit starts it with srun); each node's task runs launch.sh, which
execs **torchrun** with ``--nnodes $SLURM_NNODES --node_rank $SLURM_NODEID --nproc_per_node
GPUS --rdzv-backend static --master_addr <first node> --master_port <port>``. There is no srun
inside launch.sh: the step already exists. Outside SLURM (``cluster=local``, or a user running
it by hand) launch.sh runs ``torchrun --standalone`` on this machine.

Static rendezvous, not FLAME-MoE's c10d: c10d numbers the nodes by host name and torchrun's pid
(torch 2.13 elastic/rendezvous/dynamic_rendezvous.py, ranks assigned over
``sorted(state.participants)``, a ``_NodeDesc(addr, pid, local_id)``) and ignores
``--node_rank`` (torch/distributed/run.py warns so), so which node holds the last rank, the one
that prints Megatron's training and validation lines, is not known in advance (on one host it
follows which torchrun started first). Static rendezvous (torchrun's default, and Megatron-LM's
examples': ``--master_addr``/``--master_port``) makes node k's group rank SLURM_NODEID, so the
last rank is on the last node, whose launcher writes ``train.log``. flame gives up nothing by
it: it restarts a job by requeueing, never torchrun's elastic membership changes.

Signals: SLURM signals every process of the step, not only submitit's task (observed on the
local SLURM: ``scancel --signal=USR2`` killed torchrun with signal 12), so launch.sh ignores
USR2 (``trap '' USR2``, inherited by torchrun and the ranks); the task forwards its deferred
SIGUSR2/SIGTERM to the ranks as SIGTERM (Megatron's default ``--exit-signal``), whose
``--exit-signal-handler`` saves at the next iteration and exits 0 (core_v0.16.1
training.py:2322-2337). Running launch.sh in a job, one log per node, and deciding completed /
preempted / failed from Megatron's own evidence (a signal never ends in ``failed``):
``trainers.megatron_job``.

Trunks and branches (``planner.strategy=branches``; docs/megatron_branches.md, with citations):
a trunk warms up and holds the lr (``--lr-decay-style constant``) to its last branch step,
keeping a checkpoint at each branch step: with one ``--save-interval`` (the steps' gcd) when
that keeps at most ``trainer.max_trunk_checkpoints``, else in launches that each stop at the
next step (``--exit-interval``) and resume from it. A branch loads its trunk's checkpoint in
place (``--load <trunk> --ckpt-step <branch_step>``; its own once it has one, so a requeue
resumes there), overrides the trunk's scheduler (``--override-opt_param-scheduler``) and
decays over its own iterations (``--lr-wsd-decay-iters``).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweep.arch import MoEArch
from sweep.errors import ConfigError
from sweep.io import CHECKPOINTS_DIR, TENSORBOARD_DIR, atomic_write_text
from sweep.planrow import PlanRow
from trainers.logformat import ParsedLog
from trainers.settings import MegatronConfig, Recipe, trainer_config
from trainers.signals import Preempted

LAUNCH_SH = "launch.sh"
TRACKER = "latest_checkpointed_iteration.txt"  # core_v0.16.1 checkpointing.py:277-281
# FLAME-MoE's environment (scripts/training/modules/flame-moe_step2.sh:5-8).
FLAME_ENV = (("OMP_NUM_THREADS", "16"), ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "true"),
             ("TORCH_NCCL_TRACE_BUFFER_SIZE", "8"), ("TORCH_NCCL_DUMP_ON_TIMEOUT", "1"))


def _layer_pattern(arch: MoEArch) -> str:
    # Megatron's --moe-layer-freq list expression (0 = dense, 1 = MoE), written as FLAME-MoE
    # wrote it (scripts/release/*.sh:7): "[0]*1+[1]*(L-1)" evaluated, without parentheses.
    return f"[0]*{arch.first_dense_layers}+[1]*{arch.num_moe_layers}"


def interval(train_iters: int, m: MegatronConfig) -> int:
    """--eval-interval and --save-interval: ``train_iters // evaluations_per_run`` (FLAME-MoE's
    sweep: train_iters, search.sh:118-119; their releases: hand-set values near a tenth)."""
    return m.eval_interval or max(1, train_iters // m.evaluations_per_run)


def check_batch(spec: PlanRow, m: MegatronConfig) -> int:
    """The micro-batch; a ConfigError naming the keys when the global batch is not a multiple
    of micro-batch x data-parallel size (Megatron asserts it, arguments.py validate_args)."""
    mbs = spec.micro_batch_size or m.micro_batch_size
    data_parallel = m.nodes * m.gpus_per_node  # TP = PP = 1
    if spec.global_batch_size % (mbs * data_parallel):
        raise ConfigError(f"planner.global_batch_size={spec.global_batch_size} is not a multiple "
                          f"of micro_batch_size={mbs} x data-parallel size {data_parallel} "
                          f"(trainer.nodes x trainer.gpus_per_node) for {spec.member}; change "
                          "the family member's micro_batch_size or trainer.nodes/gpus_per_node")
    return mbs


def schedule_flags(spec: PlanRow, t: Recipe) -> list[tuple[str, Any]]:
    """The learning-rate schedule's flags (optimizer_param_scheduler.py get_lr, :215-279).
    An independent run: FLAME-MoE's WSD over its own length. A trunk (planner.strategy=
    branches): linear warmup over the warmup its branches share, then the constant lr
    (``--lr-decay-style constant``, get_lr :233-234). A branch: the same warmup and lr, then
    WSD's decay over its own iterations (``--lr-wsd-decay-iters`` = train_iters - branch_step,
    get_lr :259-273). Warmup as iterations, never as a fraction: Megatron takes the fraction of
    ``--lr-decay-iters`` (training.py:1367-1370), which differs between a trunk and a branch."""
    if spec.role == "":
        return [("--lr-decay-style", "WSD"), ("--lr-warmup-fraction", t.warmup_fraction),
                ("--lr-wsd-decay-iters", max(1, t.decay_iters(spec.train_iters))),
                ("--lr-wsd-decay-style", t.decay_style), ("--lr-warmup-iters", 0),
                ("--lr-warmup-init", 0.0)]
    warmup = [("--lr-warmup-iters", spec.warmup_iters), ("--lr-warmup-init", 0.0)]
    if spec.role == "trunk":
        return [("--lr-decay-style", "constant"), *warmup]
    check_branch(spec)
    # The trunk's checkpoint holds ITS scheduler (constant style, its own length): a branch
    # overrides it with these flags, keeping only the step count (num_steps) from the
    # checkpoint (optimizer_param_scheduler.py:322-324, 380-384). Without the override
    # Megatron asserts they match (:326-330); --use-checkpoint-opt_param-scheduler would keep
    # the trunk's constant lr and never decay.
    return [("--lr-decay-style", "WSD"), ("--lr-wsd-decay-iters", spec.own_iters),
            ("--lr-wsd-decay-style", t.decay_style), *warmup,
            ("--override-opt_param-scheduler", None)]


def check_branch(spec: PlanRow) -> None:
    """A branch names its trunk and starts strictly inside its own run, after the warmup."""
    if not spec.parent or not 0 < spec.branch_step < spec.train_iters:
        raise ConfigError(f"plan.csv: branch {spec.run_id} has parent={spec.parent!r}, "
                          f"branch_step={spec.branch_step} of train_iters={spec.train_iters}: "
                          "re-create the plan with `flame plan`")


def save_interval(spec: PlanRow, m: MegatronConfig, every: int) -> int:
    """--save-interval. Megatron saves only at multiples of one interval (training.py:2340,
    plus the final save, :1047) and, without --save-retain-interval, deletes none of them
    (checkpointing.py:716-760). A trunk must keep a checkpoint at exactly each of its
    ``save_steps``: its interval is their greatest common divisor when that writes at most
    ``trainer.max_trunk_checkpoints`` checkpoints; otherwise the run's regular interval, and
    its launches stop at the save steps instead (``trunk_stops``)."""
    if spec.role != "trunk" or trunk_stops(spec, m):
        return every
    return math.gcd(*spec.save_steps)


def trunk_stops(spec: PlanRow, m: MegatronConfig) -> tuple[int, ...]:
    """The save steps (before its end) at which a trunk's launches stop, when one
    --save-interval cannot keep its checkpoints (their gcd would write more than
    ``trainer.max_trunk_checkpoints``): each launch ends at the next save step not yet reached
    with Megatron's --exit-interval (it saves there and exits 0, training.py:2393-2411: the
    first multiple of a step above the iteration resumed from is the step itself) and the
    next resumes from it, as a requeue does (exact: model, optimiser, scheduler, RNG and the
    consumed-samples count are in the checkpoint). Empty: one launch, one interval."""
    if spec.role != "trunk":
        return ()
    steps = spec.save_steps
    if not steps or min(steps) < 1 or max(steps) > spec.train_iters:
        raise ConfigError(f"plan.csv: trunk {spec.run_id} has save_steps={list(steps)} for "
                          f"train_iters={spec.train_iters}: re-create the plan with `flame plan`")
    if spec.train_iters // math.gcd(*steps) <= m.max_trunk_checkpoints:
        return ()
    return tuple(step for step in steps if step < spec.train_iters)


def trunk_stop_flags(spec: PlanRow, m: MegatronConfig, run_dir: Path) -> list[tuple[str, Any]]:
    """This launch's --exit-interval as launch.sh chooses it: the first stop above the
    checkpoint tracker (none once the last is passed: the launch trains to the end)."""
    done = tracker_iteration(run_dir)
    return next(([("--exit-interval", step)] for step in trunk_stops(spec, m) if done < step), [])


def trunk_checkpoints(spec: PlanRow, run_dir: Path) -> Path:
    """The trunk's checkpoint directory (runs/<parent>/checkpoints: the branch reads it in
    place, no copy: Megatron's --load with --ckpt-step names the iteration to load)."""
    return Path(run_dir).parent / spec.parent / CHECKPOINTS_DIR


def branch_load_flags(spec: PlanRow, run_dir: Path) -> list[tuple[str, Any]]:
    """A branch's --load as launch.sh chooses it when it starts: its own checkpoint once it
    has one (a requeue resumes from its own latest, as any run does); before that its
    trunk's at the branch step (--ckpt-step overrides the tracker's iteration,
    checkpointing.py:215-216 and 1187-1189; model, optimiser, RNG and the consumed-samples
    count come with it: no --finetune, --no-load-optim or --no-load-rng, :1731-1733,
    1785, 1841)."""
    own = Path(run_dir) / CHECKPOINTS_DIR
    if (own / TRACKER).is_file():
        return [("--load", own)]
    return [("--load", trunk_checkpoints(spec, run_dir)), ("--ckpt-step", spec.branch_step)]


def megatron_args(row: PlanRow | Mapping[str, Any], cfg: Mapping[str, Any],
                  run_dir: Path) -> list[tuple[str, list[tuple[str, Any]]]]:
    """``pretrain_gpt.py`` flags as (section, [(flag, value or None for a switch)]), in the
    order of FLAME-MoE's scripts; Megatron defaults they relied on are written explicitly so
    that a Megatron upgrade cannot change a run silently (docs/flame_recipe.md)."""
    spec, t = PlanRow.of(row), Recipe.from_cfg(cfg["training"])
    m = megatron_config(cfg)
    a, iters = spec.arch, spec.train_iters
    mbs = check_batch(spec, m)
    if a.num_moe_layers == 0:
        raise ConfigError(f"{spec.member}: no MoE layer (first_dense_layers = num_layers)")
    # configs/model/flame-moe.sh:6-16, 31-35
    model = [("--num-layers", a.num_layers), ("--hidden-size", a.hidden_size),
             ("--ffn-hidden-size", a.ffn_hidden_size),
             ("--num-attention-heads", a.num_attention_heads), ("--swiglu", None),
             ("--max-position-embeddings", a.seq_length), ("--normalization", "RMSNorm"),
             ("--norm-epsilon", t.norm_epsilon), ("--position-embedding-type", "rope"),
             ("--disable-bias-linear", None), ("--hidden-dropout", t.hidden_dropout),
             ("--attention-dropout", t.attention_dropout),
             ("--init-method-std", t.init_std), ("--bf16", None),
             # Megatron defaults FLAME-MoE relied on (yuzc19 arguments.py:957,1071,1094,1096,1110)
             ("--transformer-impl", "transformer_engine"), ("--attention-backend", "auto"),
             ("--rotary-base", 10000), ("--rotary-percent", 1.0),
             ("--make-vocab-size-divisible-by", 128)]
    if not a.tie_embeddings:
        model.insert(9, ("--untie-embeddings-and-output-weights", None))
    # configs/model/flame-moe.sh:19-28
    moe = [("--moe-ffn-hidden-size", a.moe_ffn_hidden_size), ("--num-experts", a.num_experts),
           ("--moe-router-topk", a.moe_router_topk),
           ("--moe-layer-freq", _layer_pattern(a))]
    if a.shared_expert_size:
        moe.insert(3, ("--moe-shared-expert-intermediate-size", a.shared_expert_size))
    if t.moe_router_dtype:
        moe.append(("--moe-router-dtype", t.moe_router_dtype))
    moe += [("--moe-router-pre-softmax", None), ("--moe-router-score-function", "softmax"),
            ("--moe-aux-loss-coeff", t.aux_loss_coeff), ("--moe-z-loss-coeff", t.z_loss_coeff),
            ("--moe-router-load-balancing-type", "aux_loss"),  # default (yuzc19 :2289)
            ("--moe-token-dispatcher-type", "alltoall")]  # configs/train/flame-moe.sh:19
    if m.moe_grouped_gemm:
        moe.append(("--moe-grouped-gemm", None))
    if m.moe_per_layer_logging:  # TensorBoard scalars per layer (moe_utils.py:1030-1033)
        moe.append(("--moe-per-layer-logging", None))
    # configs/train/flame-moe.sh:14-21
    parallel = [("--tensor-model-parallel-size", 1), ("--pipeline-model-parallel-size", 1),
                ("--expert-model-parallel-size", m.expert_model_parallel_size)]
    parallel += [(flag, None) for flag, on in (
        ("--use-distributed-optimizer", m.use_distributed_optimizer),
        ("--overlap-grad-reduce", m.overlap_grad_reduce),
        ("--overlap-param-gather", m.overlap_param_gather)) if on]
    parallel.append(("--distributed-timeout-minutes", m.distributed_timeout_minutes))
    # configs/train/flame-moe.sh:25-32, then the optimiser defaults (yuzc19 :1286-1303, 1606)
    optim = [("--micro-batch-size", mbs), ("--global-batch-size", spec.global_batch_size),
             ("--lr", t.lr), ("--min-lr", t.min_lr), *schedule_flags(spec, t),
             ("--train-iters", iters), ("--seed", spec.seed(t.seed)), ("--optimizer", "adam"),
             ("--weight-decay", t.weight_decay), ("--weight-decay-incr-style", "constant"),
             ("--adam-beta1", t.adam_beta1), ("--adam-beta2", t.adam_beta2),
             ("--adam-eps", 1e-08), ("--clip-grad", t.clip_grad)]
    ckpt_dir, every = run_dir / CHECKPOINTS_DIR, interval(iters, m)
    # flame-moe_step2.sh:21-30; --exit-signal-handler is flame's (requeue). A branch's --load
    # depends on whether it has a checkpoint yet: launch.sh chooses (branch_load_flags).
    load = [] if spec.role == "branch" else [("--load", ckpt_dir)]
    io = [("--log-interval", m.log_interval), ("--log-throughput", None),
          ("--save", ckpt_dir), ("--save-interval", save_interval(spec, m, every)), *load,
          ("--eval-interval", every), ("--eval-iters", m.eval_iters),
          ("--ckpt-format", "torch_dist"), ("--tensorboard-dir", run_dir / TENSORBOARD_DIR),
          ("--exit-signal-handler", None),
          # FLAME's fork defaulted to disabled (yuzc19 arguments.py:1594); core_v0.16.1 to
          # validate_results (resilience_config.py:16), which may exit 16/17 on a NaN
          ("--rerun-mode", "disabled"), *retain_flags(spec, m, every)]
    # flame-moe_step2.sh:15-17, configs/model/flame-moe.sh:38-39
    data: list[tuple[str, Any]] = [("--seq-length", a.seq_length)]
    if m.mock_data:
        data += [("--mock-data", None), ("--tokenizer-type", "NullTokenizer"),
                 ("--vocab-size", a.vocab_size - 1)]  # NullTokenizer adds the EOD id
    else:
        data += [("--data-path", " ".join(m.data_path or [])), ("--split", m.split),
                 ("--tokenizer-type", m.tokenizer_type)]
        if m.tokenizer_model:
            data.append(("--tokenizer-model", m.tokenizer_model))
        data.append(("--data-cache-path", data_cache_dir(m, run_dir)))
    data.append(("--num-workers", 2))  # default (yuzc19 :2097)
    sections = [("model (configs/model/flame-moe.sh)", model),
                ("mixture of experts", moe), ("parallelism (configs/train/flame-moe.sh)", parallel),
                ("batch, optimiser, WSD schedule", optim),
                ("evaluation, checkpoints, logging (flame-moe_step2.sh)", io), ("data", data)]
    if m.extra_args:
        words = [w for arg in m.extra_args for w in shlex.split(arg)]
        sections.append(("extra (trainer.extra_args)", [(w, None) for w in words]))
    return sections


def sweep_cache(run_dir: Path) -> Path:
    """``<sweep_dir>/cache``: caches the sweep's runs share (run_dir is runs/<run_id>)."""
    return Path(run_dir).parent.parent / "cache"


def data_cache_dir(m: MegatronConfig, run_dir: Path) -> str:
    """--data-cache-path: trainer.data_cache_path, else one cache in the sweep. Without it
    Megatron writes its sample indices under the corpus (<prefix>/cache/GPTDataset_indices,
    core_v0.16.1 megatron/core/datasets/gpt_dataset.py:411-415),
    which fails on a read-only corpus."""
    return m.data_cache_path or str(sweep_cache(run_dir) / "megatron_data")


def tokenizer_cache_dir(m: MegatronConfig, run_dir: Path) -> str:
    """HF_HUB_CACHE of the job: trainer.tokenizer_cache, else one in the sweep."""
    return m.tokenizer_cache or str(sweep_cache(run_dir) / "huggingface")


def hub_folder(model: str) -> str:
    """The hub cache's folder of a model id (huggingface_hub's ``models--org--name``)."""
    return "models--" + model.replace("/", "--")


def retain_flags(spec: PlanRow, m: MegatronConfig, every: int) -> list[tuple[str, Any]]:
    """--save-retain-interval for trainer.retain_checkpoints=last: a multiple of the save
    interval past the run's end (Megatron asserts the multiple, arguments.py:840-842), so each
    save deletes the one before (checkpointing.py:751-760). Trunks keep all (their branches'
    starting points)."""
    if m.retain_checkpoints != "last" or spec.role == "trunk":
        return []
    return [("--save-retain-interval", every * (spec.train_iters // every + 1))]


def python_lines(m: MegatronConfig) -> list[str]:
    """Megatron's interpreter first on PATH: rank 0 runs ``make`` for the dataset helpers at
    every start (core_v0.16.1 initialize.py:187-192), whose Makefile calls ``python3 -m
    pybind11`` and ``python3-config`` from PATH (megatron/core/datasets/Makefile:2,5), which
    would otherwise be flame's own (the job's PATH starts with it)."""
    if not m.python or "/" not in m.python:
        return []
    return ["# Megatron's interpreter first on PATH (its dataset helpers' Makefile runs python3).",
            'export PATH="$(dirname "$PYTHON"):$PATH"', ""]


def tokenizer_lines(m: MegatronConfig, run_dir: Path) -> list[str]:
    """launch.sh's Hugging Face environment: the sweep's hub cache, and offline once it holds
    the tokenizer (a launch pre-fetches it; compute nodes are often offline)."""
    if m.mock_data or not m.tokenizer_model or m.tokenizer_type != "HuggingFaceTokenizer":
        return []
    cache = tokenizer_cache_dir(m, run_dir)
    return ["# The tokenizer from the hub cache the launch pre-fetched it into; offline once "
            "it is there.",
            f"export HF_HUB_CACHE={shlex.quote(cache)}",
            f'if [[ -d "$HF_HUB_CACHE/{hub_folder(m.tokenizer_model)}" ]]; then '
            "export HF_HUB_OFFLINE=1; fi", ""]


def argv_of(row: PlanRow | Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path) -> list[str]:
    """The argv pretrain_gpt.py receives (what launch.sh's ARGS array expands to)."""
    out: list[str] = []
    run_dir, spec = Path(run_dir).resolve(), PlanRow.of(row)
    sections = megatron_args(spec, cfg, run_dir)
    if spec.role == "branch":
        sections.append(("load", branch_load_flags(spec, run_dir)))
    if spec.role == "trunk":
        sections.append(("stop", trunk_stop_flags(spec, megatron_config(cfg), run_dir)))
    for _, flags in sections:
        for flag, value in flags:
            out.append(flag)
            if value is not None:
                out += str(value).split() if flag == "--data-path" else [str(value)]
    return out


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
             f"{spec.arch.seq_length} tokens, {m.nodes} x {m.gpus_per_node} GPUs.",
             "# Written by trainers/megatron.py. One launcher per node: inside a SLURM job (one",
             "# task per node) torchrun meeting on the first node (FLAME-MoE's layout,",
             "# configs/train/flame-moe.sh:4-11, with static rendezvous in place of its c10d);",
             "# elsewhere torchrun --standalone on this machine.",
             "set -euo pipefail", "",
             f"MEGATRON={shlex.quote(m.megatron_path)}",
             f"PYTHON={shlex.quote(m.python or 'python')}",
             f"NODES={m.nodes}",
             f"GPUS_PER_NODE={m.gpus_per_node}",
             f"RDZV_PORT_BASE={m.master_port}",
             "# FLAME-MoE's environment (scripts/training/modules/flame-moe_step2.sh:5-8)"]
    lines += [f"export {k}={v}" for k, v in FLAME_ENV]
    lines += ["# SLURM signals every process of the job step (scancel --signal, "
              "sbatch --signal=USR2@T),",
              "# torchrun and the ranks included, and USR2's default action kills them unsaved. "
              "Ignored",
              "# here (inherited across exec); flame's task forwards SIGTERM to the ranks instead.",
              "trap '' USR2",
              "# On SLURM's SIGTERM (preemption, scontrol requeue) torchrun stops the ranks and "
              "SIGKILLs them",
              "# after its shutdown timeout, 30 s by default, which can cut Megatron's checkpoint "
              "short: let",
              "# SLURM's own grace (KillWait, GraceTime) bound it (read by torch 2.13's torchrun, "
              "launcher/api.py;",
              "# a torch without the setting ignores it).",
              "export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-3600}",
              "", *python_lines(m), *tokenizer_lines(m, run_dir), "ARGS=("]
    for title, flags in megatron_args(row, cfg, run_dir):
        lines.append(f"  # {title}")
        lines += [_fmt(flag, value) for flag, value in flags]
    lines += [")", ""]
    lines += _branch_lines(spec, run_dir) if spec.role == "branch" else []
    stops = trunk_stops(spec, m)
    lines += _stop_lines(spec, stops, run_dir) if stops else []
    lines += ['if [[ -n "${SLURM_JOB_ID:-}" ]]; then',
              '  if [[ "${SLURM_NNODES}" != "$NODES" '
              '|| "${SLURM_NTASKS_PER_NODE:-1}" != 1 ]]; then',
              '    echo "launch.sh: wants $NODES nodes x 1 task, the job has ${SLURM_NNODES} x '
              '${SLURM_NTASKS_PER_NODE:-?} (trainer.nodes and the job shape disagree)" >&2',
              "    exit 2",
              "  fi",
              "  # The port: a base plus the job id, so that two jobs sharing a node do not meet.",
              '  RDZV_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
              "  RDZV_PORT=$((RDZV_PORT_BASE + SLURM_JOB_ID % 1000))",
              "  # Static rendezvous: ranks node by node in SLURM_NODEID order, so the last rank",
              "  # (Megatron's training lines) is on the last node, which writes train.log.",
              '  LAUNCHER=(--nnodes "$SLURM_NNODES" --node_rank "$SLURM_NODEID" '
              '--nproc_per_node "$GPUS_PER_NODE"',
              '            --rdzv-backend static '
              '--master_addr "$RDZV_HOST" --master_port "$RDZV_PORT")',
              "else",
              '  LAUNCHER=(--standalone --nnodes 1 --nproc_per_node "$GPUS_PER_NODE")',
              "fi",
              'exec "$PYTHON" -m torch.distributed.run "${LAUNCHER[@]}" '
              '"$MEGATRON/pretrain_gpt.py" "${ARGS[@]}"'
              + (' "${LOAD[@]}"' if spec.role == "branch" else "")
              + (' ${STOP[@]+"${STOP[@]}"}' if stops else ""), ""]
    return "\n".join(lines)


def _stop_lines(spec: PlanRow, stops: tuple[int, ...], run_dir: Path) -> list[str]:
    """launch.sh's choice of a segmented trunk's --exit-interval (trunk_stop_flags)."""
    tracker = run_dir / CHECKPOINTS_DIR / TRACKER
    return ["# A trunk keeping checkpoints at its branch steps "
            f"{' '.join(map(str, spec.save_steps))}: no one --save-interval",
            "# hits them all within trainer.max_trunk_checkpoints, so each launch stops at the "
            "next one not",
            "# reached yet (--exit-interval: Megatron saves there and exits 0) and flame "
            "launches it again;",
            "# past the last stop it trains to the end and validates.",
            f"DONE=$(cat {shlex.quote(str(tracker))} 2>/dev/null || echo 0)",
            "STOP=()",
            f"for STEP in {' '.join(map(str, stops))}; do",
            '  if (( DONE < STEP )); then STOP=(--exit-interval "$STEP"); break; fi',
            "done", ""]


def _branch_lines(spec: PlanRow, run_dir: Path) -> list[str]:
    """launch.sh's choice of a branch's --load (branch_load_flags), made when it starts."""
    own, trunk = run_dir / CHECKPOINTS_DIR, trunk_checkpoints(spec, run_dir)
    return [f"# A branch of trunk {spec.parent}: it trains iterations {spec.branch_step + 1}-"
            f"{spec.train_iters} (its cooldown).",
            "# Its own checkpoint once it has one (a requeue resumes there); before that the "
            "trunk's",
            f"# iter_{spec.branch_step:07d}, read in place (--ckpt-step, Megatron "
            "checkpointing.py:215-216), never copied.",
            f"OWN_CKPT={shlex.quote(str(own))}",
            f'if [[ -f "$OWN_CKPT/{TRACKER}" ]]; then',
            '  LOAD=(--load "$OWN_CKPT")',
            "else",
            f"  LOAD=(--load {shlex.quote(str(trunk))} --ckpt-step {spec.branch_step})",
            "fi", ""]


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
                    "tflops_per_gpu": rec.get("throughput per GPU (TFLOP/s/GPU)"),
                    "ms_per_iteration": ms,
                    "tokens_per_s": global_batch_size * seq_length / (ms / 1000.0)
                    if ms else None, "time": None})
    for rec in parsed.validation:
        out.append({"kind": "eval", "iteration": rec["iteration"],
                    "consumed_tokens": rec["iteration"] * global_batch_size * seq_length,
                    "val_loss": rec["lm loss value"], "final": rec["final"], "time": None})
    return sorted(out, key=lambda r: (r["iteration"], r["kind"] == "eval"))


def checkpointed_iteration(run_dir: Path) -> int | None:
    """The iteration of the newest complete checkpoint (Megatron's tracker file, written once a
    save is complete: core_v0.16.1 checkpointing.py:720-723), or None: no save yet, or
    "release"."""
    try:
        return int((Path(run_dir) / CHECKPOINTS_DIR / TRACKER).read_text().strip())
    except (OSError, ValueError):
        return None


def tracker_iteration(run_dir: Path) -> int:
    """``checkpointed_iteration``, 0 when there is none."""
    return checkpointed_iteration(run_dir) or 0


def reached(parsed: ParsedLog, run_dir: Path) -> int:
    """How far training got, by Megatron's evidence whatever the log interval: the final
    validation, the checkpoint tracker, the last training line."""
    finals = [v["iteration"] for v in parsed.validation if v["final"]]
    lines = [r["iteration"] for r in parsed.train]
    return max(finals + lines + [tracker_iteration(run_dir)])


__all__ = ["render_launch", "write_launch", "megatron_args", "argv_of", "metrics_from_log",
           "MegatronConfig", "Preempted"]

"""The evaluation job of a Megatron run's checkpoint: ``eval.sh``, lm-evaluation-harness's own
``megatron_lm`` backend on the run's Megatron-LM checkpoint, as FLAME-MoE evaluated its models.

What there is for Megatron checkpoints:

- lm-eval 0.4.13 ships ``--model megatron_lm`` (``lm_eval/models/megatron_lm.py``): it imports
  ``megatron.training`` from ``MEGATRON_PATH``, builds Megatron's argv itself (``--load``,
  ``--ckpt-step``, ``--use-checkpoint-args``, ``--no-load-optim``, ``--no-load-rng``,
  ``--exit-on-missing-checkpoint``, ``--micro-batch-size``, ``--seq-length``,
  ``--tokenizer-type``/``--tokenizer-model``, ``--expert-model-parallel-size``, ...:
  ``_initialize_megatron``), calls ``initialize_megatron`` (core_v0.16.1 parses the arguments
  there; v0.18 moved that to ``parse_and_validate_args``, which the backend detects) and
  ``load_checkpoint``; the model's shape comes from the checkpoint (``--use-checkpoint-args``).
  MoE checkpoints run with expert parallelism equal to the devices, or on one GPU.
- FLAME-MoE (cmu-flame/FLAME-MoE e9b2fe2, ``scripts/evaluate.sh:27-50``) ran the same thing
  from their fork of lm-eval (submodule ``lm-evaluation-harness``, branch ``megatron``):
  ``torchrun --nproc_per_node=1 -m lm_eval --model megatron_lm --load <weights>`` with the
  training's model flags, ``--seq-length 2048 --micro-batch-size 32 --batch_size 16
  --seed 42``, one GPU per run, openbookqa and winogrande zero-shot, piqa, arc_easy,
  arc_challenge and hellaswag ten-shot, the iteration chosen by writing it into
  ``latest_checkpointed_iteration.txt`` (``evaluate.sh:25``).
- Megatron-LM core_v0.16.1 itself converts checkpoints (``tools/checkpoint/convert.py`` with
  ``loader_core``/``saver_*``; Megatron-Bridge for Hugging Face), which would let lm-eval's HF
  backend read them; that is a second copy of every checkpoint and a conversion to maintain per
  architecture, so flame evaluates the Megatron checkpoint in place instead, as FLAME did.

flame's job differs from FLAME's only where the upstream backend does: it names the checkpoint
with ``ckpt_step`` instead of rewriting the tracker (which a running job's requeue reads), and
passes no model flags (``--use-checkpoint-args``). Results land in lm-eval's own format
(``--output_path``: ``<out>/<shots>shot/<model>/results_<date>.json``), which
``analysis.downstream.results`` reads.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sweep.config import read_plan
from sweep.io import atomic_write_text
from trainers.lm_eval_tasks import FLAME_FEWSHOT, OFFLINE
from trainers.settings import trainer_config

EVAL_SH = "eval.sh"
LM_EVAL_VERSION = "0.4.13"
"""The lm-eval release whose megatron_lm backend the script drives (pyproject pins it)."""
MEGATRON_VERSION = "core_v0.16.1 (55ac7082517c3878ae653c07c09c534b8aed49f6)"
"""The Megatron-LM the runs were trained with (trainers/data/megatron_core_v0.16.1_args.json)."""
BATCH_SIZE = 16
"""lm-eval's --batch_size and Megatron's micro batch (FLAME: --batch_size 16)."""
SEED = 42
"""FLAME's --seed."""
def fewshot_groups(tasks: Sequence[str]) -> dict[int, list[str]]:
    """Tasks by few-shot count: FLAME's for its six, zero-shot for any other."""
    shots = {task: k for k, group in FLAME_FEWSHOT.items() for task in group}
    groups: dict[int, list[str]] = {}
    for task in tasks:
        groups.setdefault(shots.get(task, 0), []).append(task)
    return dict(sorted(groups.items()))


def model_args(load: str, step: int | None, tokenizer_type: str, tokenizer_model: str | None,
               seq_length: int) -> dict[str, Any]:
    """``--model_args`` of lm-eval's megatron_lm (``MegatronLMEval.__init__``'s parameters)."""
    args: dict[str, Any] = {"load": load, "tokenizer_type": tokenizer_type,
                            "seq_length": seq_length, "micro_batch_size": BATCH_SIZE,
                            "devices": 1}
    if step is not None:
        args["ckpt_step"] = step
    if tokenizer_model:
        args["tokenizer_model"] = tokenizer_model
    return args


def eval_script(target: Any, tasks: Sequence[str], trainer: Mapping[str, Any],
                limit: int | None = None) -> str:
    """The text of ``eval.sh`` for one checkpoint (``jobs.eval.EvalTarget``)."""
    cfg = trainer_config(trainer)
    row = {r.run_id: r for r in read_plan(Path(target.sweep_dir))}[target.run_id]
    out = Path(target.out).resolve()
    margs = model_args(str(Path(target.checkpoint).resolve()), target.iteration,
                       cfg.tokenizer_type, cfg.tokenizer_model, row.arch.seq_length)
    packed = ",".join(f"{k}={v}" for k, v in margs.items())
    lines = [
        "#!/bin/bash",
        f"# flame eval: run {target.run_id}, checkpoint {target.label} (iteration "
        f"{target.iteration}),",
        f"# lm-evaluation-harness {LM_EVAL_VERSION} --model megatron_lm on Megatron-LM "
        f"{MEGATRON_VERSION};",
        "# as FLAME-MoE's scripts/evaluate.sh (cmu-flame/FLAME-MoE e9b2fe2): one GPU, FLAME's "
        "shots and seed.",
        "set -euo pipefail",
        f"export MEGATRON_PATH={shlex.quote(str(cfg.megatron_path))}",
        'export PYTHONPATH="$MEGATRON_PATH${PYTHONPATH:+:$PYTHONPATH}"',
        "export CUDA_DEVICE_MAX_CONNECTIONS=1 TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1",
        "# datasets and the tokenizer come from the Hugging Face cache, filled beforehand",
        "export " + " ".join(f"{k}={v}" for k, v in OFFLINE.items()),
        f"mkdir -p {shlex.quote(str(out))}",
    ]
    for n, (shots, group) in enumerate(fewshot_groups(tasks).items()):
        command = [cfg.python, "-m", "torch.distributed.run", "--nproc_per_node=1",
                   f"--master_port={cfg.master_port + 100 + n}", "-m", "lm_eval",
                   "--model", "megatron_lm", "--model_args", packed,
                   "--tasks", ",".join(group), "--num_fewshot", str(shots),
                   "--batch_size", str(BATCH_SIZE), "--seed", str(SEED),
                   "--output_path", str(out / f"{shots}shot")]
        if limit:
            command += ["--limit", str(limit)]
        lines.append(" ".join(shlex.quote(word) for word in command))
    return "\n".join(lines) + "\n"


def write_eval_script(target: Any, tasks: Sequence[str], trainer: Mapping[str, Any],
                      limit: int | None = None) -> Path:
    """Write ``runs/<id>/eval/<label>/eval.sh`` (atomically); return its path."""
    path = Path(target.out) / EVAL_SH
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, eval_script(target, tasks, trainer, limit))
    return path

"""What a Megatron sweep needs of the site before its first GPU hour: Megatron's own
interpreter, disk for its checkpoints, the tokenizer in a cache the (often offline) compute
nodes can read, and a corpus that holds the tokens the runs read.

Checkpoint size: a ``torch_dist`` checkpoint of core_v0.16.1 holds the model's bf16 weights
(2 bytes a parameter) and, per parameter, the optimizer's fp32 ``param``, ``exp_avg`` and
``exp_avg_sq`` (12 bytes; megatron/core/optimizer/distrib_optimizer.py:1415, 1885): about 14
bytes a parameter, with or without the distributed optimizer (which only changes how the
optimizer state is sharded). Megatron keeps every save unless --save-retain-interval is set
(checkpointing.py:716-760).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.errors import ConfigError
from sweep.planrow import PlanRow
from trainers import megatron
from trainers.settings import MegatronConfig

BYTES_PER_PARAM = 14
"""bf16 weights (2) + fp32 main parameters (4) + Adam's two fp32 moments (8)."""


def check_python(m: MegatronConfig, required: bool) -> str | None:
    """``trainer.python`` must name Megatron's interpreter for a real launch: left unset,
    launch.sh would run whatever ``python`` comes first on the job's PATH (flame's own
    CPU-only environment, which submitit's job puts there). A dry run only notes it."""
    if not m.python:
        if required:
            raise ConfigError("trainer.python: not set; give the interpreter of Megatron-LM's "
                              "environment, e.g. trainer.python=/opt/megatron-env/bin/python "
                              "(flame's own python has no CUDA torch or TransformerEngine)")
        return ("trainer.python is not set: launch.sh says PYTHON=python here, and a real "
                "launch refuses it (give Megatron's interpreter)")
    if required and "/" in m.python and not Path(m.python).expanduser().exists():
        raise ConfigError(f"trainer.python={m.python}: does not exist; give the interpreter of "
                          "Megatron-LM's environment on the file system the nodes share")
    if required and "/" not in m.python and shutil.which(m.python) is None:
        raise ConfigError(f"trainer.python={m.python}: not found on PATH; give its full path")
    return None


def checkpoint_gb(row: PlanRow) -> float:
    """One checkpoint of the run, in GB (1e9 bytes)."""
    return row.counts["n_total_exact"] * BYTES_PER_PARAM / 1e9


def saves(row: PlanRow, m: MegatronConfig) -> list[int]:
    """The iterations at which the run saves: every --save-interval of its own iterations,
    a trunk's stops, and the end (training.py:2340 and :1047)."""
    every = megatron.save_interval(row, m, megatron.interval(row.train_iters, m))
    start = row.branch_step if row.role == "branch" else 0
    steps = {s for s in range(every, row.train_iters + 1, every) if s > start}
    steps |= set(megatron.trunk_stops(row, m)) | {row.train_iters}
    return sorted(steps)


def kept(row: PlanRow, m: MegatronConfig) -> int:
    """Checkpoints on disk at the run's end (with retain_checkpoints=last: 1, and 2 while the
    next is being written)."""
    if megatron.retain_flags(row, m, megatron.interval(row.train_iters, m)):
        return 2
    return len(saves(row, m))


@dataclass(frozen=True)
class DiskEstimate:
    """Checkpoint disk of a launch's runs."""

    largest_gb: float
    """The largest single checkpoint (GB): what a signal must leave time to write."""
    largest_run_gb: float
    """The run needing the most disk (GB, its checkpoints kept)."""
    largest_run: str
    """Its run_id."""
    total_gb: float
    """All the runs' checkpoints kept (GB)."""
    runs: int
    """Runs counted."""

    def lines(self, m: MegatronConfig) -> list[str]:
        """The dry run's lines."""
        keep = ("trainer.retain_checkpoints=all: Megatron keeps every save" if
                m.retain_checkpoints == "all" else
                "trainer.retain_checkpoints=last: the newest only, trunks all")
        return [f"checkpoint disk ({BYTES_PER_PARAM} bytes a parameter; {keep}): "
                f"{_size(self.largest_gb)} a checkpoint of the largest model; run "
                f"{self.largest_run} needs {_size(self.largest_run_gb)}; the {self.runs} runs "
                f"{_size(self.total_gb)} under <sweep_dir>/runs/*/checkpoints"]


def _size(gb: float) -> str:
    return f"{gb / 1000:.2f} TB" if gb >= 1000 else f"{gb:.1f} GB"


def disk_estimate(rows: list[PlanRow], config: Mapping[str, Any], todo: list[str]
                  ) -> DiskEstimate | None:
    """The checkpoint disk of the runs in ``todo`` (None: none of them)."""
    m, wanted = megatron.megatron_config(config), set(todo)
    mine = [r for r in rows if r.run_id in wanted]
    if not mine:
        return None
    need = {r.run_id: checkpoint_gb(r) * kept(r, m) for r in mine}
    worst = max(need, key=need.__getitem__)
    return DiskEstimate(max(checkpoint_gb(r) for r in mine), need[worst], worst,
                        sum(need.values()), len(mine))


PREFETCH = ("import sys; from huggingface_hub import snapshot_download; "
            "snapshot_download(repo_id=sys.argv[1], cache_dir=sys.argv[2], "
            "allow_patterns=['*.json', '*.txt', '*.model', 'tokenizer*'])")
"""Run with Megatron's interpreter (its transformers brings huggingface_hub): the tokenizer's
files only, into the hub cache layout the job reads with HF_HUB_CACHE."""


def needs_tokenizer(m: MegatronConfig) -> bool:
    """A hub tokenizer (not mock data, not a local directory)."""
    return (not m.mock_data and m.tokenizer_type == "HuggingFaceTokenizer"
            and bool(m.tokenizer_model) and not Path(str(m.tokenizer_model)).expanduser().is_dir())


def tokenizer_cache(m: MegatronConfig, sweep_dir: Path) -> Path:
    """The hub cache the sweep's jobs read (launch.sh's HF_HUB_CACHE)."""
    return Path(megatron.tokenizer_cache_dir(m, Path(sweep_dir) / "runs" / "_"))


def prefetch_tokenizer(m: MegatronConfig, sweep_dir: Path, fetch: bool,
                       timeout_s: float = 600) -> str | None:
    """Put ``tokenizer_model`` into the sweep's hub cache with Megatron's interpreter (here,
    where the network is), so that the jobs run with HF_HUB_OFFLINE=1. ``fetch`` false (a dry
    run): only say what a launch does. A line for the user, or None when nothing is needed."""
    if not needs_tokenizer(m):
        return None
    cache = tokenizer_cache(m, sweep_dir)
    if (cache / megatron.hub_folder(str(m.tokenizer_model))).is_dir():
        return f"tokenizer {m.tokenizer_model}: in {cache} (the jobs run with HF_HUB_OFFLINE=1)"
    if not fetch:
        return (f"tokenizer {m.tokenizer_model}: a launch pre-fetches it into {cache} with "
                "trainer.python; the jobs then run with HF_HUB_OFFLINE=1")
    cache.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run([str(m.python), "-c", PREFETCH, str(m.tokenizer_model), str(cache)],
                              capture_output=True, text=True, timeout=timeout_s)
        error = done.stderr.strip().splitlines()[-1:] if done.returncode else None
    except (OSError, subprocess.TimeoutExpired) as err:
        error = [str(err)]
    if error:
        return (f"tokenizer {m.tokenizer_model}: could not pre-fetch it into {cache} "
                f"({' '.join(error)}); the jobs will download it, which needs network on the "
                "compute nodes (or set trainer.tokenizer_model to a local directory)")
    return f"tokenizer {m.tokenizer_model}: pre-fetched into {cache} (HF_HUB_OFFLINE=1 in jobs)"


__all__ = ["BYTES_PER_PARAM", "check_python", "checkpoint_gb", "saves", "kept", "DiskEstimate",
           "disk_estimate", "prefetch_tokenizer", "needs_tokenizer", "tokenizer_cache"]

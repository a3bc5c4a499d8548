"""The Megatron-LM trainer as a ``Trainer``: launch.sh (``trainers.megatron``), its job shape
and launch checks, its checkpoint directories and tracker, and its own log's routing and speed.

A run records the Megatron-LM commit it ran (``git -C <megatron_path> rev-parse HEAD`` when it
starts) in its summary, and a launch or a run whose checkout is not at the commit flame's
recipe was checked against (core_v0.16.1, ``trainers/data/``'s argument spec) says so: the
same flags may mean other things at another commit.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from sweep.io import CHECKPOINTS_DIR, METRICS_JSONL, TENSORBOARD_DIR, TRAIN_LOG
from sweep.planrow import PlanRow
from trainers import megatron, megatron_job
from trainers.base import BaseTrainer, JobShape
from trainers.lm_eval_tasks import FINAL, FLAME_FEWSHOT, checkpoint_label, missing_checkpoint
from trainers.logformat import parse_lines
from trainers.megatron_readers import read_routing
from trainers.readers import Routing, Throughput, lines, read_throughput
from trainers.settings import MegatronConfig, trainer_config
from trainers.signals import DeferredSignals
from trainers.site import check_python, disk_estimate, prefetch_tokenizer


@cache
def checked_commit() -> str:
    """The Megatron-LM commit flame's recipe and flags were checked against (the recorded
    argument spec's source: core_v0.16.1)."""
    from trainers.megatron_argspec import load

    return str(load()["source"]["commit"])


def checkout_commit(megatron_path: str | Path) -> str | None:
    """The commit a Megatron-LM checkout is at (``git rev-parse HEAD``); None when it is not a
    git checkout (or git is missing)."""
    try:
        done = subprocess.run(["git", "-C", str(Path(megatron_path).expanduser()), "rev-parse",
                               "HEAD"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def commit_warning(megatron_path: str | Path, commit: str | None) -> str | None:
    """A line when ``commit`` is known and not ``checked_commit()``; None otherwise."""
    if commit is None or commit == checked_commit():
        return None
    return (f"trainer.megatron_path={megatron_path}: Megatron-LM is at commit {commit[:12]}, "
            f"not {checked_commit()[:12]} (core_v0.16.1) that flame's flags and recipe were "
            "checked against; a flag may mean something else there (git -C <checkout> "
            "checkout core_v0.16.1)")


class MegatronTrainer(BaseTrainer):
    """Megatron-LM's ``pretrain_gpt.py`` on GPU nodes, one launcher per node."""

    name: ClassVar[str] = "megatron"
    config: ClassVar[type] = MegatronConfig
    numerics_version: ClassVar[int] = 1
    """Megatron's numbers are Megatron-LM's: the commit a run ran is its summary's
    ``megatron_commit``; this version counts flame's own changes to what it asks of it."""
    artefacts: ClassVar[tuple[str, ...]] = (TRAIN_LOG, METRICS_JSONL, megatron.LAUNCH_SH,
                                            TENSORBOARD_DIR)
    branch_file: ClassVar[str | None] = "iter_{step:07d}"
    eval_tasks: ClassVar[tuple[str, ...]] = tuple(t for group in FLAME_FEWSHOT.values()
                                                  for t in group)
    """FLAME-MoE's six tasks (scripts/evaluate.sh)."""
    eval_gpus: ClassVar[int] = 1
    """One GPU per evaluation job, as FLAME's evaluate.sh asks (--gres=gpu:1)."""

    def train(self, row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path,
              signals: DeferredSignals) -> dict[str, Any]:
        path = trainer_config(cfg["trainer"]).megatron_path
        commit = checkout_commit(path)
        warning = commit_warning(path, commit)
        if warning:
            print(f"flame: {warning}", file=sys.stderr, flush=True)
        summary = megatron_job.train(row, cfg, run_dir, signals)
        return {**summary, "megatron_commit": commit,
                **({"warnings": [warning]} if warning else {})}

    def check_branchable(self, recipe: Any, trainer_cfg: Any) -> None:
        """A decaying WSD, and no flag in ``trainer.extra_args`` that replaces it."""
        from trainers.schedule import check_branchable

        check_branchable(recipe, trainer_cfg)

    def sample_order(self, trainer_cfg: Any) -> Any:
        """megatron-core's GPTDatasets over --data-path (or mock data) with --split."""
        from trainers.data_order import megatron_order

        return megatron_order(trainer_config(trainer_cfg))

    def run_node(self, row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path) -> None:
        megatron_job.run_node(row, cfg, run_dir)

    def completed(self, run_dir: Path, train_iters: int) -> bool:
        """Megatron's own evidence: the final validation, the tracker, the last line."""
        parsed = parse_lines(lines(Path(run_dir) / TRAIN_LOG))
        return megatron.reached(parsed, Path(run_dir)) >= train_iters

    def job_shape(self, trainer_cfg: Any) -> JobShape:
        """trainer.nodes x trainer.gpus_per_node (one launcher per node)."""
        m = trainer_config(trainer_cfg)
        return JobShape(m.nodes, m.gpus_per_node)

    def preflight(self, rows: list[PlanRow], config: Mapping[str, Any], todo: list[str],
                  dry_run: bool) -> list[str]:
        """Every run's flags rendered once (data path, checkout, expert parallelism, batch
        divisibility), the checkout's pretrain_gpt.py and its commit, and Megatron's
        interpreter (``trainer.python``, required by a real launch)."""
        m = megatron.megatron_config(config)
        notes = [note] if (note := check_python(m, required=not dry_run)) else []
        notes += [note] if (note := m.check_checkout(required=not dry_run)) else []
        if Path(m.megatron_path).expanduser().is_dir():
            notes += [w] if (w := commit_warning(m.megatron_path,
                                                 checkout_commit(m.megatron_path))) else []
        wanted = set(todo)
        for row in rows:
            if row.run_id in wanted:
                megatron.argv_of(row, config, Path("/nonexistent/run"))  # ConfigError if bad
        return notes

    def eval_checkpoints(self, run_dir: Path, every: bool) -> list[tuple[str, Path, int | None]]:
        """The checkpoint directory at the tracker's iteration (final), and with ``every`` each
        ``iter_<step>`` it kept; lm-eval's megatron_lm backend loads it in place."""
        folder = Path(run_dir) / CHECKPOINTS_DIR
        step = megatron.checkpointed_iteration(run_dir)
        if not folder.exists() or step is None:
            raise missing_checkpoint(run_dir, folder)
        steps = sorted(int(p.name[5:]) for p in folder.glob("iter_*") if p.is_dir()) \
            if every else []
        return [(checkpoint_label(k), folder, k) for k in steps if k != step] + \
            [(FINAL, folder, step)]

    def evaluate(self, target: Any, tasks: Sequence[str], trainer_cfg: Mapping[str, Any],
                 limit: int | None, batch_size: int) -> str:
        """Render and run ``eval.sh`` (lm-eval's megatron_lm backend, FLAME's evaluate.sh)."""
        from trainers.megatron_eval import write_eval_script

        script = write_eval_script(target, tasks, trainer_cfg, limit)
        subprocess.run(["bash", str(script)], check=True)
        return str(script)

    def site_notes(self, sweep_dir: Path, rows: list[PlanRow], config: Mapping[str, Any],
                   todo: list[str], dry_run: bool) -> tuple[list[str], float]:
        """What the site must hold for the runs of ``todo``: their checkpoint disk, the
        tokenizer pre-fetched into the sweep's hub cache (a real launch fetches it), the data
        cache; lines, and the largest checkpoint in GB (the time-limit signal's lead)."""
        m = megatron.megatron_config(config)
        notes, estimate = [], disk_estimate(rows, config, todo)
        if estimate is not None:
            notes += estimate.lines(m)
        if not m.mock_data:
            cache = megatron.data_cache_dir(m, Path(sweep_dir) / "runs" / "_")
            notes.append(f"data cache (--data-cache-path, shared by the sweep's runs): {cache}")
        if note := prefetch_tokenizer(m, sweep_dir, fetch=not dry_run):
            notes.append(note)
        if not dry_run:  # a real launch says only what went wrong (the dry run says the rest)
            notes = [n for n in notes if "could not pre-fetch" in n]
        return notes, estimate.largest_gb if estimate else 0.0

    def launch_files(self, row: PlanRow, config: Mapping[str, Any], run_dir: Path) -> list[Path]:
        """``runs/<run_id>/launch.sh``, readable and runnable by hand."""
        return [megatron.write_launch(row, config, run_dir)]

    def branch_ready(self, run_dir: Path, step: int) -> bool:
        """Megatron writes its tracker after a save is complete (core_v0.16.1
        checkpointing.py:720-723): the directory counts once the tracker has reached ``step``."""
        reached = megatron.checkpointed_iteration(run_dir)
        return reached is not None and reached >= step and \
            self.branch_checkpoint(run_dir, step).is_dir()

    def routing(self, run_dir: Path) -> Routing | None:
        """Its MoE losses (TensorBoard per layer, else layer means; train.log)."""
        return read_routing(Path(run_dir))

    def throughput(self, run_dir: Path) -> Throughput | None:
        """Its own ``elapsed time per iteration`` and ``throughput per GPU`` lines."""
        return read_throughput(Path(run_dir))

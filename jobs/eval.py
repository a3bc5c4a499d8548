"""``flame eval``: downstream accuracy of a sweep's checkpoints with lm-evaluation-harness.

Every completed run of the sweep (and of its release, ``<sweep>/release/``, when there is one)
is evaluated at its final checkpoint, or at every checkpoint it kept (``--checkpoints all``:
a release run's tenths, for training dynamics), on lm-eval tasks (``--tasks``; by default the
demo's local task for the embedded trainer and FLAME-MoE's six for Megatron). One evaluation is
one job on the sweep's executor (``cluster=local``: in this process, one after another;
``cluster=slurm``: a submitit array), and writes lm-eval's results JSON into
``runs/<id>/eval/<checkpoint>/`` (atomically for the embedded trainer; ``lm_eval
--output_path`` for Megatron). An evaluation whose file holds every task is never run again,
so a killed ``flame eval`` continues where it stopped. Then ``flame collect``'s
``acc_<task>`` columns and ``downstream.json`` (``analysis.downstream``).

Everything is checked before anything is written: the sweep, the task names (lm-eval's index),
each checkpoint.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from analysis.downstream.results import eval_dir, read_scores
from jobs.executors.base import CallBatch, CallOutcome
from jobs.executors.registry import executor_for
from jobs.settings import ClusterSettings
from sweep.config import read_config, read_plan
from sweep.errors import ConfigError
from sweep.io import run_dir
from sweep.records import COMPLETED, read_record
from trainers.lm_eval_tasks import check_tasks
from trainers.registry import trainer_for


@dataclass(frozen=True)
class EvalTarget:
    """One checkpoint to evaluate."""

    sweep_dir: str
    """The sweep (or release) directory of the run."""
    run_id: str
    """The run."""
    label: str
    """``final`` or ``iter_<step:07d>``: its folder under ``runs/<id>/eval/``."""
    checkpoint: str
    """The checkpoint: a file (embedded) or Megatron's checkpoint directory."""
    iteration: int | None
    """The checkpoint's step (None: the run's last)."""
    trainer: str
    """The run's trainer."""

    @property
    def out(self) -> Path:
        return eval_dir(Path(self.sweep_dir), self.run_id, self.label)


def eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", default=None,
                        help="lm-eval task names, comma-separated (default: the trainer's)")
    parser.add_argument("--checkpoints", choices=("final", "all"), default="final",
                        help="each run's final checkpoint, or every checkpoint it kept")
    parser.add_argument("--runs", default=None, help="only these run ids, comma-separated")
    parser.add_argument("--limit", type=int, default=None,
                        help="score only the first N documents of each task (a quick look)")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per forward")
    parser.add_argument("--no-release", action="store_true",
                        help="leave <sweep_dir>/release/ alone")
    parser.add_argument("--n-boot", type=int, default=200,
                        help="bootstrap resamples of the accuracy-vs-loss sigmoid")


def sweeps_of(sweep_dir: Path, with_release: bool) -> list[Path]:
    from analysis.downstream.summary import release_pair

    _, release = release_pair(sweep_dir)
    return [sweep_dir] + ([release] if release and release != sweep_dir and with_release
                          else [])


def trainer_of(sweep_dir: Path) -> str:
    config = read_config(sweep_dir)
    if config is None:
        raise ConfigError(f"sweep_dir={sweep_dir}: no config.yaml; plan and train the sweep "
                          "first (`flame run`)")
    name = str((config.get("trainer") or {}).get("name", ""))
    if not trainer_for(name).eval_tasks:
        raise ConfigError(f"trainer={name}: has no model to evaluate downstream; flame eval "
                          "takes sweeps trained with trainer=embedded or trainer=megatron")
    return name


def targets(sweep_dir: Path, trainer: str, which: str, runs: set[str] | None
            ) -> tuple[list[EvalTarget], list[str]]:
    """(checkpoints to evaluate, runs skipped as not completed). A completed run without its
    checkpoint is a ConfigError."""
    rows = read_plan(sweep_dir)
    found, skipped = [], []
    for row in rows:
        if runs and row.run_id not in runs:
            continue
        record = read_record(sweep_dir, row.run_id)
        if record is None or record.state != COMPLETED:
            skipped.append(row.run_id)
            continue
        found += _checkpoints(sweep_dir, row.run_id, trainer, which)
    return found, skipped


def _checkpoints(sweep_dir: Path, run_id: str, trainer: str, which: str) -> list[EvalTarget]:
    """The run's checkpoints to evaluate, as its trainer keeps them."""
    made = trainer_for(trainer).eval_checkpoints(run_dir(sweep_dir, run_id), which == "all")
    return [EvalTarget(str(sweep_dir), run_id, label, str(path), step, trainer)
            for label, path, step in made]


def finished(target: EvalTarget, tasks: Sequence[str]) -> bool:
    """Whether the checkpoint's results already hold every task."""
    return set(tasks) <= set(read_scores(target.out))


# -- the work of one job ----------------------------------------------------------------------
def run_one(target: EvalTarget, tasks: Sequence[str], trainer_cfg: dict,
            limit: int | None, batch_size: int) -> str:
    """One job: the target's evaluation, by its trainer (``Trainer.evaluate``)."""
    return trainer_for(target.trainer).evaluate(target, tasks, trainer_cfg, limit, batch_size)


# -- the command ------------------------------------------------------------------------------
def eval_command(cfg: DictConfig, args: argparse.Namespace) -> int:
    """Evaluate the sweep's (and its release's) checkpoints, collect, fit accuracy to loss."""
    console = Console(width=None if Console().is_terminal else 120)
    sweep_dir = Path(str(cfg.sweep_dir))
    if not (sweep_dir / "plan.csv").is_file():
        raise ConfigError(f"sweep_dir={sweep_dir}: no plan.csv; run `flame run` first")
    cluster = ClusterSettings.from_cfg(cfg)
    runs = set(args.runs.split(",")) if args.runs else None
    todo, total, skipped, jobs_of = [], 0, [], {}
    sweeps = sweeps_of(sweep_dir, not args.no_release)
    trainers = {s: trainer_of(s) for s in sweeps}
    names = args.tasks.split(",") if args.tasks else \
        list(trainer_for(trainers[sweep_dir]).eval_tasks)
    names = [n.strip() for n in names if n.strip()]
    check_tasks(names)
    if runs:
        planned = {row.run_id for sweep in sweeps for row in read_plan(sweep)}
        if runs - planned:
            raise ConfigError(f"--runs: {sorted(runs - planned)[0]!r} is not a run of "
                              f"{sweep_dir}/plan.csv (or its release's)")
    for sweep in sweeps:
        found, missed = targets(sweep, trainers[sweep], args.checkpoints, runs)
        total += len(found)
        skipped += missed
        todo += [t for t in found if not finished(t, names)]
        jobs_of[sweep] = (read_config(sweep) or {}).get("trainer") or {}
    if not total:
        raise ConfigError(f"sweep_dir={sweep_dir}: no completed run to evaluate "
                          f"({len(skipped)} not completed); train them first (`flame run`)")
    console.print(f"flame eval: {total} checkpoints of {len(sweeps)} sweep(s) on "
                  f"{', '.join(names)}: {total - len(todo)} already evaluated, {len(todo)} to "
                  f"evaluate" + (f"; {len(skipped)} runs not completed, skipped"
                                 if skipped else ""))
    began = time.perf_counter()
    if todo:
        _execute(cluster, sweep_dir, todo, names, jobs_of, args, console)
    spent = time.perf_counter() - began
    if todo:
        console.print(f"evaluated {len(todo)} checkpoints in {spent:.1f} s "
                      f"({spent / len(todo):.2f} s each)")
    _collect_and_fit(sweeps, sweep_dir, args.n_boot, console)
    return 0


def _execute(cluster: ClusterSettings, sweep_dir: Path, todo: list[EvalTarget],
             names: list[str], jobs_of: dict, args: argparse.Namespace,
             console: Console) -> None:
    """Each checkpoint's evaluation as a job of the cluster's executor: here one after
    another (each takes the GPU), or one array on a scheduler, with the GPUs the trainers'
    evaluation asks for, waited for (a killed wait leaves the jobs running: their results
    count on the next ``flame eval``); a failed job is reported and the rest go on."""
    specs = [(t, names, jobs_of[Path(t.sweep_dir)], args.limit, args.batch_size) for t in todo]
    gpus = max(trainer_for(spec[0].trainer).eval_gpus for spec in specs)
    batch = CallBatch("eval", sweep_dir / "jobs" / "eval", gpus_per_node=gpus or None,
                      parallel=False)
    executor = executor_for(cluster)

    def ended(outcome: CallOutcome) -> None:
        target = specs[outcome.index][0]
        if outcome.error is not None:
            console.print(f"  failed: {target.run_id} {target.label}: {outcome.error}")
            return
        console.print(f"  [{outcome.index + 1}/{len(specs)}] {target.run_id} {target.label}: "
                      + ", ".join(f"{task} {score.acc:.3f}" for task, score in
                                  sorted(read_scores(target.out).items())))

    def submitted(ids: list[str]) -> None:
        console.print(f"submitted {len(ids)} evaluation jobs ({executor.describe_batch(ids)})")

    executor.run_calls(batch, [functools.partial(run_one, *spec) for spec in specs], ended,
                       submitted)


def _collect_and_fit(sweeps: list[Path], sweep_dir: Path, n_boot: int,
                     console: Console) -> None:
    from analysis.collect import collect_sweep
    from analysis.downstream.results import accuracy_tasks
    from analysis.downstream.summary import DOWNSTREAM_JSON, write_downstream

    for sweep in sweeps:
        results = collect_sweep(sweep)
        console.print(f"wrote {sweep / 'results.csv'} (acc_<task> columns: "
                      f"{', '.join(accuracy_tasks(results)) or 'none yet'})")
    document = write_downstream(sweep_dir, n_boot=n_boot)
    console.print(_task_table(document["tasks"]))
    for row in document["tasks"]:
        if row.get("reason"):
            console.print(f"  {row['task']}: sigmoid {row['reason']}", markup=False,
                          highlight=False)
    if document["release"]:
        console.print(_release_table(document["release"]))
    console.print(f"wrote {sweep_dir / DOWNSTREAM_JSON}"
                  + (f", {', '.join(document['figures'])}" if document["figures"] else ""))


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _task_table(rows: list[dict]) -> Table:
    table = Table(title="accuracy against loss (sigmoid in loss, Bhagia et al. 2024)",
                  title_justify="left")
    for col in ("task", "runs", "acc range", "Spearman (val loss)", "Spearman (law loss)",
                "a", "k", "L0", "b", "rmse"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["task"], str(r["runs"]), f"{_fmt(r['acc_min'])}-{_fmt(r['acc_max'])}",
                      _fmt(r["spearman_val_loss"], 2), _fmt(r["spearman_law_loss"], 2),
                      _fmt(r["a"]), _fmt(r["k"], 2), _fmt(r["L0"]), _fmt(r["b"]),
                      _fmt(r["rmse"]))
    return table


def _release_table(rows: list[dict]) -> Table:
    table = Table(title="release: accuracy predicted from the sweep alone vs scored",
                  title_justify="left")
    for col in ("run_id", "task", "predicted loss", "achieved loss", "predicted acc [95%]",
                "scored acc", "inside"):
        table.add_column(col)
    for r in rows:
        interval = (f" [{_fmt(r.get('predicted_low'))}, {_fmt(r.get('predicted_high'))}]"
                    if r.get("predicted_low") is not None else "")
        table.add_row(r["run_id"], r["task"], _fmt(r["predicted_loss"]),
                      _fmt(r["achieved_loss"]), _fmt(r.get("predicted_acc")) + interval,
                      _fmt(r["scored_acc"]), "-" if r["inside"] is None else
                      ("yes" if r["inside"] else "NO"))
    return table


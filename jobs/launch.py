"""``flame launch``: submit the plan's runs that are not queued, running or finished.

Non-blocking (returns once submitted), idempotent (the ledger says what is queued) and
crash-safe: under the sweep's launch lock, the executor first brings the ledger up to date
(``Executor.recover``: on SLURM, arrays a killed launcher left held, jobs that ended unseen),
then the runs still ``planned`` are submitted through it (``Executor.submit``: SLURM arrays
with a manifest each, or local workers that claim runs from the ledger).
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from jobs import ledger
from jobs.branches import Wait, has_branches, waits
from jobs.executors.base import Executor
from jobs.executors.registry import executor_for
from jobs.overrides import LaunchSettings, launch_settings
from jobs.preflight import check_runs, write_trainer
from jobs.settings import ClusterSettings
from jobs.sweepdir import jobs_dir, plan_rows, read_config, record_cluster
from sweep.errors import ConfigError
from sweep.io import run_dir
from sweep.planrow import PlanRow
from sweep.schema import literal
from trainers.registry import trainer_for

LAUNCH_LOCK = "launch.lock"
DRY_RUN_DIR = "dry-run"


class LauncherBusy(ConfigError):
    """Another ``flame launch`` holds this sweep's launch lock."""


@dataclass(frozen=True)
class LaunchReport:
    """What one ``flame launch`` did."""

    submitted: tuple[str, ...]
    """Run ids submitted now (in plan order)."""
    skipped: dict[str, str]
    """Run id -> ledger state of the runs left alone (queued, running or finished)."""
    job_ids: tuple[str, ...]
    """Scheduler ids of what was submitted now (array tasks, or local worker jobs)."""
    recovered: tuple[str, ...] = ()
    """Run ids a killed launcher had submitted, found by job name and recorded now."""
    dry_run: bool = False
    """Nothing was submitted; ``files`` holds what would have been."""
    files: tuple[Path, ...] = field(default_factory=tuple)
    """Dry run: the sbatch/launch files written."""
    warnings: tuple[str, ...] = ()
    """One line each: unreadable state.json files (left alone, named with the fix), arrays
    still held after a failed release (the next launch retries)."""
    cluster: str = ""
    """The name of the cluster the runs went (or would go) to."""


@contextmanager
def launcher_lock(sweep_dir: Path) -> Iterator[None]:
    """One launcher per sweep; a second one gets ``LauncherBusy`` naming the holder's PID and
    host. flock dies with its process, so a SIGKILLed launcher never leaves a stale lock."""
    path = jobs_dir(sweep_dir) / LAUNCH_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ledger.holder_line(handle)  # read as lock_holder does: it may be mid-write
            raise LauncherBusy(f"another flame launch is submitting this sweep ({holder}); "
                               f"wait for it to finish, then run `flame launch` again") from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on host {socket.gethostname()} since {ledger.now()}\n")
        handle.flush()
        yield


def select(rows: list[PlanRow], states: dict[str, ledger.RunRecord],
           corrupt: frozenset[str] = frozenset()) -> tuple[list[str], dict]:
    """Runs to submit (never submitted, or reset by resubmit) and the others with their state.
    A run whose state.json is unreadable is skipped: it may be queued or training."""
    todo, skipped = [], {}
    for row in rows:
        if row.run_id in corrupt:
            skipped[row.run_id] = ledger.CORRUPT
            continue
        state = ledger.state_of(states, row.run_id)
        if state == ledger.PLANNED:
            todo.append(row.run_id)
        else:
            skipped[row.run_id] = state
    return todo, skipped


def launch_sweep(sweep_dir: Path, cfg: DictConfig, dry_run: bool = False,
                 overrides: Sequence[str] | None = None, executor: Executor | None = None,
                 settings: LaunchSettings | None = None) -> LaunchReport:
    """Submit the missing runs of ``sweep_dir``'s plan; non-blocking. The settings come from
    its config.yaml by the one rule of ``jobs.overrides``: ``overrides``, the command line's
    (None: ``cfg`` is the whole config to launch with, e.g. just planned by ``flame run``);
    ``settings``: those already worked out (``launch_settings``). ``executor``: the command's,
    built at its entry (None: built here for the launch's cluster)."""
    sweep_dir = Path(sweep_dir).resolve()
    rows = plan_rows(sweep_dir)
    # The jobs need config.yaml: fail here, not in every job. Then, before anything is written:
    # settings named at launch (applied or refused) and every run's flags and shape.
    settings = settings or launch_settings(sweep_dir, cfg, overrides)
    config, changes = settings.config, settings.changes
    cluster = executor.cluster if executor is not None else \
        ClusterSettings.from_cfg({"cluster": settings.cluster})
    states, corrupt = ledger.scan(sweep_dir)
    todo, _ = select(rows, states, frozenset(corrupt))
    shaped, notes = check_runs(rows, config, todo, cluster, dry_run, sweep_dir)
    if executor is None or shaped is not cluster:  # the job shape the trainer needs
        executor = executor_for(shaped)
    if not dry_run:
        executor.check()
    applied = "operational: applied at launch"  # said once nothing more can refuse the launch
    for line in [*settings.notes, *notes,
                 *(f"{c} ({applied}{'' if dry_run else ', config.yaml updated'})"
                   for c in changes), *(f"{c} ({applied})" for c in settings.cluster_changes)]:
        print(line, file=sys.stderr)
    with launcher_lock(sweep_dir):
        recovered: list[str] = []
        warnings: list[str] = []
        if not dry_run:  # a killed launcher's submissions, jobs that ended unseen
            recovered = executor.recover(sweep_dir, warnings)
        states, corrupt = ledger.scan(sweep_dir)
        warnings += [str(err) for rid, err in sorted(corrupt.items())]
        todo, skipped = select(rows, states, frozenset(corrupt))
        todo, held = hold_dead_branches(sweep_dir, rows, todo, states, corrupt, config)
        skipped.update({rid: ledger.PLANNED for rid in held})
        warnings += held_lines(held)
        if dry_run:
            files = write_launch_scripts(sweep_dir, rows, todo, config)
            files += write_dry_run(sweep_dir, executor, rows, todo)
            return LaunchReport(tuple(todo), skipped, (), (), True, tuple(files),
                                tuple(warnings), cluster.name)
        if changes:
            write_trainer(sweep_dir, config)
        record_cluster(sweep_dir, OmegaConf.create(literal(settings.cluster)))
        job_ids = executor.submit(sweep_dir, rows, todo)
        return LaunchReport(tuple(todo), skipped, tuple(str(j) for j in job_ids),
                            tuple(recovered), warnings=tuple(warnings), cluster=cluster.name)


def hold_dead_branches(sweep_dir: Path, rows: list[PlanRow], todo: list[str],
                       states: dict[str, ledger.RunRecord], corrupt: dict, config: dict
                       ) -> tuple[list[str], dict[str, Wait]]:
    """``todo`` less the branches that could never start: their trunk is not launched now and
    will not write their checkpoint (failed, cancelled, timed out, never launched). They stay
    ``planned``; ``flame resubmit <trunk>`` launches the trunk and them. The others, with their
    waits by run id."""
    if not has_branches(rows):
        return todo, {}
    wanted = set(todo)
    found = waits(sweep_dir, [r for r in rows if r.run_id in wanted], states, corrupt,
                  trainer_for(config["trainer"]))
    dead = {rid: w for rid, w in found.items() if not w.live and w.trunk not in wanted}
    return [rid for rid in todo if rid not in dead], dead


def held_lines(held: dict[str, Wait]) -> list[str]:
    """One line per trunk whose branches a launch left planned."""
    by_trunk: dict[str, list[str]] = {}
    for run_id, wait in held.items():
        by_trunk.setdefault(wait.trunk, []).append(run_id)
    waits_of = {wait.trunk: wait for wait in held.values()}
    return [f"{len(ids)} branches not launched, {waits_of[trunk].line()}; "
            f"{waits_of[trunk].fix()} ({', '.join(ids)})" for trunk, ids in by_trunk.items()]


def write_launch_scripts(sweep_dir: Path, rows: list[PlanRow], todo: list[str],
                         config: dict | None = None) -> list[Path]:
    """The files the trainer writes before a run is submitted (``Trainer.launch_files``: e.g.
    Megatron's ``runs/<run_id>/launch.sh``, readable and runnable by hand)."""
    config = config or read_config(sweep_dir)
    trainer, wanted = trainer_for(config["trainer"]), set(todo)
    return [path for row in rows if row.run_id in wanted
            for path in trainer.launch_files(row, config, run_dir(sweep_dir, row.run_id))]


def write_dry_run(sweep_dir: Path, executor: Executor, rows: list[PlanRow],
                  todo: list[str]) -> list[Path]:
    """What a launch would submit (SLURM: the sbatch files; local: the worker plan), under
    ``<sweep>/jobs/dry-run/``."""
    folder = jobs_dir(sweep_dir) / DRY_RUN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return executor.dry_run(sweep_dir, rows, todo, folder)

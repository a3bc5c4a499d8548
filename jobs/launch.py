"""``flame launch``: submit the plan's runs that are not queued, running or finished.

Non-blocking (returns once submitted), idempotent (the ledger says what is queued) and
crash-safe. On SLURM each array is written down first in a manifest
(``<sweep>/jobs/launches/<name>.json``), submitted *held* under that unique job name, its id
recorded in the manifest and the runs' ledgers, and only then released. A launcher killed at
any point leaves either a manifest without a job (nothing to do), or a held job the next
launcher finds by name (``squeue``/``sacct --name``), records and releases: no run is lost and
none is submitted twice. Locally, ``parallelism`` worker jobs claim queued runs from the ledger.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from jobs import ledger, slurm
from jobs.branches import Wait, has_branches, trunks_first, waits
from jobs.executors import dry_run_executor, local_executor, slurm_executor
from jobs.preflight import check_runs, trainer_overrides, write_trainer
from jobs.reconcile import reconcile
from jobs.settings import ClusterSettings
from jobs.sweepdir import jobs_dir, plan_rows, read_config, record_cluster
from jobs.task import LocalWorker, RunTask, claim_lock, live_workers
from sweep.errors import ConfigError
from sweep.io import atomic_write_text, run_dir
from sweep.planrow import PlanRow

LAUNCH_LOCK = "launch.lock"
LAUNCHES_DIR = "launches"
DRY_RUN_DIR = "dry-run"
LOGS_DIR = "logs"


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


def shape(row: PlanRow, settings: ClusterSettings) -> tuple:
    """A run's resource shape: runs of one shape share an array. One shape per cluster config
    today; the hook for per-member resources (GPUs, time limit) later."""
    return (settings.gpus_per_node, settings.cpus_per_task, settings.timeout_min)


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
                 explicit: set[str] | None = None) -> LaunchReport:
    """Submit the missing runs of ``sweep_dir``'s plan with ``cfg.cluster``; non-blocking.
    ``explicit``: the trainer keys the command line named (None: compare them all)."""
    settings = ClusterSettings.from_cfg(cfg)
    sweep_dir = Path(sweep_dir).resolve()
    rows = plan_rows(sweep_dir)
    # The jobs need config.yaml: fail here, not in every job. Then, before anything is written:
    # trainer keys overridden at launch (applied or refused) and every run's flags and shape.
    config, changes = trainer_overrides(read_config(sweep_dir), cfg, explicit)
    states, corrupt = ledger.scan(sweep_dir)
    todo, _ = select(rows, states, frozenset(corrupt))
    settings, notes = check_runs(rows, config, todo, settings, dry_run)
    for line in [*notes, *(f"{c} (operational: applied at launch"
                           f"{'' if dry_run else ', config.yaml updated'})" for c in changes)]:
        print(line, file=sys.stderr)
    if settings.executor == "slurm" and not dry_run:
        slurm.ensure_client(settings)
    with launcher_lock(sweep_dir):
        recovered: list[str] = []
        warnings: list[str] = []
        if settings.executor == "slurm" and not dry_run:
            recovered = recover_manifests(sweep_dir, warnings)
            reconcile(sweep_dir, settings)  # finished/failed jobs the ledger has not seen
        states, corrupt = ledger.scan(sweep_dir)
        warnings += [str(err) for rid, err in sorted(corrupt.items())]
        todo, skipped = select(rows, states, frozenset(corrupt))
        todo, held = hold_dead_branches(sweep_dir, rows, todo, states, corrupt, config)
        skipped.update({rid: ledger.PLANNED for rid in held})
        warnings += held_lines(held)
        if dry_run:
            files = write_launch_scripts(sweep_dir, rows, todo, config)
            files += write_dry_run(sweep_dir, settings, rows, todo)
            return LaunchReport(tuple(todo), skipped, (), (), True, tuple(files),
                                tuple(warnings))
        if changes:
            write_trainer(sweep_dir, config)
        record_cluster(sweep_dir, cfg.cluster)
        if settings.executor == "slurm":
            job_ids = submit_slurm(sweep_dir, settings, rows, todo)
        else:
            job_ids = submit_local(sweep_dir, settings, todo)
        return LaunchReport(tuple(todo), skipped, tuple(job_ids), tuple(recovered),
                            warnings=tuple(warnings))


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
                  config["trainer"]["name"])
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


def _groups(rows: list[PlanRow], todo: list[str],
            settings: ClusterSettings) -> list[list[str]]:
    """``todo`` split by resource shape, then into arrays of at most ``max_array_size``."""
    wanted, by_shape = set(todo), {}
    for row in rows:
        if row.run_id in wanted:
            by_shape.setdefault(shape(row, settings), []).append(row.run_id)
    size = settings.max_array_size
    return [ids[i:i + size] for ids in by_shape.values() for i in range(0, len(ids), size)]


def unreleased_arrays(sweep_dir: Path) -> list[str]:
    """Names of arrays a killed launcher left held (the next ``flame launch`` releases them)."""
    folder = jobs_dir(sweep_dir) / LAUNCHES_DIR
    if not folder.is_dir():
        return []
    return [p.stem for p in sorted(folder.glob("*.json"))
            if not json.loads(p.read_text()).get("released")]


def _manifest_path(sweep_dir: Path, name: str) -> Path:
    return jobs_dir(sweep_dir) / LAUNCHES_DIR / f"{name}.json"


def _write_manifest(sweep_dir: Path, manifest: dict) -> None:
    atomic_write_text(_manifest_path(sweep_dir, manifest["name"]),
                      json.dumps(manifest, indent=1) + "\n")


def _task_ids(job_id: str, count: int) -> list[str]:
    return [job_id] if count == 1 else [f"{job_id}_{i}" for i in range(count)]


def submit_slurm(sweep_dir: Path, settings: ClusterSettings, rows: list[PlanRow],
                 todo: list[str]) -> list[str]:
    """One held array per group: manifest, sbatch, record, release. Trunks and independent
    runs first; then the branches, in one array per trunk that depends on the trunk's task
    (``branch_arrays``), so their dependency names a job id the ledger already holds."""
    branch = {row.run_id for row in rows if row.role == "branch"}
    job_ids = []
    for group in _groups(trunks_first(rows), [rid for rid in todo if rid not in branch],
                         settings):  # trunks lead their arrays: the first tasks to start
        job_ids += _submit_array(sweep_dir, settings, group)
    later = [rid for rid in todo if rid in branch]
    for group, dependency in branch_arrays(sweep_dir, rows, later, settings) if later else []:
        job_ids += _submit_array(sweep_dir, settings, group, dependency)
    return job_ids


def branch_arrays(sweep_dir: Path, rows: list[PlanRow], todo: list[str],
                  settings: ClusterSettings, dry_run: bool = False
                  ) -> list[tuple[list[str], str | None]]:
    """The branches of ``todo`` as arrays with their sbatch dependency: one array per trunk
    still queued or training, ``afterok:<its task>`` (sbatch takes one dependency per
    submission, for all the tasks of an array: hence one array per trunk, not one for all
    branches); branches whose trunk checkpoint exists already in arrays without one.
    ``dry_run``: a trunk not submitted yet is named in place of its job id."""
    records = ledger.read_all(sweep_dir)
    by_id = {row.run_id: row for row in rows}
    found = waits(sweep_dir, [by_id[rid] for rid in todo], records)
    by_dependency: dict[str | None, list[str]] = {}
    for run_id in todo:
        dependency = None
        if run_id in found:  # trunk queued or training (launch held back the others)
            trunk = found[run_id].trunk
            job = (records[trunk].last_job_id if trunk in records else None) or ""
            if found[run_id].live and job[:1].isdigit():
                dependency = f"afterok:{job}"
            elif dry_run:
                dependency = f"afterok:JOB_OF_TRUNK_{trunk}"
        by_dependency.setdefault(dependency, []).append(run_id)
    return [(group, dependency) for dependency, ids in by_dependency.items()
            for group in _groups(rows, ids, settings)]


def _submit_array(sweep_dir: Path, settings: ClusterSettings, group: list[str],
                  dependency: str | None = None) -> list[str]:
    """Submit one held array (manifest first), record its tasks, release it."""
    name = f"flame-{group[0]}" if len(group) == 1 else f"flame-{uuid.uuid4().hex[:12]}"
    manifest = {"name": name, "run_ids": group, "job_id": None, "released": False,
                "sweep_dir": str(sweep_dir), "created_at": ledger.now()}
    if dependency:
        manifest["dependency"] = dependency
    _write_manifest(sweep_dir, manifest)
    executor = slurm_executor(settings, jobs_dir(sweep_dir) / LOGS_DIR, name,
                              dependency=dependency)
    with executor.batch():
        jobs = [executor.submit(RunTask(str(sweep_dir), rid, settings.max_attempts))
                for rid in group]
    manifest["job_id"] = jobs[0].job_id.split("_")[0]
    _write_manifest(sweep_dir, manifest)
    ledger.transition_many(sweep_dir, [(rid, ledger.SUBMITTED, job.job_id)
                                       for rid, job in zip(group, jobs)])
    try:
        slurm.release(manifest["job_id"])
    except slurm.SchedulerError as err:  # held and recorded: the next launch releases it
        raise ConfigError(_held_message(manifest, err)) from None
    manifest["released"] = True
    _write_manifest(sweep_dir, manifest)
    return [job.job_id for job in jobs]


# ``scontrol release`` errors that mean nothing is left held: the job already ended, or
# SLURM no longer knows it (reconcile then deals with its runs). Any other error (a timeout,
# slurmctld restarting) may be transient: the array stays held and the next launch retries.
NOTHING_HELD = ("already finished", "invalid job id", "not held", "already released")


def _held_message(manifest: dict, err: Exception) -> str:
    return (f"array {manifest['name']} (job {manifest['job_id']}, "
            f"{len(manifest['run_ids'])} runs) is submitted but still held: `scontrol release` "
            f"failed ({' '.join(str(err).split())}); run `flame launch` again to release it")


def recover_manifests(sweep_dir: Path, warnings: list[str] | None = None) -> list[str]:
    """Finish what a killed launcher left: find each unreleased array by its name, record its
    runs as submitted, release it. An array whose job never reached SLURM is forgotten (its
    runs are still ``planned``); one whose job files are missing is cancelled. An array whose
    release fails for another reason than "nothing held" stays unreleased (a line is added to
    ``warnings``) and the next launch tries again."""
    recovered: list[str] = []
    folder = jobs_dir(sweep_dir) / LAUNCHES_DIR
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        manifest = json.loads(path.read_text())
        if manifest.get("released"):
            continue
        job_id = manifest.get("job_id") or slurm.find_by_name(manifest["name"])
        if job_id is None:
            path.unlink()
            continue
        tasks = _task_ids(job_id, len(manifest["run_ids"]))
        logs = jobs_dir(sweep_dir) / LOGS_DIR
        if not all((logs / t / f"{t}_submitted.pkl").exists() for t in tasks):
            slurm.scancel([job_id])  # killed inside submitit, before it stored the tasks
            path.unlink()
            continue
        manifest["job_id"] = job_id
        _write_manifest(sweep_dir, manifest)
        recovered += ledger.transition_many(
            sweep_dir, [(rid, ledger.SUBMITTED, task)
                        for rid, task in zip(manifest["run_ids"], tasks)])
        try:
            slurm.release(job_id)
        except slurm.SchedulerError as err:
            if not any(text in str(err).lower() for text in NOTHING_HELD):
                if warnings is not None:
                    warnings.append(_held_message(manifest, err))
                continue
        manifest["released"] = True
        _write_manifest(sweep_dir, manifest)
    return recovered


def submit_local(sweep_dir: Path, settings: ClusterSettings, todo: list[str]) -> list[str]:
    """Queue ``todo`` in the ledger and make sure enough local workers are alive to drain it."""
    with claim_lock(sweep_dir):  # workers claim and exit under it: none is missed
        ledger.transition_many(sweep_dir, [(rid, ledger.SUBMITTED, None) for rid in todo])
    return ensure_local_workers(sweep_dir, settings)


WORKERS_LOG = "local-workers.out"


@contextmanager
def _detached_stdio(log: Path) -> Iterator[None]:
    """Point this process's fds 0, 1 and 2 at /dev/null and ``log`` while workers start.

    submitit's LocalExecutor starts each worker with ``Popen`` and no redirection, so workers
    would inherit the caller's stdout: ``flame launch | tail`` then waits for the last worker to
    exit (19 s instead of 1 s). submitit has no parameter for it, so the launcher swaps its own
    descriptors for the duration of the ``submit`` calls and restores them after.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    log.parent.mkdir(parents=True, exist_ok=True)
    sinks = {0: os.open(os.devnull, os.O_RDONLY),
             1: os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)}
    sinks[2] = sinks[1]
    saved: dict[int, int | None] = {}
    for fd in (0, 1, 2):
        try:
            saved[fd] = os.dup(fd)
        except OSError:  # closed in this process (a daemon): nothing to restore
            saved[fd] = None
        os.dup2(sinks[fd], fd)
    try:
        yield
    finally:
        for fd, old in saved.items():
            if old is None:
                os.close(fd)
            else:
                os.dup2(old, fd)
                os.close(old)
        os.close(sinks[0])
        os.close(sinks[1])


def ensure_local_workers(sweep_dir: Path, settings: ClusterSettings) -> list[str]:
    """Start workers up to ``parallelism`` if runs are queued; returns the new workers' ids."""
    states = ledger.read_all(sweep_dir)
    queued = {rid for rid, rec in states.items() if rec.state == ledger.SUBMITTED}
    rows = plan_rows(sweep_dir) if queued else []
    if has_branches(rows):  # branches of a trunk that will not train start no worker
        dead = waits(sweep_dir, [r for r in rows if r.run_id in queued], states)
        queued -= {rid for rid, wait in dead.items() if not wait.live}
    with claim_lock(sweep_dir) as registry:
        workers = live_workers(registry)
        wanted = min(settings.workers - len(workers), len(queued))
        new = []
        if wanted > 0:
            executor = local_executor(settings, jobs_dir(sweep_dir) / LOGS_DIR)
            # Workers outlive the launcher; an ignored SIGHUP is inherited across exec, so
            # closing the launcher's terminal does not kill them either.
            previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
            try:
                with _detached_stdio(jobs_dir(sweep_dir) / LOGS_DIR / WORKERS_LOG):
                    for _ in range(wanted):
                        job = executor.submit(LocalWorker(str(sweep_dir),
                                                          settings.threads_per_job))
                        workers[str(job.job_id)] = ledger.now()
                        new.append(f"local-{job.job_id}")
            finally:
                signal.signal(signal.SIGHUP, previous)
        atomic_write_text(registry, json.dumps(workers, indent=1) + "\n")
    return new


def write_launch_scripts(sweep_dir: Path, rows: list[PlanRow], todo: list[str],
                         config: dict | None = None) -> list[Path]:
    """Megatron runs: each run's ``runs/<run_id>/launch.sh``, readable and runnable by hand."""
    config = config or read_config(sweep_dir)
    if config["trainer"]["name"] != "megatron":
        return []
    from trainers.megatron import write_launch

    wanted = set(todo)
    return [write_launch(row, config, run_dir(sweep_dir, row.run_id))
            for row in rows if row.run_id in wanted]


def write_dry_run(sweep_dir: Path, settings: ClusterSettings, rows: list[PlanRow],
                  todo: list[str]) -> list[Path]:
    """The sbatch files (SLURM) or the worker plan (local) a launch would submit."""
    folder = jobs_dir(sweep_dir) / DRY_RUN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    if settings.executor == "local":
        path = folder / "local.json"
        atomic_write_text(path, json.dumps({"workers": min(settings.workers, len(todo)),
                                            "threads_per_job": settings.threads_per_job,
                                            "run_ids": todo}, indent=1) + "\n")
        return [path]
    # submitit's public API has no "render the sbatch file without submitting": the text comes
    # from its private _make_sbatch_string (what SlurmExecutor._make_submission_file_text
    # calls), fed the executor's own parameters, so the file is the one a launch submits.
    from submitit.slurm.slurm import _make_sbatch_string

    for k, (group, dependency) in enumerate(_dry_run_arrays(sweep_dir, rows, todo, settings)):
        inner = dry_run_executor(settings, jobs_dir(sweep_dir) / LOGS_DIR, f"flame-dry-run-{k}",
                                 dependency)
        text = _make_sbatch_string(command=inner._submitit_command_str,
                                   folder=inner.folder, map_count=len(group), **inner.parameters)
        sbatch, listing = folder / f"array-{k}.sbatch", folder / f"array-{k}.json"
        atomic_write_text(sbatch, text)
        atomic_write_text(listing, json.dumps({"run_ids": group}, indent=1) + "\n")
        files += [sbatch, listing]
    return files


def _dry_run_arrays(sweep_dir: Path, rows: list[PlanRow], todo: list[str],
                    settings: ClusterSettings) -> list[tuple[list[str], str | None]]:
    """The arrays a launch would submit: trunks and independent runs, then the branches."""
    branch = {row.run_id for row in rows if row.role == "branch"}
    later = [rid for rid in todo if rid in branch]
    return ([(group, None) for group in
             _groups(trunks_first(rows), [rid for rid in todo if rid not in branch], settings)]
            + (branch_arrays(sweep_dir, rows, later, settings, dry_run=True) if later else []))

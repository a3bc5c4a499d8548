"""The local executor: worker processes on this machine (submitit's LocalExecutor) that claim
queued runs from the ledger one after another (``jobs.task.LocalWorker``), so ``cluster=local``
never trains more than ``parallelism`` runs at once. Its job ids are ``local-<pid>`` (the
worker's submitit controller)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, ClassVar

import submitit
import submitit.local.local

from jobs import ledger
from jobs.branches import has_branches, waits
from jobs.executors.base import CallBatch, CallOutcome, Executor, JobId, Reconciled
from jobs.settings import ClusterSettings
from jobs.sweepdir import jobs_dir, plan_rows
from jobs.task import CLAIM_LOCK, LocalWorker, claim_lock, live_workers, pid_alive
from sweep.io import atomic_write_text, disk_is_full, free_space
from sweep.planrow import PlanRow
from sweep.records import RunRecord

BACKEND = "local"
LOGS_DIR = "logs"
WORKERS_LOG = "local-workers.out"


@dataclass(frozen=True)
class LocalSettings:
    """The ``cluster`` group's keys the local executor uses (``from_cluster``)."""

    timeout_min: int
    """Wall-time limit of one worker job, minutes."""
    parallelism: int | None = None
    """Concurrent runs (None = CPU cores)."""
    threads_per_job: int = 1
    """``FLAME_THREADS`` of each run (never oversubscribe the cores)."""

    @property
    def workers(self) -> int:
        """Worker jobs to run at once."""
        return self.parallelism or os.cpu_count() or 1

    @classmethod
    def from_cluster(cls, cluster: ClusterSettings) -> LocalSettings:
        """The local keys of a validated ``cluster`` group."""
        return cls(timeout_min=cluster.timeout_min, parallelism=cluster.parallelism,
                   threads_per_job=cluster.threads_per_job)


def local_executor(settings: LocalSettings, folder: Path) -> submitit.AutoExecutor:
    """submitit's LocalExecutor (through AutoExecutor) for the local worker jobs."""
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="local")
    executor.update_parameters(timeout_min=settings.timeout_min, name="flame-worker")
    return executor


def submit_local(sweep_dir: Path, settings: LocalSettings, todo: list[str]) -> list[JobId]:
    """Queue ``todo`` in the ledger and make sure enough local workers are alive to drain it."""
    # Workers claim and exit under the lock (none is missed), and status reads the registry
    # under it: queued runs and the workers that serve them appear together.
    with claim_lock(sweep_dir) as registry:
        ledger.transition_many(sweep_dir, [(rid, ledger.SUBMITTED, None) for rid in todo])
        return _start_workers(sweep_dir, settings, registry)


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


class _GroupedSubprocess:
    """``subprocess`` as submitit's local module sees it, with ``Popen`` starting each worker
    in a process group of its own (``_own_process_groups``)."""

    def __getattr__(self, name: str) -> object:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: object, **kwargs: object) -> subprocess.Popen:  # noqa: N802 (its name)
        return subprocess.Popen(*args, process_group=0, **kwargs)  # type: ignore[call-overload]


@contextmanager
def _own_process_groups() -> Iterator[None]:
    """Start submitit's worker controllers in their own process groups while workers start.

    A terminal's Ctrl-C sends SIGINT to its whole foreground process group: workers in the
    launcher's group died with a Ctrl-C of ``flame run`` (and their runs were recorded failed),
    though they are meant to outlive it. submitit's ``start_controller`` has no parameter for
    it (its ``Popen`` takes only the command and environment), so its module's ``subprocess``
    is swapped for the duration of the ``submit`` calls. The worker's job id stays its
    controller's pid, which now also names its group: ``os.killpg(pid, ...)`` reaches the
    task too.
    """
    module = submitit.local.local
    saved = module.subprocess
    module.subprocess = _GroupedSubprocess()  # type: ignore[assignment]
    try:
        yield
    finally:
        module.subprocess = saved


def ensure_local_workers(sweep_dir: Path, settings: LocalSettings | ClusterSettings
                         ) -> list[JobId]:
    """Start workers up to ``parallelism`` if runs are queued; returns the new workers' ids."""
    if isinstance(settings, ClusterSettings):
        settings = LocalSettings.from_cluster(settings)
    with claim_lock(sweep_dir) as registry:
        return _start_workers(sweep_dir, settings, registry)


def _start_workers(sweep_dir: Path, settings: LocalSettings, registry: Path) -> list[JobId]:
    """``ensure_local_workers`` under the claim lock (``registry``: the workers' file)."""
    states = ledger.read_all(sweep_dir)
    queued = {rid for rid, rec in states.items() if rec.state == ledger.SUBMITTED}
    rows = plan_rows(sweep_dir) if queued else []
    if has_branches(rows):  # branches of a trunk that will not train start no worker
        dead = waits(sweep_dir, [r for r in rows if r.run_id in queued], states)
        queued -= {rid for rid, wait in dead.items() if not wait.live}
    workers = live_workers(registry)
    wanted = min(settings.workers - len(workers), len(queued))
    new = []
    if wanted > 0:
        executor = local_executor(settings, jobs_dir(sweep_dir) / LOGS_DIR)
        # Workers outlive the launcher; an ignored SIGHUP is inherited across exec, so
        # closing the launcher's terminal does not kill them either.
        previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            with (_detached_stdio(jobs_dir(sweep_dir) / LOGS_DIR / WORKERS_LOG),
                  _own_process_groups()):
                for _ in range(wanted):
                    job = executor.submit(LocalWorker(str(sweep_dir), settings.threads_per_job))
                    workers[str(job.job_id)] = ledger.now()
                    new.append(JobId(BACKEND, str(job.job_id)))
        finally:
            signal.signal(signal.SIGHUP, previous)
    atomic_write_text(registry, json.dumps(workers, indent=1) + "\n")
    return new


def unserved(sweep_dir: Path, queued: int, running: list[str]) -> str | None:
    """Why ``queued`` runs will never start, or None: no local worker is alive (all killed,
    out of memory, the machine rebooted) and no run is being trained (a task whose controller
    died alone still holds its run's training lock, and claims the next run after it)."""
    if queued == 0 or any(ledger.lock_holder(sweep_dir, rid) for rid in running):
        return None
    if (jobs_dir(sweep_dir) / CLAIM_LOCK).exists():  # read-only otherwise: nothing to lock
        with claim_lock(sweep_dir) as registry:  # a launch records runs and workers at once
            if live_workers(registry):
                return None
    return (f"{queued} queued runs but no local worker is alive to train them (killed, out of "
            f"memory, the machine rebooted?): `flame launch sweep_dir={sweep_dir}` starts "
            "workers again")


def worker_died(sweep_dir: Path, job: JobId) -> str:
    """The error of a run whose worker exited mid-run without recording why: a full disk
    (the worker could not write even that) when the disk is full now, else a kill."""
    if disk_is_full(sweep_dir):
        return (f"local worker {job.job} exited while training this run, on a full disk "
                f"({free_space(sweep_dir)}): free space, then `flame resubmit --failed` "
                "resumes it from its last checkpoint")
    return f"local worker {job.job} exited while training this run (killed?)"


class LocalExecutor(Executor):
    """Runs on this machine: ``parallelism`` worker processes drain the ledger's queue."""

    name: ClassVar[str] = BACKEND
    job_prefix: ClassVar[str] = "local-"

    def __init__(self, cluster: ClusterSettings) -> None:
        super().__init__(cluster)
        self.settings = self.settings_from(cluster)

    @classmethod
    def settings_from(cls, cluster: ClusterSettings) -> LocalSettings:
        return LocalSettings.from_cluster(cluster)

    def submit(self, sweep_dir: Path, rows: list[PlanRow], todo: list[str]) -> list[JobId]:
        return submit_local(sweep_dir, self.settings, todo)

    def reconcile(self, sweep_dir: Path, active: dict[str, RunRecord]) -> Reconciled:
        """Workers that died while training: the pid is submitit's controller; the task
        training the run is its child and outlives a controller killed alone (it still holds
        the run's train.lock), so only a run with no lock holder is failed."""
        changed = 0
        for run_id, job in self.jobs_of(active).items():
            if (active[run_id].state == ledger.RUNNING and not pid_alive(job.pid())
                    and ledger.lock_holder(sweep_dir, run_id) is None):
                if ledger.transition(sweep_dir, run_id, ledger.FAILED,
                                     error_tail=worker_died(sweep_dir, job)):
                    changed += 1
        return Reconciled(changed)

    def cancel(self, sweep_dir: Path, jobs: list[tuple[str, JobId]]) -> None:
        """SIGINT the worker training each run: submitit stops its task (the run). Only a
        worker that holds the run's training lock now: a run that waited in the queue still
        names the worker of an earlier attempt, and that process may be training another
        run. Then the other queued runs go on (workers are started if needed)."""
        for run_id, job in jobs:
            if job.backend != BACKEND:
                continue
            if ledger.lock_holder(sweep_dir, run_id) == str(job) and pid_alive(job.pid()):
                os.kill(job.pid(), signal.SIGINT)
        ensure_local_workers(sweep_dir, self.settings)

    def tend(self, sweep_dir: Path) -> None:
        """Restart workers that died with runs queued."""
        ensure_local_workers(sweep_dir, self.settings)

    def stalled(self, sweep_dir: Path, queued: int, running: list[str]) -> str | None:
        return unserved(sweep_dir, queued, running)

    def dry_run(self, sweep_dir: Path, rows: list[PlanRow], todo: list[str],
                folder: Path) -> list[Path]:
        path = folder / "local.json"
        atomic_write_text(path, json.dumps({"workers": min(self.settings.workers, len(todo)),
                                            "threads_per_job": self.settings.threads_per_job,
                                            "run_ids": todo}, indent=1) + "\n")
        return [path]

    def describe(self, job: JobId) -> str:
        return f"local worker {job.job}"

    def run_calls(self, batch: CallBatch, calls: list[Callable[[], Any]],
                  ended: Callable[[CallOutcome], None],
                  submitted: Callable[[list[str]], None] = lambda ids: None) -> list[str]:
        """In this process one after another (one worker, or ``batch.parallel`` False),
        else a pool of ``parallelism`` processes, each with FLAME_THREADS set to
        ``threads_per_job`` (spawned: a tokenizer's threads do not survive a fork). A
        failing call raises, as it would in the command itself."""
        workers = min(self.settings.workers, len(calls)) if batch.parallel else 1
        if workers <= 1:
            for index, call in enumerate(calls):
                ended(CallOutcome(index, call()))
            return []
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                 initializer=_set_threads,
                                 initargs=(self.settings.threads_per_job,)) as pool:
            futures = [pool.submit(call) for call in calls]
            for index, future in enumerate(futures):
                ended(CallOutcome(index, future.result()))
        return []


def _set_threads(threads: int) -> None:
    """A pool process's threads per call, as a worker's run gets them (FLAME_THREADS)."""
    os.environ["FLAME_THREADS"] = str(threads)

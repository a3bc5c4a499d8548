"""The executor protocol: what ``flame launch | status | cancel | resubmit`` ask of a scheduler.

One module per executor implements it (``jobs.executors.local``, ``jobs.executors.slurm``),
as submitit has one per backend; the commands hold an ``Executor`` and never ask which one it
is. Job ids are ``JobId``s: each knows its executor and renders the string state.json keeps
(``local-<pid>``, SLURM's ``<job>_<task>``); ``JobId.parse`` is the one place such strings are
read back.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from jobs.executors.registry import backend_of, prefix_of
from jobs.settings import ClusterSettings
from sweep.errors import ConfigError
from sweep.planrow import PlanRow
from sweep.records import RunRecord

_JOB_ID = re.compile(r"^(?P<prefix>[A-Za-z][A-Za-z0-9.]*-)?(?P<job>\d+)(?:_(?P<task>\d+))?$")


@dataclass(frozen=True)
class JobId:
    """A job (or one task of an array) of one executor."""

    backend: str
    """The executor that owns it (``cluster.executor``'s name)."""
    job: str
    """The scheduler's id of the job or array (a SLURM job number, a local worker's pid)."""
    task: int | None = None
    """The array task, if the job is an array."""

    def __str__(self) -> str:
        tail = "" if self.task is None else f"_{self.task}"
        return f"{prefix_of(self.backend)}{self.job}{tail}"

    @property
    def array(self) -> JobId:
        """The whole job (the array a task belongs to)."""
        return JobId(self.backend, self.job)

    @classmethod
    def parse(cls, text: str | None) -> JobId | None:
        """The job id state.json holds as ``text``, or None if no loaded executor wrote it
        (empty, a run trained outside any scheduler: ``pid-<n>``, a test's own marker)."""
        found = _JOB_ID.match(text or "")
        if not found:
            return None
        backend = backend_of(found["prefix"] or "")
        if backend is None:
            return None
        task = found["task"]
        return cls(backend, found["job"], None if task is None else int(task))

    def pid(self) -> int:
        """The job as a process id (executors whose jobs are processes on this machine)."""
        return int(self.job)


@dataclass(frozen=True)
class Reconciled:
    """What one reconcile found."""

    changed: int
    """Runs whose ledger entry it changed."""
    pending: dict[str, str] = field(default_factory=dict)
    """Run id -> the scheduler's reason, for every queued or running run whose job it holds
    pending now (not written to each state.json: on a big sweep reasons change every poll)."""


@dataclass(frozen=True)
class CallBatch:
    """One-off calls a command runs as jobs outside any sweep's ledger (a corpus's shards to
    tokenise, checkpoints to evaluate): ``Executor.run_calls``."""

    command: str
    """The command, for job names and messages (``data``, ``eval``)."""
    folder: Path
    """Where the executor keeps the jobs' own files (logs, submitit's pickles)."""
    gpus_per_node: int | None = None
    """GPUs each call needs, on one node (None: the cluster's own nodes and GPUs)."""
    parallel: bool = True
    """On this machine, calls may run side by side (False: one after another in this
    process, e.g. each takes the GPU)."""
    wait: bool = True
    """Wait for every call (False: return once submitted, where the jobs outlive the
    command)."""
    label: str = ""
    """What the jobs work on, for their name (``flame data``: the output folder's name)."""

    @property
    def job_name(self) -> str:
        """The scheduler's name for the jobs: ``flame-<command>[-<label>]``."""
        return "-".join(["flame", self.command] + ([self.label] if self.label else []))


@dataclass(frozen=True)
class CallOutcome:
    """How one call of a batch ended."""

    index: int
    """Its place in the batch."""
    result: Any = None
    """What it returned."""
    error: str | None = None
    """Why its job failed (None: it returned); on this machine a failing call raises."""


class SchedulerError(RuntimeError):
    """A scheduler's client command failed or timed out (status then shows the ledger alone)."""


class Executor(ABC):
    """Runs a sweep's jobs somewhere. Built from the ``cluster`` group (``executor_for``)."""

    name: ClassVar[str]
    """``cluster.executor``'s value for it."""
    job_prefix: ClassVar[str] = ""
    """How its job ids begin in state.json (``JobId``)."""

    def __init__(self, cluster: ClusterSettings) -> None:
        self.cluster = cluster

    def check(self) -> None:
        """Before anything is planned or written: can the scheduler take jobs? (ConfigError
        saying how to fix it if not.)"""
        return None

    def recover(self, sweep_dir: Path, warnings: list[str]) -> list[str]:
        """Under the launch lock, before selecting: finish what a killed launcher left
        (returns the run ids it recorded now; a line per problem on ``warnings``)."""
        return []

    @abstractmethod
    def submit(self, sweep_dir: Path, rows: list[PlanRow], todo: list[str]) -> list[JobId]:
        """Submit the runs ``todo`` (plan order, trunks before their branches) and record them
        ``submitted`` in the ledger; returns what was submitted."""

    @abstractmethod
    def reconcile(self, sweep_dir: Path, active: dict[str, RunRecord]) -> Reconciled:
        """Record in the ledger what the jobs of ``active`` (queued or running runs) could not
        record themselves: killed, cancelled, vanished, requeued."""

    @abstractmethod
    def cancel(self, sweep_dir: Path, jobs: list[tuple[str, JobId]]) -> None:
        """Stop the jobs of runs just marked cancelled (run id, its latest job)."""

    def withdraw(self, sweep_dir: Path, run_ids: list[str]) -> None:
        """Drop the queued jobs of runs about to be reset and submitted again (resubmit)."""
        return None

    def tend(self, sweep_dir: Path) -> None:
        """While waiting, keep queued runs moving (restart workers that died)."""
        return None

    def stalled(self, sweep_dir: Path, queued: int, running: list[str]) -> str | None:
        """Why the ``queued`` runs (not counting branches whose trunk will not train) will
        never start without the user, and what starts them; None if they will (``running``:
        the runs now running)."""
        return None

    def notes(self, sweep_dir: Path) -> list[str]:
        """Lines ``flame status`` adds about the executor's own state (arrays left held)."""
        return []

    @abstractmethod
    def dry_run(self, sweep_dir: Path, rows: list[PlanRow], todo: list[str],
                folder: Path) -> list[Path]:
        """Write under ``folder`` what a launch of ``todo`` would submit; submit nothing."""

    def describe(self, job: JobId) -> str:
        """The job in words, for messages."""
        return f"job {job}"

    def describe_batch(self, job_ids: list[str]) -> str:
        """Jobs ``run_calls`` submitted, in words."""
        return f"jobs {', '.join(job_ids)}"

    def active_jobs(self, job_ids: list[str]) -> set[str]:
        """Of ``job_ids`` (earlier ``run_calls``), those still queued or running."""
        return set()

    def run_calls(self, batch: CallBatch, calls: list[Callable[[], Any]],
                  ended: Callable[[CallOutcome], None],
                  submitted: Callable[[list[str]], None] = lambda ids: None) -> list[str]:
        """Run ``calls`` as jobs, calling ``ended`` as each ends (every one, unless
        ``batch.wait`` is False and the jobs outlive the command); where they are a
        scheduler's jobs, ``submitted`` gets their ids before any wait (a killed wait leaves
        them recorded); returns those ids (none where the calls ran here)."""
        raise ConfigError(f"cluster.executor={self.name!r}: `flame {batch.command}` runs on "
                          "cluster=local or a SLURM cluster")

    def jobs_of(self, records: dict[str, RunRecord]) -> dict[str, JobId]:
        """Run id -> its latest job, for the runs whose latest job is this executor's."""
        out = {}
        for run_id, rec in records.items():
            job = JobId.parse(rec.last_job_id)
            if job is not None and job.backend == self.name:
                out[run_id] = job
        return out

"""Sweep status: the ledger reconciled with the scheduler (``jobs.reconcile``: one ``sacct``
and one ``squeue`` call per poll for the whole sweep), a table by state, and the blocking wait
``flame run`` uses."""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobs import ledger
from jobs.branches import Wait, waits
from jobs.executors.base import Executor, SchedulerError
from jobs.executors.registry import executor_for
from jobs.reconcile import reconcile
from jobs.settings import ClusterSettings
from jobs.sweepdir import plan_rows
from sweep.errors import ConfigError
from sweep.io import DiskFull, disk_is_full, free_space
from sweep.runstate import SHOWN_STATES, RunState, count_states, state_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunStatus(RunState):
    """One run as ``flame status`` shows it: its state (``sweep.runstate``) and, for a branch,
    what it waits for."""

    wait: Wait | None = None
    """A branch not started yet: the trunk whose checkpoint it waits for, and that trunk's state."""

    @property
    def blocked(self) -> bool:
        """A branch whose trunk will not write its checkpoint unless someone resubmits it."""
        return self.wait is not None and not self.wait.live


@dataclass(frozen=True)
class SweepStatus:
    """All runs of a sweep and their counts by state."""

    runs: tuple[RunStatus, ...]
    """In plan order."""
    counts: dict[str, int]
    """State -> number of runs (every state present, zeros included; ``corrupt`` too)."""
    stalled: str | None = None
    """Why the queued runs will not start without the user, and what starts them (the local
    executor with every worker dead); None when they will."""

    @property
    def total(self) -> int:
        return len(self.runs)

    @property
    def terminal(self) -> int:
        """Runs that will not change again without a resubmit."""
        return sum(self.counts[s] for s in ledger.TERMINAL)

    @property
    def blocked(self) -> int:
        """Branches waiting for a trunk that failed, timed out, was cancelled or never
        launched: only ``flame resubmit <trunk>`` changes that."""
        return sum(run.blocked for run in self.runs)

    @property
    def all_terminal(self) -> bool:
        """Nothing left to wait for: every run terminal, ``corrupt`` (its state.json is
        unreadable, and only a person repairing it changes that) or ``blocked``."""
        return self.terminal + self.counts.get(ledger.CORRUPT, 0) + self.blocked == self.total

    def summary(self) -> str:
        return ", ".join(f"{n} {s}" for s, n in self.counts.items() if n) or "no runs"


"""The states status counts: the ledger's, and ``corrupt`` (an unreadable state.json)."""


def collect(sweep_dir: Path, pending: dict[str, str] | None = None,
            scanned: tuple[dict, dict] | None = None) -> SweepStatus:
    """The status from the ledger alone (no scheduler call); ``pending``: squeue's reason by
    run id for the runs SLURM holds pending now (else the reason a requeued run went back).
    ``scanned``: ``ledger.scan``'s answer if the caller has it fresh."""
    pending = pending or {}
    records, corrupt = scanned if scanned is not None else ledger.scan(sweep_dir)
    rows = plan_rows(sweep_dir)
    waiting = waits(sweep_dir, rows, records, corrupt)
    runs = []
    for row in rows:
        run_id = row.run_id
        state = state_of(run_id, row.member, row.budget, row.gpu_hours, records, corrupt,
                         pending.get(run_id))
        runs.append(RunStatus(**vars(state), wait=waiting.get(run_id)))
    return SweepStatus(tuple(runs), count_states(runs))


def executor_of(cfg: DictConfig | None, executor: Executor | None) -> Executor:
    """The command's executor, or one built from ``cfg.cluster`` (callers without one)."""
    return executor if executor is not None else executor_for(ClusterSettings.from_cfg(cfg))


def poll(sweep_dir: Path, cfg: DictConfig | None = None,
         executor: Executor | None = None) -> SweepStatus:
    """Reconcile the ledger with the scheduler (one sacct call), then the status. A scheduler
    that does not answer costs a warning, not the status: the ledger alone is still right
    about everything the jobs recorded themselves. ``executor``: the command's (else built
    from ``cfg``)."""
    executor, sweep_dir = executor_of(cfg, executor), Path(sweep_dir).resolve()
    pending: dict[str, str] = {}
    scanned = ledger.scan(sweep_dir)  # read once: reconcile and the table share it
    try:
        found = reconcile(sweep_dir, executor, scanned[0])
        pending = found.pending
        if found.changed:  # it recorded ends the jobs could not: read the ledger again
            scanned = ledger.scan(sweep_dir)
    except SchedulerError as err:
        log.warning("status from the ledger only; the scheduler did not answer: %s", err)
        scanned = ledger.scan(sweep_dir)  # it may have recorded some before it failed
    except DiskFull as err:  # status reads; what it would have recorded waits for space
        log.warning("status from the ledger only; what the scheduler says of its jobs could "
                    "not be recorded: %s", err)
        scanned = ledger.scan(sweep_dir)
    status = collect(sweep_dir, pending, scanned)
    queued = sum(r.state == ledger.SUBMITTED and not r.blocked for r in status.runs)
    running = [r.run_id for r in status.runs if r.state == ledger.RUNNING]
    stalled = executor.stalled(sweep_dir, queued, running) if queued else None
    if stalled and disk_is_full(sweep_dir):  # why the workers stopped: say it first
        stalled = (f"the disk is full ({free_space(sweep_dir)}): free space there first; "
                   f"then: {stalled}")
    return replace(status, stalled=stalled) if stalled else status


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.2f}"


def _clock(seconds: float) -> str:
    """``h:mm:ss`` (hours may exceed 24: the sum over runs)."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def status_table(status: SweepStatus, title: str, devices_per_run: int = 1) -> Table:
    """Runs by state: count, attempts, elapsed wall time, device-hours used and estimated."""
    table = Table(title=title, show_footer=True)
    by_state: dict[str, list[RunStatus]] = {s: [] for s in SHOWN_STATES}
    for run in status.runs:
        by_state[run.state].append(run)
    columns = (("state", "all"), ("runs", str(status.total)),
               ("attempts", str(sum(r.attempts for r in status.runs))),
               ("elapsed", _clock(sum(r.elapsed_s for r in status.runs))),
               ("device-h used", _hours(devices_per_run * sum(r.elapsed_s for r in status.runs))),
               ("GPU-h est.", f"{sum(r.gpu_hours_est for r in status.runs):,.2f}"))
    for header, footer in columns:
        table.add_column(header, footer=footer, justify="left" if header == "state" else "right")
    for state, runs in by_state.items():
        if runs:
            elapsed = sum(r.elapsed_s for r in runs)
            table.add_row(state, str(len(runs)), str(sum(r.attempts for r in runs)),
                          _clock(elapsed), _hours(devices_per_run * elapsed),
                          f"{sum(r.gpu_hours_est for r in runs):,.2f}")
    return table


def problems(status: SweepStatus, limit: int = 10) -> list[str]:
    """One line per failed/timed-out run (the last line of its error), at most ``limit``;
    then one line per reason the scheduler keeps runs pending."""
    bad = [r for r in status.runs if r.state in (ledger.FAILED, ledger.TIMEOUT)]
    lines = [f"  {r.run_id} {r.state} (job {r.job_id}): {r.error or ''}" for r in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more (runs/<run_id>/state.json)")
    stalled = [f"  {status.stalled}"] if status.stalled else []
    return lines + wait_lines(status) + pending_lines(status) + stalled


def wait_lines(status: SweepStatus, shown: int = 3) -> list[str]:
    """One line per trunk whose branches wait for it: ``  2 branches waiting for trunk <id>:
    failed; `flame resubmit <id>` trains it again and resubmits them: b1 (job 12_0), b2``."""
    by_trunk: dict[str, list[RunStatus]] = {}
    for run in status.runs:
        if run.wait is not None:
            by_trunk.setdefault(run.wait.line(), []).append(run)
    lines = []
    for line, runs in by_trunk.items():
        fix = runs[0].wait.fix() and f"; {runs[0].wait.fix()}"
        ids = ", ".join(r.run_id + (f" (job {r.job_id})" if r.job_id else "")
                        for r in runs[:shown])
        more = f" and {len(runs) - shown} more" if len(runs) > shown else ""
        lines.append(f"  {len(runs)} branches {line}{fix}: {ids}{more}")
    return lines


# squeue reasons a user may not know, explained (prefix match); the others shown as they are.
REASONS = {
    "BeginTime": "requeued, SLURM holds it back briefly before it may start again",
    "JobHeld": "held: `scontrol release <job id>` lets it start",
    "job requeued in held state": "requeued and held: `scontrol release <job id>` lets it start",
    "ReqNodeNotAvail": "its node is down or drained; it starts when the node is back",
    "NodeDown": "its node is down; it starts when the node is back",
    "Dependency": "waiting for a job it depends on",
    "Priority": "other jobs come first",
    "Resources": "waiting for free resources",
}


def explain_reason(reason: str) -> str:
    for prefix, text in REASONS.items():
        if reason.startswith(prefix):
            return f"{reason}: {text}"
    return reason


def pending_lines(status: SweepStatus, shown: int = 3) -> list[str]:
    """``  2 runs pending (JobHeldUser: held: ...): a1b2, c3d4``, one line per reason."""
    by_reason: dict[str, list[RunStatus]] = {}
    for run in status.runs:  # a branch's Dependency reason: its wait line says more
        if run.reason and run.reason != "None" and run.wait is None:
            by_reason.setdefault(run.reason, []).append(run)
    lines = []
    for reason, runs in by_reason.items():
        ids = ", ".join(f"{r.run_id} (job {r.job_id})" for r in runs[:shown])
        more = f" and {len(runs) - shown} more" if len(runs) > shown else ""
        lines.append(f"  {len(runs)} submitted runs pending in the scheduler "
                     f"({explain_reason(reason)}): {ids}{more}")
    return lines


PLAIN_EVERY_S = 30.0
"""Without a terminal, a progress line at most this often (and at the end)."""


def wait_until_terminal(sweep_dir: Path, cfg: DictConfig | None = None,
                        poll_s: float | None = None, progress: bool = True,
                        console: Console | None = None,
                        executor: Executor | None = None) -> SweepStatus:
    """Block until every run is completed, failed, timed out or cancelled; a rich progress bar
    shows terminal runs of all (plain lines when output is a file or pipe, where a live bar
    would print nothing until the end). Returns the final status (counts by state).
    ``executor``: the command's (else built from ``cfg``)."""
    executor = executor_of(cfg, executor)
    period = executor.cluster.poll_s if poll_s is None else poll_s
    sweep_dir = Path(sweep_dir).resolve()
    console = console or Console()
    plain = progress and not console.is_terminal
    started, last = time.monotonic(), PlainLine()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
                  console=console, disable=plain or not progress, transient=False) as bar:
        task = bar.add_task("runs finished", total=None, counts="")
        while True:
            status = poll(sweep_dir, executor=executor)
            bar.update(task, total=status.total, completed=status.terminal,
                       counts=status.summary())
            if plain:
                last.maybe_print(console, status, time.monotonic() - started)
            if status.all_terminal:
                return status
            if status.counts[ledger.PLANNED] and not any(
                    status.counts[s] for s in ledger.ACTIVE):
                raise ConfigError(f"{status.counts[ledger.PLANNED]} runs of {sweep_dir} were "
                                  "never launched; run `flame launch` first")
            if status.stalled and disk_is_full(sweep_dir):  # new workers would fail too
                raise DiskFull(sweep_dir, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
            executor.tend(sweep_dir)  # e.g. restart local workers that died with runs queued
            time.sleep(period)


@dataclass
class PlainLine:
    """Throttles the plain progress lines: on a change, at most every PLAIN_EVERY_S."""

    terminal: int = -1
    """Terminal runs at the last line printed (-1: none printed yet)."""
    at_s: float = -PLAIN_EVERY_S
    """Elapsed seconds when it was printed."""

    def maybe_print(self, console: Console, status: SweepStatus, elapsed_s: float) -> None:
        changed = status.terminal != self.terminal
        due = elapsed_s - self.at_s >= PLAIN_EVERY_S or status.all_terminal
        if changed and due:
            minutes, seconds = divmod(int(elapsed_s), 60)
            console.print(f"runs finished {status.terminal}/{status.total}  {status.summary()}  "
                          f"{minutes}:{seconds:02d}", highlight=False)
            self.terminal, self.at_s = status.terminal, elapsed_s

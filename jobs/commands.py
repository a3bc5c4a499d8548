"""``flame launch | status | cancel | resubmit``: thin CLI wrappers over jobs.launch/status."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig
from rich.columns import Columns
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar

from jobs import ledger
from jobs.branches import WITH_TRUNK, branches_of, resubmit_set, waits
from jobs.executors.base import Executor, JobId
from jobs.executors.registry import executor_for
from jobs.launch import launch_sweep, launcher_lock
from jobs.overrides import LaunchSettings, launch_settings
from jobs.settings import ClusterSettings
from jobs.status import PlainLine, SweepStatus, poll, problems, status_table
from jobs.sweepdir import plan_rows
from sweep.errors import ConfigError


def _console() -> Console:
    return Console(width=None if Console().is_terminal else 150)


def launch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="write the sbatch/launch files under <sweep_dir>/jobs/dry-run/, "
                             "submit nothing")


def command_executor(cfg: DictConfig) -> Executor:
    """The typed ``cluster`` group and its executor, built once at a command's entry."""
    return executor_for(ClusterSettings.from_cfg(cfg))


def launch(cfg: DictConfig, args: argparse.Namespace, executor: Executor | None = None,
           settings: LaunchSettings | None = None) -> int:
    """Submit the plan's runs that are not queued, running or finished; return at once. The
    settings are the sweep's config.yaml's, with what the command line names applied or
    refused (``jobs.overrides``); the executor is built for the launch's cluster."""
    sweep_dir = Path(cfg.sweep_dir)
    report = launch_sweep(sweep_dir, cfg, dry_run=bool(getattr(args, "dry_run", False)),
                          overrides=list(getattr(args, "overrides", None) or []),
                          executor=executor, settings=settings)
    console = _console()
    _warn(report.warnings)
    if report.recovered:
        console.print(f"recovered {len(report.recovered)} runs a killed launcher had submitted")
    verb = "would submit" if report.dry_run else "submitted"
    console.print(f"{verb} {len(report.submitted)} runs ({report.cluster}), skipped "
                  f"{len(report.skipped)}")
    skipped: dict[str, int] = {}
    for state in report.skipped.values():
        skipped[state] = skipped.get(state, 0) + 1
    for state, n in skipped.items():
        console.print(f"  skipped {n} {state}")
    if skipped.get(ledger.FAILED) or skipped.get(ledger.TIMEOUT):
        console.print("  failed/timed-out runs are not resubmitted by launch: "
                      "`flame resubmit --failed`")
    if report.job_ids:
        shown = ", ".join(report.job_ids[:6]) + (" ..." if len(report.job_ids) > 6 else "")
        console.print(f"  job ids: {shown}")
    for path in report.files:
        console.print(f"  wrote {path}")
    return 0


def status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--watch", action="store_true",
                        help="refresh every cluster.poll_s seconds until all runs are terminal")
    parser.add_argument("--report", action="store_true",
                        help="also write <sweep_dir>/report.html from what the sweep has so far")


def status(cfg: DictConfig, args: argparse.Namespace) -> int:
    """One table of runs by state (one sacct call); ``--watch`` refreshes until all are done."""
    sweep_dir = Path(cfg.sweep_dir).resolve()
    executor = command_executor(cfg)
    settings = executor.cluster
    devices = max(1, settings.gpus_per_node)
    title = f"{sweep_dir.name} ({settings.name})"
    console = _console()
    current = poll(sweep_dir, executor=executor)
    watch = bool(getattr(args, "watch", False))
    if watch and _nothing_to_wait_for(current):
        raise ConfigError(f"no run of {sweep_dir} is queued or running ("
                          f"{current.counts[ledger.PLANNED]} never launched), so --watch would "
                          "wait forever: run `flame launch` first")
    if watch and not console.is_terminal:
        # A file or pipe: a live view would print nothing until the end; plain lines instead.
        line, started = PlainLine(), time.monotonic()
        while True:
            line.maybe_print(console, current, time.monotonic() - started)
            if current.all_terminal or _nothing_to_wait_for(current) or current.stalled:
                break
            time.sleep(settings.poll_s)
            current = poll(sweep_dir, executor=executor)
        console.print(status_table(current, title, devices))
    elif watch:
        with Live(_watch_view(current, title, devices), console=console,
                  refresh_per_second=2) as live:
            while not (current.all_terminal or _nothing_to_wait_for(current)
                       or current.stalled):
                time.sleep(settings.poll_s)
                current = poll(sweep_dir, executor=executor)
                live.update(_watch_view(current, title, devices))
    else:
        console.print(status_table(current, title, devices))
    for line in problems(current):
        console.print(line)
    if current.counts[ledger.PLANNED]:
        console.print(f"  {current.counts[ledger.PLANNED]} runs were never launched: "
                      "`flame launch` submits them")
    _warn(str(r.error) for r in current.runs if r.state == ledger.CORRUPT)
    for line in executor.notes(sweep_dir):  # e.g. arrays a killed launcher left held
        console.print(f"  {line}")
    if watch and current.stalled:  # it would have waited forever: say so, and fail
        return 1
    if getattr(args, "report", False):
        from jobs.study import write_report_or_say_why
        if (page := write_report_or_say_why(sweep_dir, console)) is None:
            return 1
        console.print(f"report: {page}")
    return 0


def _nothing_to_wait_for(current: SweepStatus) -> bool:
    """Nothing queued or running, yet not all finished: runs were never launched."""
    return not current.all_terminal and not any(current.counts[s] for s in ledger.ACTIVE)


def _warn(lines: Iterable[str]) -> None:
    """One line each on stderr (unreadable state.json files, arrays left held): the command
    itself went on with the other runs."""
    for line in lines:
        print(f"flame: warning: {line}", file=sys.stderr)


def _watch_view(current: SweepStatus, title: str, devices: int) -> Group:
    """The status table over a progress bar of finished (terminal) runs."""
    bar = ProgressBar(total=max(current.total, 1), completed=current.terminal, width=60)
    return Group(status_table(current, title, devices), Columns(
        [bar, f"{current.terminal}/{current.total} finished ({current.summary()})"]))


def cancel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_ids", nargs="*", help="runs to cancel")
    parser.add_argument("--all", action="store_true", help="every queued or running run")


def cancel(cfg: DictConfig, args: argparse.Namespace) -> int:
    """Mark runs cancelled, then scancel their jobs (local: stop the worker training each).

    ``--all`` cancels what was launched (queued or running); runs never launched stay
    ``planned`` (a later ``flame launch`` starts them). A run named explicitly is cancelled
    even if never launched: launch then skips it until ``flame resubmit RUN_ID``."""
    sweep_dir = Path(cfg.sweep_dir).resolve()
    executor = command_executor(cfg)
    chosen = _chosen(sweep_dir, list(args.run_ids), bool(args.all), "--all")
    executor.check()  # before any ledger change: a failure changes nothing
    records, corrupt = ledger.scan(sweep_dir)
    state = {rid: ledger.state_of(records, rid) for rid in chosen}
    unreadable = [rid for rid in chosen if rid in corrupt]  # never overwritten: named below
    never = [rid for rid in chosen if args.all and rid not in corrupt
             and state[rid] == ledger.PLANNED]
    ids = [rid for rid in chosen if rid not in corrupt and rid not in never]
    jobs, done = [], []
    for run_id in ids:
        rec = ledger.transition(sweep_dir, run_id, ledger.CANCELLED,
                                error_tail="cancelled by `flame cancel`")
        if rec is not None:
            done.append(run_id)
            jobs.append((run_id, rec.last_job_id))
    jobs += _cancel_branches(sweep_dir, done)
    executor.cancel(sweep_dir, [(rid, job) for rid, text in jobs
                                if (job := JobId.parse(text)) is not None])
    print(f"cancelled {len(done)} runs; {len(ids) - len(done)} were already finished"
          + (f"; {len(never)} never launched stay planned (`flame launch` starts them)"
             if never else ""))
    _warn(str(corrupt[rid]) for rid in unreadable)
    return 0


def _cancel_branches(sweep_dir: Path, cancelled: list[str]) -> list[tuple[str, str | None]]:
    """The queued branches of the trunks just cancelled can never start (they wait for a
    checkpoint the trunk will not write): cancelled too, one line per trunk saying so (and
    that ``flame resubmit <trunk>`` brings them back). Branches already training have their
    checkpoint and go on. Returns (run id, job id) of those cancelled now, for scancel."""
    rows = plan_rows(sweep_dir)
    records = ledger.read_all(sweep_dir)
    blocked = waits(sweep_dir, rows, records)
    jobs = []
    for trunk, branches in branches_of(rows, cancelled).items():
        waiting = [rid for rid in branches if rid in blocked
                   and ledger.state_of(records, rid) == ledger.SUBMITTED]
        moved = [rec for rid in waiting if (rec := ledger.transition(
            sweep_dir, rid, ledger.CANCELLED, error_tail=f"{WITH_TRUNK} {trunk}"))]
        jobs += [(rec.run_id, rec.last_job_id) for rec in moved]
        going = sum(ledger.state_of(records, rid) == ledger.RUNNING for rid in branches)
        if moved or going:
            print(f"trunk {trunk}: {len(moved)} waiting branches cancelled with it (`flame "
                  f"resubmit {trunk}` brings them back)"
                  + (f"; {going} running branches go on" if going else ""))
    return jobs


def _chosen(sweep_dir: Path, ids: list[str], every: bool, flag: str) -> list[str]:
    known = [r.run_id for r in plan_rows(sweep_dir)]
    if every:
        return known
    if not ids:
        raise ConfigError(f"name the runs (run ids from `flame status`) or pass {flag}")
    unknown = sorted(set(ids) - set(known))
    if unknown:
        raise ConfigError(f"run ids {unknown} are not in {sweep_dir}/plan.csv; "
                          "`flame status` lists them")
    return ids


def resubmit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_ids", nargs="*", help="runs to submit again (failed, timeout or "
                                                   "cancelled)")
    parser.add_argument("--failed", action="store_true",
                        help="every failed or timed-out run")


def resubmit(cfg: DictConfig, args: argparse.Namespace) -> int:
    """Reset failed/timed-out (or named cancelled) runs to planned and launch them. A run
    resumes from its checkpoint if it has one. A trunk brings along its branches that wait for
    it (their old jobs, pending on the failed one, are cancelled first), that were cancelled
    with it, or that failed for want of its checkpoint."""
    sweep_dir = Path(cfg.sweep_dir).resolve()
    rows = plan_rows(sweep_dir)  # a plan.csv jobs/ cannot use fails here, before any reset
    records, corrupt = ledger.scan(sweep_dir)
    if args.failed:
        _warn(str(err) for _, err in sorted(corrupt.items()))
        ids = [rid for rid, rec in records.items()
               if rec.state in (ledger.FAILED, ledger.TIMEOUT)]
        allowed = frozenset({ledger.FAILED, ledger.TIMEOUT})
    else:
        ids = _chosen(sweep_dir, list(args.run_ids), False, "--failed")
        allowed = frozenset({ledger.FAILED, ledger.TIMEOUT, ledger.CANCELLED})
    plan = resubmit_set(sweep_dir, rows, records, ids, named=not args.failed)
    for line in plan.notes:
        print(f"flame: {line}", file=sys.stderr)
    settings = launch_settings(sweep_dir, cfg, list(getattr(args, "overrides", None) or []))
    executor = executor_for(ClusterSettings.from_cfg({"cluster": settings.cluster}))
    if plan.along:
        executor.check()
    with launcher_lock(sweep_dir):  # no launcher may see a half-reset sweep
        # their queued jobs wait for a trunk job that failed: never started, dropped first
        executor.withdraw(sweep_dir, plan.along)
        reset = [rid for rid in plan.chosen if ledger.reset(sweep_dir, rid, allowed)]
        along = [rid for rid in plan.along if ledger.reset(sweep_dir, rid, ALONG)]
    if not reset + along:
        print("nothing to resubmit")
        return 0
    print(f"reset {len(reset)} runs to planned"
          + (f", and {len(along)} branches of their trunks" if along else ""))
    return launch(cfg, argparse.Namespace(dry_run=False), executor, settings)


ALONG = frozenset({ledger.SUBMITTED, ledger.FAILED, ledger.CANCELLED})
"""States a branch resubmitted with its trunk is reset from (``Resubmit.along``)."""

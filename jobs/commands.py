"""``flame launch | status | cancel | resubmit``: thin CLI wrappers over jobs.launch/status."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.columns import Columns
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar

from jobs import ledger, slurm
from jobs.launch import ensure_local_workers, launch_sweep, launcher_lock, unreleased_arrays
from jobs.settings import ClusterSettings
from jobs.status import PlainLine, SweepStatus, poll, problems, status_table
from sweep.config import read_plan
from jobs.task import pid_alive
from sweep.arch import ConfigError


def _console() -> Console:
    return Console(width=None if Console().is_terminal else 150)


def launch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="write the sbatch/launch files under <sweep_dir>/jobs/dry-run/, "
                             "submit nothing")


def launch(cfg: DictConfig, args: argparse.Namespace) -> int:
    """Submit the plan's runs that are not queued, running or finished; return at once."""
    sweep_dir = Path(cfg.sweep_dir)
    report = launch_sweep(sweep_dir, cfg, dry_run=bool(getattr(args, "dry_run", False)))
    console = _console()
    if report.recovered:
        console.print(f"recovered {len(report.recovered)} runs a killed launcher had submitted")
    verb = "would submit" if report.dry_run else "submitted"
    console.print(f"{verb} {len(report.submitted)} runs ({cfg.cluster.name}), skipped "
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


def status(cfg: DictConfig, args: argparse.Namespace) -> int:
    """One table of runs by state (one sacct call); ``--watch`` refreshes until all are done."""
    sweep_dir = Path(cfg.sweep_dir).resolve()
    settings = ClusterSettings.from_cfg(cfg)
    devices = max(1, settings.gpus_per_node)
    title = f"{sweep_dir.name} ({settings.name})"
    console = _console()
    current = poll(sweep_dir, cfg)
    if getattr(args, "watch", False) and not console.is_terminal:
        # A file or pipe: a live view would print nothing until the end; plain lines instead.
        line, started = PlainLine(), time.monotonic()
        while True:
            line.maybe_print(console, current, time.monotonic() - started)
            if current.all_terminal:
                break
            time.sleep(settings.poll_s)
            current = poll(sweep_dir, cfg)
        console.print(status_table(current, title, devices))
    elif getattr(args, "watch", False):
        with Live(_watch_view(current, title, devices), console=console,
                  refresh_per_second=2) as live:
            while not current.all_terminal:
                time.sleep(settings.poll_s)
                current = poll(sweep_dir, cfg)
                live.update(_watch_view(current, title, devices))
    else:
        console.print(status_table(current, title, devices))
    for line in problems(current):
        console.print(line)
    held = unreleased_arrays(sweep_dir)
    if held:
        console.print(f"  {len(held)} arrays were left held by a killed launcher: "
                      "`flame launch` records and releases them")
    return 0


def _watch_view(current: SweepStatus, title: str, devices: int) -> Group:
    """The status table over a progress bar of finished (terminal) runs."""
    bar = ProgressBar(total=max(current.total, 1), completed=current.terminal, width=60)
    return Group(status_table(current, title, devices), Columns(
        [bar, f"{current.terminal}/{current.total} finished ({current.summary()})"]))


def cancel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_ids", nargs="*", help="runs to cancel")
    parser.add_argument("--all", action="store_true", help="every queued or running run")


def cancel(cfg: DictConfig, args: argparse.Namespace) -> int:
    """Mark runs cancelled, then scancel their jobs (local: stop their worker)."""
    sweep_dir = Path(cfg.sweep_dir).resolve()
    settings = ClusterSettings.from_cfg(cfg)
    ids = _chosen(sweep_dir, list(args.run_ids), bool(args.all), "--all")
    jobs, done = [], []
    for run_id in ids:
        rec = ledger.transition(sweep_dir, run_id, ledger.CANCELLED,
                                error_tail="cancelled by `flame cancel`")
        if rec is not None:
            done.append(run_id)
            if rec["job_ids"] and rec["state"] == ledger.CANCELLED:
                jobs.append(rec["job_ids"][-1])
    if settings.executor == "slurm":
        slurm.ensure_client(settings)
        slurm.scancel(j for j in jobs if not j.startswith("local-"))
    else:
        _stop_local(jobs)
        ensure_local_workers(sweep_dir, settings)  # the other queued runs go on
    print(f"cancelled {len(done)} runs; {len(ids) - len(done)} were already finished")
    return 0


def _stop_local(job_ids: list[str]) -> None:
    """SIGINT the local workers' controllers: submitit stops their task (the run)."""
    import os
    import signal
    for job_id in job_ids:
        pid = job_id.removeprefix("local-")
        if pid.isdigit() and pid_alive(int(pid)):
            os.kill(int(pid), signal.SIGINT)


def _chosen(sweep_dir: Path, ids: list[str], every: bool, flag: str) -> list[str]:
    known = [r.run_id for r in read_plan(sweep_dir)]
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
    resumes from its checkpoint if it has one."""
    sweep_dir = Path(cfg.sweep_dir).resolve()
    if args.failed:
        records = ledger.read_all(sweep_dir)
        ids = [rid for rid, rec in records.items()
               if rec["state"] in (ledger.FAILED, ledger.TIMEOUT)]
        allowed = frozenset({ledger.FAILED, ledger.TIMEOUT})
    else:
        ids = _chosen(sweep_dir, list(args.run_ids), False, "--failed")
        allowed = frozenset({ledger.FAILED, ledger.TIMEOUT, ledger.CANCELLED})
    with launcher_lock(sweep_dir):  # no launcher may see a half-reset sweep
        reset = [rid for rid in ids if ledger.reset(sweep_dir, rid, allowed)]
    if not reset:
        print("nothing to resubmit")
        return 0
    print(f"reset {len(reset)} runs to planned")
    return launch(cfg, argparse.Namespace(dry_run=False))

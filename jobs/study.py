"""``flame run``: the whole isoFLOP study, plan -> launch -> wait -> collect -> fit -> select.

Every stage reads and writes the sweep directory, so running it again continues where it
stopped: the plan is recomputed (byte-identical for the same config), launch skips runs that are
completed, queued or running, and collection and fitting are cheap enough to redo.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig
from rich.console import Console

from conf.study import study_config
from jobs.executors.base import Executor
from jobs.executors.registry import executor_for
from jobs.settings import ClusterSettings
from sweep.commands import plan as plan_command
from sweep.commands import plan_arguments
from sweep.errors import ConfigError
from sweep.io import FIGURES_DIR, FIT_JSON, PLAN_CSV, RESULTS_CSV, SELECTION_CSV

if TYPE_CHECKING:  # imported where used: status pulls the scheduler clients in
    from jobs.status import SweepStatus


def run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true",
                        help="submit and return (the default for clusters with cluster.wait="
                             "false); a later `flame run` collects and fits once runs are done")
    plan_arguments(parser)


def launch_and_wait(sweep_dir: Path, cfg: DictConfig, executor: Executor,
                    args: argparse.Namespace, console: Console) -> SweepStatus:
    """Submit what is not done or in flight, say how many, then wait for every run (unless
    ``cluster.wait`` is false or ``--no-wait``) or poll once; returns the runs' status."""
    from jobs.launch import launch_sweep
    from jobs.status import poll, wait_until_terminal

    report = launch_sweep(sweep_dir, cfg, executor=executor)
    console.print(f"launch: {len(report.submitted)} runs submitted, "
                  f"{len(report.skipped)} already done or in flight")
    wait = executor.cluster.wait and not getattr(args, "no_wait", False)
    return (wait_until_terminal(sweep_dir, console=console, executor=executor) if wait
            else poll(sweep_dir, executor=executor))


def run(cfg: DictConfig, args: argparse.Namespace) -> int:
    """Run (or continue) the study of ``cfg`` in ``cfg.sweep_dir``."""
    from jobs.status import wait_lines

    console = Console(width=None if Console().is_terminal else 120)
    sweep_dir = Path(cfg.sweep_dir)
    started = time.monotonic()
    console.rule(f"flame run: {cfg.experiment_name} -> {sweep_dir}")
    executor: Executor = executor_for(ClusterSettings.from_cfg(cfg))  # once, passed down
    executor.check()  # a scheduler that cannot take the jobs: before planning
    if cfg.get("planner", {}).get("adaptive", False):  # waves re-centred on the refitted law
        from jobs.adaptive import BLOCKED, DONE, run_waves
        state = run_waves(sweep_dir, cfg, args, console, executor)
        return finish(sweep_dir, cfg, console, started) if state == DONE else \
            int(state == BLOCKED)
    plan_command(study_config(cfg), args)
    status = launch_and_wait(sweep_dir, cfg, executor, args, console)
    if not status.all_terminal:
        console.print(f"{status.summary()}\nruns are still queued or running on "
                      f"{cfg.cluster.name}; follow them with `flame status --watch "
                      f"sweep_dir={sweep_dir}` and run this command again to collect and fit.")
        return 0
    for line in wait_lines(status):  # branches whose trunk failed: fitted without them
        console.print(line, markup=False, highlight=False)
    return finish(sweep_dir, cfg, console, started)


def finish(sweep_dir: Path, cfg: DictConfig, console: Console, started: float) -> int:
    """Collect, fit, select, plot; print the summary and where everything is."""
    from analysis.collect import collect_sweep, cost_line
    from analysis.fit import fit_sweep, summary_text

    results = collect_sweep(sweep_dir, cfg)
    ok = int((results["flag"] == "ok").sum()) if "flag" in results else len(results)
    console.print(f"collect: {len(results)} runs, {ok} usable -> {sweep_dir / RESULTS_CSV}")
    if (line := cost_line(results)) is not None:  # Megatron: planned vs spent GPU-hours
        console.print(line)
    try:
        fit = fit_sweep(sweep_dir, cfg)
    except ConfigError:  # nothing fittable: the report still shows the runs and why
        if (page := write_report_or_say_why(sweep_dir, console)) is not None:
            console.print(f"report (no fit): {page}")
        raise
    print(summary_text(fit, width=console.width))
    console.rule("outputs")
    for name in (PLAN_CSV, RESULTS_CSV, FIT_JSON, SELECTION_CSV, FIGURES_DIR):
        console.print(f"  {sweep_dir / name}")
    if (page := write_report_or_say_why(sweep_dir, console)) is not None:
        console.print(f"  {page}  (the report: open it in a browser)")
    console.print(f"study finished in {time.monotonic() - started:.0f} s")
    return 0


def write_report_or_say_why(sweep_dir: Path, console: Console) -> Path | None:
    """Write report.html; a page that cannot be rendered costs one line, never the finished
    study (its results, fit and figures are written already)."""
    from analysis.report import write_report

    try:
        return write_report(sweep_dir)
    except Exception as err:  # noqa: BLE001 - any report bug: the study's outcome stands
        console.print(f"report: not written: {type(err).__name__}: {err}".splitlines()[0],
                      markup=False, highlight=False, soft_wrap=True)
        return None

"""``flame plan``: write the study's plan and show it."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sweep.config import change_line, plan_study, read_config, read_plan, write_plan_text
from sweep.errors import ConfigError
from sweep.io import ADAPTIVE_DIR, DISK_FULL_ERRNOS, PLAN_CSV, run_dir
from sweep.planner import Plan, PlannerSettings
from sweep.records import ACTIVE, scan_records


def plan_arguments(parser: argparse.ArgumentParser) -> None:
    """``flame plan``'s own flag."""
    parser.add_argument("--replan", action="store_true",
                        help="replace the plan of a sweep that was already launched (the old "
                             "plan and config are kept under <sweep_dir>/history/)")


def plan(study: Any, args: argparse.Namespace | None = None) -> int:
    """Plan the typed config ``study`` (``conf.study.StudyConfig``, which the CLI builds) into
    its ``sweep_dir``; print the table and removals."""
    if not hasattr(study, "root"):
        raise TypeError("plan takes the typed config: conf.study.study_config(cfg)")
    sweep_dir = check_sweep_dir(study.root.sweep_dir)
    the_plan, settings = plan_study(study)  # raises ConfigError before anything is written
    notes = study.check_plan(the_plan, settings)  # e.g. branches past one epoch: refused
    previous = _previous_ids(sweep_dir)
    if previous is not None:
        guard_adaptive(sweep_dir, previous, {r.run_id for r in the_plan.runs})
        guard_replan(sweep_dir, previous, {r.run_id for r in the_plan.runs},
                     bool(getattr(args, "replan", False)), lambda: replan_changes(sweep_dir, study))
    write_plan_text(sweep_dir, the_plan, settings, study.to_yaml())
    console = Console(width=None if Console().is_terminal else 150)
    console.print(plan_table(the_plan, settings, study.root.experiment_name))
    if any(r.role for r in the_plan.runs):
        console.print(branch_summary(the_plan))
    for r in the_plan.removed:
        console.print(f"  removed {r.member} at C={r.budget:.3g}: {r.constraint} ({r.detail})")
    if line := corpus_line(the_plan, study.trainer):
        console.print(line)
    for note in notes:
        console.print(f"  note: {note}")
    if previous is not None:
        now = {r.run_id for r in the_plan.runs}
        console.print(f"  vs. the previous plan: {len(now - previous)} new runs, "
                      f"{len(previous - now)} no longer planned")
    console.print(f"wrote {sweep_dir / PLAN_CSV}")
    return 0


def corpus_line(the_plan: Plan, trainer: Any) -> str | None:
    """How many tokens the corpus must hold: the largest run's, which it reads once without
    repeating (past an epoch Megatron's GPTDataset repeats the data), over the train split's
    share of the documents (the trainer's ``split``, e.g. Megatron's 90,5,5)."""
    if not the_plan.runs:
        return None
    largest = max(the_plan.runs, key=lambda r: r.tokens)
    split = getattr(trainer, "split", None) or getattr(getattr(trainer, "data", None), "split",
                                                       None)
    if getattr(trainer, "mock_data", False):
        split = None
    text = f"corpus: the largest run ({largest.run_id}) reads {largest.tokens / 1e9:.4g}B tokens"
    try:
        weights = [float(w) for w in str(split).split(",")] if split else []
    except ValueError:
        weights = []
    if len(weights) == 3 and sum(weights) > 0:
        share = weights[0] / sum(weights)
        text += (f"; with the split {split} (train {share:.0%} of the documents) the corpus "
                 f"must hold at least {largest.tokens / share / 1e9:.4g}B tokens")
    return text + " to train it without repeating data"


def guard_adaptive(sweep_dir: Path, previous: set[str], now: set[str]) -> None:
    """An adaptive study's plan is the union of its waves' decisions (``adaptive/``): a static
    plan must not replace it (``--replan`` would orphan the decisions too)."""
    if previous != now and any((sweep_dir / ADAPTIVE_DIR).glob("decision_*.json")):
        raise ConfigError(f"sweep_dir={sweep_dir} is an adaptive study: its plan grows wave by "
                          "wave from the decisions under adaptive/, and a static plan would "
                          f"replace it; continue it with `flame run sweep_dir={sweep_dir}` "
                          "(planner.adaptive=true), or plan into a new sweep_dir")


def check_sweep_dir(value: object) -> Path:
    """``sweep_dir`` as a usable directory path, or a ConfigError saying what to give."""
    if value is None or not str(value).strip():
        raise ConfigError("sweep_dir: empty; give the study's directory, e.g. "
                          "sweep_dir=out/my_study")
    path = Path(str(value))
    if path.exists() and not path.is_dir():
        raise ConfigError(f"sweep_dir={path}: is a file, not a directory; give another path")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    try:  # os.access says yes to root everywhere; only a real try tells (/proc, read-only)
        os.rmdir(tempfile.mkdtemp(prefix=".flame-write-test-", dir=existing))
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS:  # the right folder, full: the write that needs the
            return path                    # space says so, naming its file (sweep.io.DiskFull)
        raise ConfigError(f"sweep_dir={path}: cannot create files in {existing} "
                          f"({err.strerror}); choose a directory you can write to") from None
    return path


def replan_changes(sweep_dir: Path, study: Any) -> str:
    """The keys by which ``study`` (typed) differs from the sweep's config.yaml, results first
    (``sweep.config.change_line``); "" when config.yaml is unreadable."""
    try:
        old = read_config(sweep_dir)
    except ConfigError:
        return ""
    return change_line(old, study.to_data(), study) if old is not None else ""


def guard_replan(sweep_dir: Path, previous: set[str], now: set[str], replan: bool,
                 changes: Callable[[], str] = str) -> None:
    """A launched sweep's plan changes only on purpose (``--replan``), and never under runs in
    flight: their results would belong to no plan. ``changes``: the changed keys, named in
    the refusal."""
    if previous == now:
        return
    launched = {rid for rid in previous if run_dir(sweep_dir, rid).is_dir()}
    if not launched:
        return
    states = scan_records(sweep_dir)[0]  # unreadable entries are left out, as before
    in_flight = sorted(rid for rid in previous - now
                       if rid in states and states[rid].state in ACTIVE)
    change = f"{len(now - previous)} new runs, {len(previous - now)} no longer planned"
    if not replan:
        keys = changes()
        change += f"; changed: {keys}" if keys else ""
        raise ConfigError(f"sweep_dir={sweep_dir} was launched ({len(launched)} runs started) and "
                          f"this config changes its plan ({change}); pass --replan to replace "
                          "the plan (the old plan and config are kept under history/, completed "
                          "runs stay in results.csv), or use a new sweep_dir")
    if in_flight:
        raise ConfigError(f"sweep_dir={sweep_dir}: {len(in_flight)} runs that the new plan drops "
                          f"are still queued or running (e.g. {in_flight[0]}); wait for them or "
                          f"`flame cancel --all sweep_dir={sweep_dir}` first, then --replan")


def _previous_ids(sweep_dir: Path) -> set[str] | None:
    if not (sweep_dir / PLAN_CSV).exists():
        return None
    return {row.run_id for row in read_plan(sweep_dir)}


def plan_table(the_plan: Plan, settings: PlannerSettings, experiment: str) -> Table:
    n_col = f"N active ({settings.accounting})"
    table = Table(title=f"plan: {experiment} ({len(the_plan.runs)} runs)",
                  show_footer=True)
    total_flops = sum(r.own_flops for r in the_plan.runs)  # a shared trunk counted once
    total_hours = sum(r.gpu_hours for r in the_plan.runs)
    branches = any(r.role for r in the_plan.runs)
    columns = [("run_id", f"{len(the_plan.runs)} runs"), ("budget", f"{total_flops:.3g} FLOPs"),
               ("arch", ""), (n_col, ""), ("N total", ""), ("tokens", ""), ("iters", ""),
               ("tok/param", ""), ("GPU-h", f"{total_hours:,.1f}")]
    if branches:
        columns[1:1] = [("role", ""), ("from", "")]
    for header, footer in columns:
        table.add_column(header, footer=footer, justify="left" if header == "run_id" else "right")
    from sweep.accounting import param_counts
    for r in the_plan.runs:
        total = param_counts(r.member.arch, settings.accounting).total
        cells = [r.run_id, f"{r.budget:.3g}", r.member.name, _human(r.n_active),
                 _human(total), _human(r.tokens), str(r.train_iters),
                 f"{r.tokens / r.n_active:.1f}", f"{r.gpu_hours:,.2f}"]
        if branches:
            cells[1:1] = [r.role, f"{r.parent} @{r.branch_step}" if r.parent else ""]
        table.add_row(*cells)
    return table


def branch_summary(the_plan: Plan) -> str:
    """What branching saves: the FLOPs trained (each trunk once, each branch its cooldown)
    against the same runs trained independently (each branch's full length)."""
    runs = the_plan.runs
    trunks = [r for r in runs if r.role == "trunk"]
    kept = [r for r in runs if r.role != "trunk"]
    own, independent = sum(r.own_flops for r in runs), sum(r.flops for r in kept)
    return (f"  branches: {len(trunks)} trunks + {len(kept)} branches train {own:.3g} FLOPs "
            f"(trunks counted once) vs {independent:.3g} for the same {len(kept)} runs trained "
            f"independently: {own / independent:.0%} of it ({1 - own / independent:.0%} saved)")


def _human(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"

"""``flame collect``: every run of the plan -> one row of ``<sweep>/results.csv``.

Sources, in order of precedence: metrics.jsonl (full precision, written by our trainers),
train.log (Megatron's text, 7 significant digits), TensorBoard events (Megatron's
``--tensorboard-dir``). The first source holding a final evaluation wins and later ones are
not read (a completed sweep reads one file per run); otherwise the source that got furthest
(highest evaluated iteration) wins, ties going to the earlier one. NaNs in any read source
count. A run's losses, routing and speed come from one read of its files: each of
metrics.jsonl, train.log and its event files is parsed at most once per run
(``trainers.readers.reading``). Flags, first match wins:

- ``missing``: no run directory, or no validation loss in any source;
- ``nan``: a NaN/inf validation or training loss;
- ``diverged``: final validation loss above ``(1 + fit.diverge_rise)`` x its best (a loss
  that blew up after having been lower; an absolute threshold such as ln(vocab) would flag
  every run of the simulated trainer's laws on small vocabularies);
- ``incomplete``: the ledger does not say completed, fewer iterations than planned, or no final
  evaluation;
- ``unplanned``: a run of an earlier plan of this sweep (``history/*/plan.csv``) that the
  current plan no longer has: kept in results.csv, never lost to a re-plan, but not fitted by
  default (it was trained under another config);
- ``ok``.

Routing health (``analysis.collect.routing``) adds the ``routing_*`` columns to every row and writes
``routing.csv`` (per run and MoE layer) when any run reports routing; a collapsed router is
``routing_status=collapsed``, never a flag (the loss is real; see analysis/routing.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.collect.routing import ROUTING_COLUMNS, ROUTING_CSV, health, layer_rows
from analysis.config import read_config
from analysis.csvsafe import write_csv
from analysis.downstream.results import accuracy_columns
from analysis.settings import FitSettings
from analysis.sources import (
    PROVENANCE_COLUMNS,
    Evidence,
    Routing,
    evidence_readers,
    finite,
    read_provenance,
    read_routing,
    read_state,
    read_throughput,
)
from sweep.config import history_plans
from sweep.errors import ConfigError
from sweep.io import PLAN_CSV, RESULTS_CSV, run_dir
from trainers.readers import reading
from trainers.registry import trainer_for
from trainers.settings import trainer_config

# plan.csv's branch columns (sweep/planrow.py), with an independent run's values: results.csv
# carries them whatever the plan's age (role=trunk rows are listed, never fitted: data.py).
BRANCH_COLUMNS = {"role": "", "parent": "", "branch_step": 0}
RESULT_COLUMNS = ("status", "final_val_loss", "best_val_loss", "tokens_seen", "iterations_done",
                  "flag", "reason", "source", "mfu", "gpu_hours_spent")


@dataclass(frozen=True)
class RunResult:
    """What collect concludes about one run."""

    status: str
    """The ledger's state (planned when there is no state.json)."""
    final_val_loss: float
    """Last (final when marked) validation loss; NaN when none."""
    best_val_loss: float
    """Lowest finite validation loss; NaN when none."""
    tokens_seen: float
    """Tokens consumed so far."""
    iterations_done: int
    """Highest iteration any chosen source reports."""
    flag: str
    """ok | diverged | nan | incomplete | missing."""
    reason: str
    """Why the flag (empty for ok)."""
    source: str
    """Which file the losses came from."""
    mfu: float = math.nan
    """Megatron runs: model FLOPs utilisation, Megatron's own TFLOP/s/GPU (time-weighted mean
    of its training lines) over the cluster's device_peak_flops (config.yaml); else NaN."""
    gpu_hours_spent: float = math.nan
    """Megatron runs: GPUs x the iterations' wall time from Megatron's ``elapsed time per
    iteration`` (training steps only: start-up, evaluation, checkpoints excluded); else NaN."""


def read_csv(path: Path, what: str) -> pd.DataFrame:
    """A CSV as a DataFrame, or a ConfigError saying what is wrong with the file."""
    if path.is_dir():
        raise ConfigError(f"{what}: {path} is a directory, not a CSV file; pass the file "
                          f"itself, e.g. {what}={path / RESULTS_CSV}")
    if not path.is_file():
        raise ConfigError(f"{what}: {path} does not exist; run the step that writes it first "
                          "(`flame collect` writes results.csv) or fix the path")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what}: {path} is not a readable CSV ({err})") from None


def collect_sweep(sweep_dir: Path, cfg: Any = None) -> pd.DataFrame:
    """Collect every planned run; write ``<sweep_dir>/results.csv`` atomically; return it."""
    sweep_dir = Path(sweep_dir)
    plan_path = sweep_dir / PLAN_CSV
    if not plan_path.is_file():
        raise ConfigError(f"sweep_dir={sweep_dir}: no {PLAN_CSV}; run `flame plan "
                          f"sweep_dir={sweep_dir}` first")
    plan = read_csv(plan_path, "plan")
    if "run_id" not in plan.columns:
        raise ConfigError(f"{plan_path}: no run_id column; re-create it with `flame plan`")
    plan["run_id"] = plan["run_id"].astype(str)
    for col, default in BRANCH_COLUMNS.items():  # a plan.csv older than planner.strategy
        if col not in plan.columns:
            plan[col] = default
    fit_cfg = cfg.get("fit") if cfg is not None else None
    settings = FitSettings.from_mapping(fit_cfg) if fit_cfg is not None else FitSettings()
    rise = settings.diverge_rise
    earlier = _earlier_runs(sweep_dir, set(plan["run_id"]))
    config = read_config(sweep_dir)
    trainer = trainer_config(config.get("trainer") or {}) if config else None
    gpus, peak = _megatron_shape(trainer, ((config or {}).get("cluster") or {})
                                 .get("device_peak_flops"))
    # plan rows as plain mappings (a plan.csv of any age: columns it lacks read as absent)
    reads = [read_run(sweep_dir, row, rise, trainer, (gpus, peak))
             for row in plan.to_dict(orient="records")]
    reads += [read_run(sweep_dir, row, rise, trainer, unplanned=source)
              for row, source in earlier]
    results = pd.concat([plan, pd.DataFrame([row for row, _ in earlier], columns=plan.columns)],
                        ignore_index=True) if earlier else plan.copy()
    for col in RESULT_COLUMNS:
        results[col] = [getattr(r, col) for r, _ in reads]
    _add_routing(sweep_dir, results, settings, [routing for _, routing in reads])
    provenance = [read_provenance(run_dir(sweep_dir, rid)) for rid in results["run_id"]]
    for col in PROVENANCE_COLUMNS:  # what each run's numbers came from (summary.json)
        results[col] = [p[col] for p in provenance]
    accuracy = accuracy_columns(sweep_dir, [str(r) for r in results["run_id"]])  # flame eval
    for col in accuracy.columns:
        results[col] = accuracy[col].to_numpy()
    write_csv(sweep_dir / RESULTS_CSV, results)
    return results


def read_run(sweep_dir: Path, row: dict, rise: float, trainer: Any,
             cost: tuple[int | None, float | None] = (None, None),
             unplanned: str | None = None) -> tuple[RunResult, Routing | None]:
    """One run's result (with its cost: GPUs per run and peak FLOP/s; or flagged unplanned,
    ``unplanned`` naming the plan it came from) and its routing as its trainer reports it
    (``trainer``: its config; None without config.yaml, nothing is read). Each of the run's
    files is parsed once for all of it (``trainers.readers.reading``)."""
    path = run_dir(sweep_dir, row.get("run_id"))
    with reading(path):
        result = collect_run(path, row, rise)
        result = _unplanned(result, unplanned) if unplanned else _with_cost(result, path, *cost)
        return result, read_routing(path, trainer)


def _add_routing(sweep_dir: Path, results: pd.DataFrame, settings: FitSettings,
                 routings: list[Routing | None]) -> None:
    """The ``routing_*`` columns of every row (``routings``: each row's run's, in order);
    routing.csv when any run reports routing."""
    columns, layers = [], []
    for run_id, routing in zip(results["run_id"], routings):
        columns.append(health(routing, settings))
        layers += layer_rows(run_id, routing)
    for col in ROUTING_COLUMNS:
        results[col] = [c[col] for c in columns]
    if layers:
        write_csv(sweep_dir / ROUTING_CSV, pd.DataFrame(layers))


def _megatron_shape(trainer: Any, peak: float | None) -> tuple[int | None, float | None]:
    """(GPUs per run, device peak FLOP/s: config.yaml's cluster.device_peak_flops) when the
    trainer decides its job shape (Megatron: the only built-in that reports its own
    throughput); else (None, None)."""
    shape = trainer_for(trainer).job_shape(trainer) if trainer is not None else None
    if shape is None:
        return None, None
    return shape.nodes * shape.gpus_per_node, peak


def _with_cost(result: RunResult, path: Path, gpus: int | None,
               peak: float | None) -> RunResult:
    """MFU and GPU-hours from Megatron's own training lines (NaN for other trainers)."""
    if gpus is None:
        return result
    speed = read_throughput(path)
    if not speed.step_seconds:
        return result
    mfu = speed.tflops_per_gpu * 1e12 / peak if peak and speed.tflops_per_gpu else math.nan
    return RunResult(**{**result.__dict__, "mfu": mfu,
                        "gpu_hours_spent": speed.step_seconds * gpus / 3600.0})


def cost_line(results: pd.DataFrame) -> str | None:
    """Planned (plan.csv's estimate) vs spent GPU-hours, over the runs that report spending."""
    if "gpu_hours_spent" not in results or results["gpu_hours_spent"].isna().all():
        return None
    spent = results.dropna(subset=["gpu_hours_spent"])
    planned = pd.to_numeric(spent.get("gpu_hours"), errors="coerce").sum()
    mfu = spent["mfu"].dropna()
    return (f"GPU-hours: {spent['gpu_hours_spent'].sum():,.3g} spent in training steps by "
            f"{len(spent)} runs, {planned:,.3g} planned for them (plan.csv gpu_hours)"
            + (f"; MFU {mfu.min():.1%}-{mfu.max():.1%}" if len(mfu) else ""))


def _earlier_runs(sweep_dir: Path, current: set[str]) -> list[tuple[dict, str]]:
    """Plan rows of runs that earlier plans started and the current plan dropped (newest plan
    first, each run once)."""
    found: dict[str, tuple[dict, str]] = {}
    for path in history_plans(sweep_dir):
        old = read_csv(path, "plan")
        for rec in old.to_dict(orient="records"):
            rid = str(rec.get("run_id"))
            if rid not in current and rid not in found and run_dir(sweep_dir, rid).is_dir():
                found[rid] = (dict(rec, run_id=rid), str(path.relative_to(sweep_dir)))
    return list(found.values())


def _unplanned(result: RunResult, source: str) -> RunResult:
    if result.flag == "missing":
        return result
    reason = f"planned by {source}, not by the current plan"
    return RunResult(**{**result.__dict__, "flag": "unplanned",
                        "reason": f"{reason}; {result.reason}" if result.reason else reason})


def collect_run(path: Path, row: dict, diverge_rise: float = 0.1) -> RunResult:
    """One run's result from its directory and its plan row."""
    status, state_problem = read_state(path)
    if not path.is_dir():
        return _result(status, None, 0, "missing", f"no runs/{path.name}/ directory "
                       "(never launched)")
    planned_iters = _int(row.get("train_iters"))
    seq, batch = _int(row.get("seq_length")), _int(row.get("global_batch_size"))
    evidence, chosen = [], None
    for read in evidence_readers(path, planned_iters, seq):
        ev = read()
        if ev is None:
            continue
        evidence.append(ev)
        if ev.evals and (chosen is None or ev.evals and
                         max(e[0] for e in ev.evals) > max(e[0] for e in chosen.evals)):
            chosen = ev
        if chosen is not None and chosen.has_final:
            break
    iters = max((ev.last_iteration for ev in evidence), default=0)
    if chosen is None:
        found = ", ".join(ev.source for ev in evidence) or "no train.log, metrics.jsonl or " \
                                                           "tensorboard/"
        return _result(status, None, iters, "missing", f"no validation loss ({found}; "
                       f"state={status}{'; ' + state_problem if state_problem else ''})",
                       _tokens(evidence, iters, batch, seq))
    flag, reason = _flag(status, chosen, evidence, iters, planned_iters, diverge_rise)
    if state_problem:
        reason = f"{reason}; {state_problem}" if reason else state_problem
    return _result(status, chosen, iters, flag, reason, _tokens(evidence, iters, batch, seq))


def _flag(status: str, chosen: Evidence, evidence: list[Evidence], iters: int,
          planned_iters: int | None, rise: float) -> tuple[str, str]:
    final_it, final, _ = _final(chosen)
    for ev in evidence:
        bad = [(it, x) for it, x, *_ in ev.evals + ev.train_losses if not math.isfinite(x)]
        if bad:
            return "nan", f"{ev.source}: non-finite loss {bad[0][1]} at iteration {bad[0][0]}"
    best = min(x for _, x, _ in chosen.evals)
    if final > best * (1 + rise):
        return "diverged", (f"final val loss {final:.4g} at iteration {final_it} is "
                            f"{final / best - 1:.0%} above its best {best:.4g}")
    problems = []
    if status != "completed":
        problems.append(f"state={status}")
    if planned_iters and iters < planned_iters:
        problems.append(f"{iters}/{planned_iters} iterations")
    if not chosen.has_final:
        problems.append("no final evaluation")
    if problems:
        return "incomplete", ", ".join(problems)
    return "ok", ""


def _final(ev: Evidence) -> tuple[int, float, bool]:
    finals = [e for e in ev.evals if e[2]]
    return finals[-1] if finals else max(ev.evals, key=lambda e: e[0])


def _tokens(evidence: list[Evidence], iters: int, batch: int | None, seq: int | None) -> float:
    reported = [ev.tokens for ev in evidence if ev.tokens]
    if reported:
        return float(max(reported))
    return float(iters * batch * seq) if batch and seq else math.nan


def _result(status: str, chosen: Evidence | None, iters: int, flag: str, reason: str,
            tokens: float = math.nan) -> RunResult:
    if chosen is None:
        return RunResult(status, math.nan, math.nan, tokens, iters, flag, reason, "")
    finite_vals = [x for _, x, _ in chosen.evals if finite(x)]
    return RunResult(status, _final(chosen)[1], min(finite_vals, default=math.nan), tokens,
                     iters, flag, reason, chosen.source)


def _int(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if np.isfinite(number) else None


def flag_table(results: pd.DataFrame):
    """A rich table: runs per flag, with one example reason each."""
    from rich.table import Table
    table = Table(title="collect: runs by flag", title_justify="left")
    for col in ("flag", "runs", "example reason"):
        table.add_column(col)
    for flag, group in results.groupby("flag", sort=False):
        example = next((r for r in group["reason"] if isinstance(r, str) and r), "")
        table.add_row(str(flag), str(len(group)), example)
    return table

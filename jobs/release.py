"""``flame release``: train what the law picked, and check the law's prediction.

From a fitted sweep (``sweep_dir=S``: its config.yaml, fit.json and selection.csv) it plans one
run per target budget with the member the selection chose there (or members named by hand,
``--member 1e13:L2-h80``), with the sweep's recipe, trainer and cluster, into a sweep directory
of its own, ``S/release/``, linked to the source by ``release.json``. Each run keeps a
checkpoint at every tenth of its training, as FLAME-MoE's released models did. Before anything
trains, the law's prediction of each run's final loss, with its prediction interval by both
approaches (``analysis.fit.prediction``), is written to ``prediction.csv``; then the runs go
through the same launch, ledger, wait and collect as ``flame run`` (so running the command
again continues: finished runs are never trained again), and the check (achieved loss against
the intervals, the pick against its neighbours) is added to the release's results.csv,
printed, and shown by the report of both sweeps.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from analysis.csvsafe import write_csv
from analysis.fit.prediction import law_draws, predict, prediction_columns
from analysis.fit.release_check import (
    PREDICTION_CSV,
    RELEASE_DIR,
    RELEASE_JSON,
    ReleaseLink,
    check_lines,
    file_sha256,
    read_link,
    write_check,
)
from analysis.fit.result import read_fit
from analysis.fit.selection import member_n
from conf.study import StudyConfig, load_sweep_config, plan_from_cfg, study_config, write_plan
from jobs.eval import eval_arguments, eval_command, trainer_of
from jobs.executors.registry import executor_for
from jobs.settings import ClusterSettings
from jobs.sweepdir import data_config, recorded_cluster
from sweep.commands import check_sweep_dir, guard_replan
from sweep.config import read_plan
from sweep.errors import ConfigError
from sweep.family import Member, build_family
from sweep.io import FIT_JSON, PLAN_CSV, RESULTS_CSV, SELECTION_CSV, atomic_write_text
from sweep.planner import Plan
from sweep.schema import literal

OTHERS_PREFIXES = ("acc_",)  # results.csv columns flame eval adds (docs/design.md)
CHECKPOINTS = 10  # kept per release run: one at each tenth of training (FLAME-MoE's release)
ARCH_KEYS = ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size",
             "moe_ffn_hidden_size", "num_experts", "moe_router_topk", "shared_expert_size",
             "first_dense_layers", "vocab_size", "seq_length", "tie_embeddings")


@dataclasses.dataclass(frozen=True)
class Pick:
    """One release run: a family member at a budget."""

    budget: float
    """FLOPs."""
    member: str
    """The family member's name."""
    how: str
    """``selection`` (selection.csv chose it) or ``by hand`` (``--member``)."""


def release_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", action="append", type=float, default=[], metavar="FLOPS",
                        help="release only the selection's pick at this budget (repeat for "
                             "more; default: every budget of selection.csv)")
    parser.add_argument("--member", action="append", default=[], metavar="FLOPS:MEMBER",
                        help="release this family member at this budget, chosen by hand "
                             "(repeat for more; e.g. --member 1e13:L2-h80)")
    parser.add_argument("--no-wait", action="store_true",
                        help="submit and return; run the command again to collect and check")
    parser.add_argument("--replan", action="store_true",
                        help="replace a launched release's plan with other picks")
    parser.add_argument("--eval", action="store_true",
                        help="then evaluate the sweep and the release downstream (`flame "
                             "eval` with its defaults): the loop closed in one command")


def release(cfg: DictConfig, args: argparse.Namespace) -> int:
    """Plan (or continue) the release of ``cfg.sweep_dir``'s picks; train, collect, check."""
    console = Console(width=None if Console().is_terminal else 120)
    started = time.monotonic()
    source = check_sweep_dir(cfg.get("sweep_dir")).resolve()
    config, fit = _source(source)
    picks = choose_picks(source, config, list(args.target), list(args.member))
    if getattr(args, "eval", False):
        trainer_of(source)  # a trainer without a model to score: refused before anything runs
    target = source / RELEASE_DIR
    study = release_study(source, config, picks, _cluster(cfg, args, source, config), target)
    the_plan, settings = plan_from_cfg(study)
    the_plan = with_checkpoints(the_plan)
    previous = {r.run_id for r in read_plan(target)} if (target / PLAN_CSV).is_file() else None
    now = {r.run_id for r in the_plan.runs}
    if previous is not None:
        guard_replan(target, previous, now, bool(getattr(args, "replan", False)))
    run_ids = [_run_of(the_plan, p) for p in picks]  # a pick the planner removed: an error
    fresh = previous != now or read_link(target) is None or \
        not (target / PREDICTION_CSV).is_file()
    predicted = prediction_table(source, the_plan, picks, fit.input.n_column,
                                 _registered(target)) if fresh else None
    # Everything is checked; now write: plan and config, the link, the registered prediction.
    write_plan(target, the_plan, settings, study)
    if predicted is not None:
        link = ReleaseLink(str(source), file_sha256(source / FIT_JSON),
                           file_sha256(source / SELECTION_CSV),
                           str(fit.selection.get("approach", "")),
                           [{"budget": p.budget, "member": p.member, "how": p.how,
                             "run_id": rid} for p, rid in zip(picks, run_ids)])
        write_csv(target / PREDICTION_CSV, predicted)
        atomic_write_text(target / RELEASE_JSON, link.to_json())
    console.rule(f"flame release: {len(picks)} picks of {source.name} -> {target}")
    _note_refit(source, target, console)
    return _train_and_check(target, study, args, console, started)


def _registered(target: Path) -> pd.DataFrame | None:
    """The release's prediction.csv as registered so far (None before the first plan)."""
    path = target / PREDICTION_CSV
    return pd.read_csv(path, dtype={"run_id": str}) if path.is_file() else None


def _source(source: Path) -> tuple[dict[str, Any], Any]:
    """The source sweep's config and fit (a ConfigError naming what is missing)."""
    config = load_sweep_config(source)
    if config is None:
        raise ConfigError(f"sweep_dir={source}: no config.yaml, so no study to release from; "
                          "give the fitted sweep's directory (e.g. sweep_dir=out/demo)")
    if not (source / FIT_JSON).is_file():
        raise ConfigError(f"sweep_dir={source}: no {FIT_JSON}: the sweep has no fit to release "
                          f"from; run `flame fit sweep_dir={source}` (or finish `flame run`) "
                          "first")
    return config, read_fit(source)


def choose_picks(source: Path, config: dict, targets: list[float],
                 by_hand: list[str]) -> list[Pick]:
    """The picks: selection.csv's members at ``targets`` (all its budgets when none is named
    and nothing is named by hand), then the members named by hand."""
    members = {m.name: m for m in build_family(config["family"])}
    picks = [_hand_pick(text, members) for text in by_hand]
    if targets or not picks:
        picks = _selected(source, targets) + picks
    seen: set[tuple[float, str]] = set()
    unique = []
    for pick in picks:
        key = (pick.budget, pick.member)
        if key not in seen:
            seen.add(key)
            unique.append(pick)
    return unique


def _selected(source: Path, targets: list[float]) -> list[Pick]:
    path = source / SELECTION_CSV
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: the fit selected nothing (fit.json's "
                          "selection says why); run `flame fit` with fit.target_budgets, or "
                          "name members by hand with --member FLOPS:MEMBER")
    table = pd.read_csv(path, dtype={"member": str}, keep_default_na=False)
    if targets:
        missing = [t for t in targets if not any(math.isclose(t, b, rel_tol=1e-6)
                                                 for b in table["budget"])]
        if missing:
            raise ConfigError(f"--target {missing[0]:g}: not a budget of {path} "
                              f"({', '.join(f'{b:g}' for b in table['budget'])}); name one of "
                              "them, or the member by hand with --member FLOPS:MEMBER")
        table = table[[any(math.isclose(t, b, rel_tol=1e-6) for t in targets)
                       for b in table["budget"]]]
    empty = table[table["member"].str.strip() == ""]
    if not empty.empty:
        raise ConfigError(f"{path}: no member selected at {float(empty['budget'].iloc[0]):g} "
                          "FLOPs (the fit had no family to choose from); name one by hand "
                          "with --member FLOPS:MEMBER")
    return [Pick(float(b), str(m), "selection") for b, m in zip(table["budget"],
                                                                table["member"])]


def _hand_pick(text: str, members: dict[str, Member]) -> Pick:
    budget, sep, name = text.partition(":")
    try:
        flops = float(budget)
    except ValueError:
        flops = math.nan
    if not sep or not math.isfinite(flops) or flops <= 0 or not name:
        raise ConfigError(f"--member {text}: give FLOPS:MEMBER, e.g. --member 1e13:"
                          f"{next(iter(members))}")
    if name not in members:
        raise ConfigError(f"--member {text}: {name!r} is not a member of the sweep's family "
                          f"({', '.join(members)})")
    return Pick(flops, name, "by hand")


def _cluster(cfg: DictConfig, args: argparse.Namespace, source: Path,
             config: dict) -> dict[str, Any]:
    """The sweep's cluster (the one it was launched on), unless the command line names one."""
    named = any(o.lstrip("+~").startswith("cluster") for o in getattr(args, "overrides", []))
    if named:
        return OmegaConf.to_container(cfg.cluster, resolve=True)
    recorded = recorded_cluster(source)
    if recorded is not None:
        return OmegaConf.to_container(recorded, resolve=True)
    return dict(config.get("cluster") or {})


def release_study(source: Path, config: dict, picks: list[Pick], cluster: dict,
                  target: Path) -> StudyConfig:
    """The source's config with the picks as its family and their budgets as its budgets:
    the sweep's recipe, trainer and conventions, one run per pick, into ``target``."""
    members = {m.name: m for m in build_family(config["family"])}
    by_member: dict[str, list[float]] = {}
    for pick in picks:
        by_member.setdefault(pick.member, []).append(pick.budget)
    family = {"name": f"{(config.get('family') or {}).get('name', 'family')}_release",
              "members": [_member_entry(members[name], budgets)
                          for name, budgets in by_member.items()]}
    planner = dict(config.get("planner") or {})
    planner.update({"seeds": 1, "prior": None, "adaptive": False, "strategy": "independent"})
    data = {**config, "experiment_name": f"{config.get('experiment_name', source.name)}_release",
            "sweep_dir": str(target), "family": family, "planner": planner,
            "budgets": {"flops": sorted({p.budget for p in picks})}, "cluster": cluster}
    data.pop("format_version", None)
    trainer = dict(config.get("trainer") or {})
    if "evaluations_per_run" in trainer:  # Megatron: evaluate and save at each tenth
        trainer.update({"evaluations_per_run": CHECKPOINTS, "eval_interval": None})
    data["trainer"] = trainer
    return study_config(data)


def _member_entry(member: Member, budgets: list[float]) -> dict[str, Any]:
    arch = {k: getattr(member.arch, k) for k in ARCH_KEYS}
    entry = {**arch, "name": member.name, "budgets": sorted(budgets)}
    if member.micro_batch_size:
        entry["micro_batch_size"] = member.micro_batch_size
    return entry


def with_checkpoints(the_plan: Plan) -> Plan:
    """Each run keeps a checkpoint at every tenth of its iterations (``save_steps``: the
    trainers keep one there; Megatron's --save-interval is already train_iters // 10)."""
    runs = [dataclasses.replace(run, save_steps=tenths(run.train_iters))
            for run in the_plan.runs]
    return Plan(runs=runs, removed=list(the_plan.removed))


def tenths(iters: int) -> tuple[int, ...]:
    """The iterations at each tenth of ``iters``: multiples of ``iters // 10`` (Megatron's
    --save-interval with trainer.evaluations_per_run=10, whose saves land exactly there), the
    last one ``iters`` itself."""
    every = max(1, iters // CHECKPOINTS)
    return tuple(sorted({*(k * every for k in range(1, CHECKPOINTS) if k * every < iters),
                         iters}))


def _run_of(the_plan: Plan, pick: Pick) -> str:
    found = [r.run_id for r in the_plan.runs if r.member.name == pick.member
             and math.isclose(r.budget, pick.budget, rel_tol=1e-6)]
    if not found:
        why = next((f"{r.constraint} ({r.detail})" for r in the_plan.removed
                    if r.member == pick.member and math.isclose(r.budget, pick.budget)), "")
        raise ConfigError(f"{pick.member} at {pick.budget:g} FLOPs: the sweep's planner "
                          f"removes it ({why}); relax that planner key on the command line "
                          "of the source's plan, or pick another member with --member")
    return found[0]


def prediction_table(source: Path, the_plan: Plan, picks: list[Pick], n_column: str,
                     registered: pd.DataFrame | None = None) -> pd.DataFrame:
    """prediction.csv: the law's prediction of each release run, before it trains. A run
    already in ``registered`` (the previous prediction.csv of a re-planned release) keeps its
    row: its prediction was made before it trained, by the fit whose sha256 the row names."""
    kept = {} if registered is None else \
        {str(r["run_id"]): r for r in registered.to_dict(orient="records")}
    todo = [run for run in the_plan.runs if run.run_id not in kept]
    draws = law_draws(source) if todo else None
    fit_sha = file_sha256(source / FIT_JSON)
    how = {(p.budget, p.member): p.how for p in picks}
    rows = []
    for run in the_plan.runs:
        if run.run_id in kept:
            rows.append(kept[run.run_id])
            continue
        n = float(member_n(run.member.arch, n_column))
        row = {"run_id": run.run_id, "budget": run.budget, "member": run.member.name,
               "n_column": n_column, "n": n, "tokens": run.tokens,
               "train_iters": run.train_iters,
               "how": how.get((run.budget, run.member.name), "selection")}
        row.update(prediction_columns(predict(draws, run.budget, n, run.tokens)))
        row.update({"confidence": draws.settings.confidence, "fit_sha256": fit_sha,
                    "notes": "; ".join(draws.notes)})
        rows.append(row)
    return pd.DataFrame(rows)


def _note_refit(source: Path, target: Path, console: Console) -> None:
    link = read_link(target)
    if link is not None and link.fit_sha256 != file_sha256(source / FIT_JSON):
        console.print(f"note: {source / FIT_JSON} changed since this release was planned; its "
                      f"predictions ({PREDICTION_CSV}) are those of the fit that picked it")


def _columns_others_added(target: Path) -> pd.DataFrame | None:
    """run_id and the columns of the release's results.csv that neither collect nor the check
    writes (another command's, such as accuracies), to keep across a new collect."""
    path = target / RESULTS_CSV
    if not path.is_file():
        return None
    results = pd.read_csv(path, dtype={"run_id": str})
    theirs = [c for c in results.columns if c.startswith(OTHERS_PREFIXES)]
    return results[["run_id", *theirs]] if theirs else None


def _train_and_check(target: Path, study: StudyConfig, args: argparse.Namespace,
                     console: Console, started: float) -> int:
    from analysis.collect import collect_sweep
    from jobs.study import launch_and_wait, write_report_or_say_why

    cfg = data_config(study.to_yaml())  # the source's config: data
    executor = executor_for(ClusterSettings.from_cfg(cfg))
    status = launch_and_wait(target, cfg, executor, args, console)
    if not status.all_terminal:
        console.print(f"{status.summary()}\nthe release runs are queued or running; follow "
                      f"them with `flame status --watch sweep_dir={target}` and run this "
                      "command again to collect and check.")
        return 0
    added = _columns_others_added(target)
    collect_sweep(target, cfg)
    if added is not None:  # e.g. flame eval's acc_<task> columns: collect does not know them
        results = pd.read_csv(target / RESULTS_CSV, dtype={"run_id": str})
        write_csv(target / RESULTS_CSV, results.merge(added, on="run_id", how="left"))
    table = write_check(target)
    console.rule("prediction check")
    for line in check_lines(table):
        console.print(line, markup=False, highlight=False)
    console.print(f"  {target / RESULTS_CSV}  (the check's columns)")
    source = Path(read_link(target).source)
    evaluate = bool(getattr(args, "eval", False))
    # with --eval the reports are written once, after it, with the downstream section in them
    code = _evaluate(source, cfg, console) if evaluate else 0
    for sweep in (target, source):
        if (page := write_report_or_say_why(sweep, console)) is not None:
            console.print(f"  {page}")
    console.print(f"release{' and evaluation' if evaluate else ''} finished in "
                  f"{time.monotonic() - started:.0f} s")
    return code


def _evaluate(source: Path, cfg: Any, console: Console) -> int:
    """``flame eval`` of the source sweep and its release with eval's defaults, on the
    release's cluster (``cfg``: the release's config, as data)."""
    parser = argparse.ArgumentParser()
    eval_arguments(parser)
    cfg.sweep_dir = literal(str(source))
    console.rule("downstream (flame eval)")
    return eval_command(cfg, parser.parse_args([]))


__all__ = ["release", "release_arguments", "choose_picks", "release_study", "tenths",
           "prediction_table", "Pick"]

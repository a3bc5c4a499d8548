"""Adaptive budgets in ``flame run`` (``planner.adaptive=true``): waves from the cheapest budget,
each re-centred on the law refitted from the waves before it.

A wave is one budget's new runs. When a wave has ended, the sweep is collected and fitted with
Approach 2 (``analysis.fit.fit_isoflop``, the code and ``fit`` settings of ``flame fit``,
without bootstrap: a decision needs the optimum's location, not its interval), and
``sweep.recentre`` turns the fit into the next decision: the cheapest budget not yet bracketed
that gains family members under the updated law, and those members. Approach 3 is not used:
its five parameters are not identified from one or two budgets (``flame fit`` itself refuses
them there), which is exactly when re-centring matters most.

Every decision is written, with the fit it came from, to ``<sweep>/adaptive/decision_NNN.json``
(atomic) before its runs are planned. plan.csv is the union of the decisions' runs, so it only
grows (``write_plan`` keeps each earlier plan under ``history/``) and no completed run is ever
dropped. A rerun reads the decisions back and plans exactly their runs (launch skips what is
done), and computes a new decision only once every logged wave has ended, from the completed
runs' results alone: a crash anywhere repeats the same decisions and retrains nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig
from rich.console import Console

from analysis.collect import collect_sweep
from analysis.fit import IsoflopFit, fit_isoflop, load_sweep_results, used_points
from analysis.settings import FitSettings
from conf.study import hash_context, settings_from_cfg, study_config, write_plan
from jobs.executors.base import Executor
from jobs.launch import launch_sweep
from jobs.ledger import COMPLETED
from jobs.status import executor_of, poll, wait_until_terminal
from sweep.commands import check_sweep_dir, guard_replan
from sweep.config import read_plan
from sweep.errors import ConfigError
from sweep.family import Member, build_family
from sweep.io import ADAPTIVE_DIR, PLAN_CSV, RESULTS_CSV, atomic_write_text
from sweep.planner import Plan, PlannedRun, PlannerSettings, plan, validate_budgets
from sweep.recentre import BudgetEvidence, Law, centre, centred_prior, updated_law
from sweep.schema import plain

DECISION_FORMAT = 2  # 2 adds ``rules``; a format-1 decision reads with rules {} (unchecked)
# The fit settings a decision depends on (which runs are fitted, and how Approach 2 fits them):
# a rerun that changes one would decide later waves under other rules than the logged ones.
DECISION_FIT_KEYS = ("n_column", "include_flags", "exclude_budgets", "drop_highest_loss",
                     "diverge_rise", "window_decades", "min_points", "bucket_decades")


@dataclass
class Decision:
    """One step of the adaptive loop: the next wave, or the end of the study."""

    index: int
    """1, 2, ...: decision i plans wave i."""
    budget: float | None
    """The wave's budget (None: no wave, the study's plan is complete)."""
    n_centre: float | None
    """N the wave's sizes are centred on (within planner.prior.span_log10)."""
    law: dict[str, Any]
    """The updated law N_opt = k.C^a it came from: k, a, source."""
    runs: list[dict[str, Any]]
    """The wave's new runs: run_id, member, n."""
    reason: str
    """Why this budget (or why stop), in words."""
    skipped: list[dict[str, Any]] = field(default_factory=list)
    """Cheaper unbracketed budgets that gain no member, and why."""
    fit: dict[str, Any] | None = None
    """The fit it came from (None for the first wave: the prior alone)."""
    budgets: list[float] = field(default_factory=list)
    """The study's budgets it chose among (a rerun with others is refused)."""
    rules: dict[str, Any] = field(default_factory=dict)
    """The rules it was made under, ``planner.prior.*`` and ``fit.*`` (DECISION_FIT_KEYS) by
    dotted key (a rerun with other values is refused; {} in a format-1 log: not checked)."""

    @property
    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.runs]

    def to_json(self) -> str:
        return json.dumps({"format": DECISION_FORMAT, **dataclasses.asdict(self)}, indent=2)


@dataclass
class Study:
    """What every step needs, built once from the config (ConfigError before any write)."""

    cfg: DictConfig
    """The composed config (for collect and launch)."""
    settings: PlannerSettings
    """The planner's settings; ``prior`` is the first wave's law."""
    members: list[Member]
    """The family (no member pinned to budgets)."""
    budgets: list[float]
    """The study's budgets, cheapest first."""
    context: dict[str, Any]
    """What else goes into run_ids (``sweep.config.hash_context``)."""
    fit: FitSettings
    """The study's fit settings, N under the planner's convention, no bootstrap."""

    @property
    def rules(self) -> dict[str, Any]:
        """What the decisions depend on besides the runs' results, by dotted config key."""
        prior = dataclasses.asdict(self.settings.prior)
        return {f"planner.prior.{k}": v for k, v in prior.items()} \
            | {f"fit.{k}": plain(getattr(self.fit, k)) for k in DECISION_FIT_KEYS}


def load_study(cfg: DictConfig) -> Study:
    """The config checked for adaptive budgets; a one-line ConfigError otherwise."""
    study = study_config(cfg)
    settings = settings_from_cfg(study)
    if settings.prior is None:
        raise ConfigError("planner.adaptive=true needs planner.prior (the law the first wave "
                          "is centred on); set planner.prior={k: ..., a: ..., span_log10: 0.5}")
    members = build_family(study.family)
    pinned = [m.name for m in members if m.budgets is not None]
    if pinned:
        raise ConfigError(f"planner.adaptive=true: family member {pinned[0]} lists `budgets`, "
                          "but the waves choose each budget's members; remove the members' "
                          "budgets (or use family.grid), or set planner.adaptive=false")
    fit = dataclasses.replace(FitSettings.from_mapping(plain(study.fit)), bootstrap=0,
                              n_column=f"n_active_{settings.accounting}")  # the prior's N
    return Study(cfg, settings, members, validate_budgets(study.budgets.flops),
                 hash_context(study), fit)


DONE, WAITING, BLOCKED = "done", "waiting", "blocked"


def run_waves(sweep_dir: Path, cfg: DictConfig, args: argparse.Namespace,
              console: Console, executor: Executor | None = None) -> str:
    """Plan, launch and wait wave after wave until a decision says stop. Returns DONE (every
    run of the final plan has ended: collect and fit may follow), WAITING (runs are going and
    waiting was not asked for) or BLOCKED (a wave has runs that did not complete: no decision
    is made without them); a later ``flame run`` continues from the log. ``executor``: the
    command's (``flame run`` builds it once), else built from ``cfg.cluster``."""
    check_sweep_dir(str(sweep_dir))
    executor = executor_of(cfg, executor)
    study = load_study(cfg)
    decisions = read_decisions(sweep_dir)
    first = [] if decisions else [decide(1, {}, study, None)]
    if first and first[0].budget is None:
        raise ConfigError("planner.prior: no family member lies within span_log10 of the "
                          "prior's N_opt at any budget; widen span_log10 or fix k and a")
    runs = replay(sweep_dir, decisions + first, study)
    guard_dropped(sweep_dir, set(runs), bool(getattr(args, "replan", False)))
    decisions += [log_decision(sweep_dir, d) for d in first]  # only now: nothing was refused
    wait = executor.cluster.wait and not getattr(args, "no_wait", False)
    while True:
        last = decisions[-1]
        write_plan(sweep_dir, Plan(sorted(runs.values(), key=_order)), study.settings, cfg)
        report = launch_sweep(sweep_dir, cfg, executor=executor)
        console.print(wave_line(last, len(report.submitted)))
        status = (wait_until_terminal(sweep_dir, console=console, executor=executor) if wait
                  else poll(sweep_dir, executor=executor))
        if not status.all_terminal:
            console.print(f"{status.summary()}\nwave {last.index} is still queued or running; "
                          "run this command again to continue the waves once it has ended.")
            return WAITING
        if last.budget is None:
            return DONE
        if status.counts[COMPLETED] < status.total:
            ended = [r.run_id for r in status.runs if r.state != COMPLETED]
            console.print(f"{status.summary()}\nwave {last.index}: {len(ended)} runs did not "
                          f"complete (e.g. {ended[0]}) and the next wave is decided from "
                          "completed runs only: `flame resubmit --failed` (cancelled runs: "
                          f"`flame resubmit RUN_ID...`) sweep_dir={sweep_dir}, then run this "
                          "command again.")
            return BLOCKED
        fitted = fit_finished(sweep_dir, study)
        decisions.append(log_decision(sweep_dir, decide(last.index + 1, runs, study, fitted)))
        runs = replay(sweep_dir, decisions, study)


def wave_line(decision: Decision, submitted: int) -> str:
    """One line on what a decision planned (or that the waves are over)."""
    law = decision.law
    if decision.budget is None:
        return f"adaptive: {decision.reason} ({submitted} runs submitted)"
    return (f"wave {decision.index}: C={decision.budget:.3g}, {len(decision.runs)} runs centred "
            f"on N={decision.n_centre:.3g} (N_opt = {law['k']:.4g}.C^{law['a']:.4f}, "
            f"{law['source']}); {submitted} submitted")


def decide(index: int, runs: dict[str, PlannedRun], study: Study,
           fitted: dict[str, Any] | None) -> Decision:
    """The next decision from the fit of the finished runs (None: no run yet, the prior)."""
    evidence = [BudgetEvidence(**e) for e in fitted["evidence"]] if fitted else []
    law = updated_law(study.settings.prior, evidence,
                      (fitted["n_law"]["k"], fitted["n_law"]["a"])
                      if fitted and fitted["n_law"] else None)
    by_budget = {e.budget: e for e in evidence}
    law_dict = {"k": law.k, "a": law.a, "source": law.source}
    skipped = []
    for budget in study.budgets:
        ev = by_budget.get(budget)
        if ev is not None and ev.bracketed:
            continue
        n_centre = centre(law, budget, ev)
        new, why = wave_runs(budget, n_centre, law, runs, study)
        if not new:
            skipped.append({"budget": budget, "n_centre": n_centre, "reason": why})
            continue
        reason = (f"the cheapest budget without a bracketed optimum ({_state(ev)}), centred on "
                  f"N={n_centre:.4g}")
        return Decision(index, budget, n_centre, law_dict,
                        [{"run_id": r.run_id, "member": r.member.name, "n": r.n_active}
                         for r in new], reason, skipped, fitted, study.budgets, study.rules)
    left = [s["budget"] for s in skipped]
    reason = ("every budget is bracketed" if not left else
              f"{len(left)} budget(s) not bracketed and the family has no further size within "
              f"span_log10 of their optimum: {', '.join(f'{b:.3g}' for b in left)}")
    return Decision(index, None, None, law_dict, [], reason, skipped, fitted, study.budgets,
                    study.rules)


def _state(ev: BudgetEvidence | None) -> str:
    if ev is None:
        return "not run yet"
    if ev.edge:
        side = "smallest" if ev.edge == "low" else "largest"
        return f"its lowest loss is at the {side} size run, N={ev.n_best:.4g}"
    return f"no usable parabola; lowest loss at N={ev.n_best:.4g}"


def wave_runs(budget: float, n_centre: float, law: Law, runs: dict[str, PlannedRun],
              study: Study) -> tuple[list[PlannedRun], str]:
    """The runs the planner keeps at ``budget`` around ``n_centre`` that are not planned yet
    (empty, and why, when there are none)."""
    prior = centred_prior(law, budget, n_centre, study.settings.prior.span_log10)
    settings = dataclasses.replace(study.settings, prior=prior)
    try:
        planned = plan([budget], study.members, settings, study.context).runs
    except ConfigError as err:  # every member removed by a constraint (prior, min_iters, ...)
        return [], str(err)
    new = [r for r in planned if r.run_id not in runs]
    return new, "" if new else (f"every family member within {prior.span_log10} decades of "
                                f"N={n_centre:.4g} is already planned")


def fit_finished(sweep_dir: Path, study: Study) -> dict[str, Any]:
    """Collect the sweep and fit its usable runs (``fit_points``)."""
    collect_sweep(sweep_dir, study.cfg)
    return fit_points(used_points(load_sweep_results(Path(sweep_dir) / RESULTS_CSV,
                                                     study.fit)), study)


def fit_points(used: pd.DataFrame, study: Study) -> dict[str, Any]:
    """Approach 2 on ``used`` (fit points of results.csv): the evidence per budget and the
    fit, as logged with the decision they lead to."""
    iso = fit_isoflop(used, study.fit) if not used.empty else None
    return {"approach": "approach2", "n_column": study.fit.n_column,
            "points": int(len(used)), "run_ids": sorted(used["run_id"].astype(str)),
            "budgets": [b.as_dict() for b in iso.budgets] if iso else [],
            "n_law": ({"k": iso.n_law.k, "a": iso.n_law.exponent}
                      if iso and iso.n_law else None),
            "reason": iso.reason if iso else "no usable run",
            "evidence": [dataclasses.asdict(e) for e in evidence(used, iso, study.budgets)]}


def evidence(used: pd.DataFrame, iso: IsoflopFit | None,
             budgets: list[float]) -> list[BudgetEvidence]:
    """Per budget with usable runs: Approach 2's N_opt if bracketed, the lowest-loss run's N
    and whether it is the smallest or largest size run there."""
    out = []
    for budget in budgets:
        rows = used[[math.isclose(b, budget, rel_tol=1e-9) for b in used["budget"]]]
        if rows.empty:
            continue
        best = float(rows.loc[rows["loss"].idxmin(), "n"])
        sizes = rows["n"].nunique()
        edge = "" if sizes < 2 else "low" if best == rows["n"].min() else \
            "high" if best == rows["n"].max() else ""
        fit = next((b for b in (iso.budgets if iso else ())
                    if math.isclose(b.budget, budget, rel_tol=1e-6)), None)
        n_opt = fit.n_opt if fit is not None and fit.used else None
        out.append(BudgetEvidence(budget, n_opt, best, edge))
    return out


def decisions_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / ADAPTIVE_DIR


def log_decision(sweep_dir: Path, decision: Decision) -> Decision:
    """Write the decision (atomically) before anything acts on it."""
    atomic_write_text(decisions_dir(sweep_dir) / f"decision_{decision.index:03d}.json",
                      decision.to_json() + "\n")
    return decision


def read_decisions(sweep_dir: Path) -> list[Decision]:
    """The logged decisions in order; a ConfigError naming a file that cannot be used."""
    out = []
    for path in sorted(decisions_dir(sweep_dir).glob("decision_*.json")):
        try:
            data = json.loads(path.read_text())
            data.pop("format", None)  # format 1 has no ``rules``: the default {} (unchecked)
            decision = Decision(**data)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{path}: not a readable decision ({err}); restore it, or use a "
                              "new sweep_dir") from None
        if decision.index != len(out) + 1 or (out and out[-1].budget is None):
            raise ConfigError(f"{path}: decision {decision.index} does not follow "
                              f"{len(out)} earlier ones; restore the adaptive/ directory")
        out.append(decision)
    return out


def replay(sweep_dir: Path, decisions: list[Decision], study: Study) -> dict[str, PlannedRun]:
    """Every run the decisions planned, rebuilt by the planner from this config; a ConfigError
    when the config no longer plans them (family, recipe or trainer changed)."""
    runs: dict[str, PlannedRun] = {}
    settings = dataclasses.replace(study.settings, prior=None)
    if decisions and decisions[-1].budgets != study.budgets:
        raise ConfigError(f"budgets.flops={study.budgets}: the waves logged in "
                          f"{decisions_dir(sweep_dir)} chose among {decisions[-1].budgets}; "
                          "set those budgets, or use a new sweep_dir for others")
    check_rules(sweep_dir, decisions, study.rules)
    for d in decisions:
        if d.budget is None:
            continue
        at_budget = {r.run_id: r for r in plan([d.budget], study.members, settings,
                                               study.context).runs}
        missing = [rid for rid in d.run_ids if rid not in at_budget]
        if missing:
            raise ConfigError(
                f"{decisions_dir(sweep_dir)}/decision_{d.index:03d}.json: its run {missing[0]} "
                "is not planned by this config (family, recipe or trainer changed?); run with "
                "the sweep's own config, or use a new sweep_dir")
        runs.update((rid, at_budget[rid]) for rid in d.run_ids)
    return runs


def check_rules(sweep_dir: Path, decisions: list[Decision], rules: dict[str, Any]) -> None:
    """A ConfigError naming the first key whose value differs from a logged decision's."""
    for d in decisions:
        for key, logged in d.rules.items():
            if key in rules and rules[key] != logged:
                raise ConfigError(
                    f"{key}={rules[key]!r}: the waves logged in {decisions_dir(sweep_dir)} were "
                    f"decided with {key}={logged!r}; set it back, or use a new sweep_dir")


def guard_dropped(sweep_dir: Path, ids: set[str], replan: bool) -> None:
    """An existing plan.csv is replaced by the waves' plan only if that drops nothing, or on
    purpose (``--replan``) and with nothing dropped in flight: the rule of ``flame plan``."""
    if not (Path(sweep_dir) / PLAN_CSV).is_file():
        return
    previous = {row.run_id for row in read_plan(sweep_dir)}
    if previous - ids:
        guard_replan(Path(sweep_dir), previous, ids, replan)


def _order(run: PlannedRun) -> tuple[float, int, str]:
    return run.budget, run.n_active, run.run_id


__all__ = ["ADAPTIVE_DIR", "DONE", "WAITING", "BLOCKED", "Decision", "load_study", "run_waves",
           "decide", "fit_finished", "fit_points", "evidence", "read_decisions", "replay"]

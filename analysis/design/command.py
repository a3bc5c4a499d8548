"""``flame design``: simulate the experiment's design and searched ones from a prior law; write
design.json, figures/design.{png,svg} and, with a target or a cap, the optimised plan."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from analysis.design.branches import ASSUMPTION, branch_cost, independent
from analysis.design.search import (
    SearchResult,
    candidate_runs,
    candidates,
    linear_halfwidth,
    optimise,
)
from analysis.design.simulate import Design, PriorLaw, load_prior, simulate
from analysis.jsonsafe import dumps
from sweep.config import hash_context, plan_study
from sweep.errors import ConfigError
from sweep.family import build_family
from sweep.io import atomic_write_text
from sweep.schema import plain

DESIGN_JSON = "design.json"


def design_arguments(parser: argparse.ArgumentParser) -> None:
    """`flame design` has no flags of its own: everything is in the `design` config group."""


def design(study: Any, args: argparse.Namespace) -> int:
    """Print the designs' table; write design.json, the figure and (target/cap) the plan.
    ``study``: the typed whole config, built once by the CLI (``Command.typed``)."""
    if not study.root.sweep_dir:
        raise ConfigError("sweep_dir: not set; pass sweep_dir=DIR")
    sweep_dir = Path(str(study.root.sweep_dir))
    settings, fit = study.design, study.fit
    prior = load_prior(settings, fit)                       # bad input: exit 2, nothing written
    members = build_family(study.family)
    own_plan, planner = plan_study(study)
    ctx = hash_context(study)
    own = Design(f"{study.root.experiment_name} plan", independent(own_plan.runs))
    baseline = simulate(own, prior, settings, fit, members)
    baseline["branches"] = branch_cost(own, planner, ctx)
    explicit = settings.target_halfwidth is not None or settings.max_flops is not None
    target, cap = settings.target_halfwidth, settings.max_flops
    if not explicit:  # the question: how precise at a fraction of the plan's compute?
        cap = settings.compute_fraction * baseline["flops"]
    by_budget = candidate_runs(sorted(settings.budgets or list(study.budgets.flops)), members,
                               planner, ctx, max(settings.seeds))
    pool = candidates(prior, by_budget, settings, fit.n_column)
    if not pool:
        raise ConfigError("design.budgets: fewer than design.min_budgets budgets keep >= 3 "
                          "family members after the planner's constraints; add budgets")
    found = optimise(prior, pool, settings, fit, members, target, cap)
    found.best["branches"] = branch_cost(found.design, planner, ctx)
    written = None
    if explicit and settings.write_plan:
        from analysis.design.plan import write_design_plan
        written = write_design_plan(sweep_dir, study, found.design)
    report = _report(prior, settings, baseline, found, target, cap, written)
    atomic_write_text(sweep_dir / DESIGN_JSON, dumps(report))
    from analysis.design.plots import design_figure  # matplotlib only when figures are made
    lines = found.scores if settings.approach == "approach3" else [
        linear_halfwidth(d, prior, fit) for d in pool]
    screened = [(d.flops, hw) for d, hw in zip(pool, lines)]
    figures = design_figure(sweep_dir, report["designs"], screened, found.best["name"],
                            target, settings.approach, cap)
    console = Console(width=None if Console().is_terminal else 160)
    console.print(design_table(report))
    console.print(_summary(report, baseline, found))
    console.print(f"wrote {sweep_dir / DESIGN_JSON}, {figures[0]}"
                  + (f", {written} (launch it: flame launch sweep_dir={sweep_dir})"
                     if written else ""))
    return 0


def _report(prior: PriorLaw, settings, baseline: dict, found: SearchResult,
            target: float | None, cap: float | None, written: Path | None) -> dict:
    others = [e for e in found.confirmed if e is not found.best]
    law = prior.law
    return {"prior": {"E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha,
                      "beta": law.beta, "a": law.a, "noise": prior.noise,
                      "source": prior.source, "noise_source": prior.noise_source},
            "approach": settings.approach, "target_halfwidth": target,
            "cap_from": "design.max_flops" if settings.max_flops is not None else
            None if cap is None else f"design.compute_fraction={settings.compute_fraction:g} "
            "of the plan's compute",
            "max_flops": cap, "chosen": found.best["name"],
            "screened": found.screened, "plan": str(written) if written else None,
            "settings": plain(settings),
            "designs": [baseline, found.best, *others]}


def design_table(report: dict) -> Table:
    """One row per simulated design: cost, half-width and bias of a, selection, extrapolation."""
    base = report["designs"][0]["flops"]
    table = Table(title=f"Designs simulated from {report['prior']['source']} (a = "
                        f"{report['prior']['a']:.3f}, noise {report['prior']['noise']:.3g}; "
                        f"{report['designs'][0]['replications']} replications each)")
    for col in ("design", "runs", "budgets", "FLOPs", "vs plan", "GPU-h", "±a A2", "±a A3",
                "bias A2", "bias A3", "P(member) min", "N_opt err @max"):
        table.add_column(col, justify="left" if col == "design" else "right")
    for entry in report["designs"]:
        p = entry.get("p_member") or {}
        ext = entry["extrapolation"].get("approach3") or entry["extrapolation"]["approach2"]
        mark = " *" if entry["name"] == report["chosen"] else ""
        precision = [*(_num(entry["a_halfwidth"].get(k)) for k in ("approach2", "approach3")),
                     *(_num(entry["a_bias"].get(k), "+.3f") for k in ("approach2",
                                                                     "approach3")),
                     _num(min(p.values()) if p else None, ".2f"),
                     f"x10^±{ext['n_opt_log10_halfwidth']:.2f}"]
        table.add_row(entry["name"] + mark, str(entry["runs"]), str(len(entry["budgets"])),
                      f"{entry['flops']:.3g}", f"{entry['flops'] / base:.0%}",
                      f"{entry['gpu_hours']:.3g}", *precision)
        branch = entry.get("branches") or {}
        if "flops" in branch:  # the same points as trunks + cooldowns: cost, assumed precision
            table.add_row(f"  as branches (+{branch['trunks']} trunks)", str(entry["runs"]),
                          str(len(entry["budgets"])), f"{branch['flops']:.3g}",
                          f"{branch['flops'] / base:.0%}", f"{branch['gpu_hours']:.3g}",
                          *[f"{v}†" if v != "-" else v for v in precision])
    return table


def _summary(report: dict, baseline: dict, found: SearchResult) -> str:
    return _chosen(report, baseline, found) + _branches(baseline, found.best)


def _branches(baseline: dict, best: dict) -> str:
    """What the branch rows mean, or why a design cannot be branched."""
    lines = []
    for entry in (baseline, best) if best is not baseline else (baseline,):
        branch = entry.get("branches") or {}
        if "reason" in branch:
            lines.append(f"{entry['name']}: no branch design ({branch['reason']})")
    b = baseline.get("branches") or {}
    lines.append(f"† as branches (planner.strategy=branches, cooldown_fraction="
                 f"{b.get('cooldown_fraction')}, branch_step_multiple="
                 f"{b.get('branch_step_multiple')}): the same points, each trunk trained once; "
                 f"{ASSUMPTION}")
    return "\n" + "\n".join(lines)


def _chosen(report: dict, baseline: dict, found: SearchResult) -> str:
    approach, best = report["approach"], found.best
    return (f"* chosen (cheapest with {approach} half-width of a <= "
            f"{report['target_halfwidth']:.3g}" if report["target_halfwidth"] is not None
            else f"* chosen (most precise within {report['max_flops']:.3g} FLOPs, "
                 f"{report['cap_from']}") + (
        f"): {best['a_halfwidth'][approach]:.3f} at {best['flops']:.3g} FLOPs = "
        f"{best['flops'] / baseline['flops']:.0%} of the plan's compute "
        f"(plan: {baseline['a_halfwidth'][approach]:.3f}); {found.screened} candidates "
        f"screened, {len(found.confirmed)} simulated")


def _num(value, fmt: str = ".3f") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, fmt)

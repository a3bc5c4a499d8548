"""``flame design``: simulate the experiment's design and searched ones from a prior law; write
design.json, figures/design.{png,svg} and, with a target or a cap, the optimised plan."""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from analysis.design.branches import ASSUMPTION, BranchCoster, branch_cost, independent
from analysis.design.plan import search_members
from analysis.design.search import (
    SearchResult,
    branch_variant,
    candidate_runs,
    candidates,
    linear_halfwidth,
    optimise,
    search_seeds,
)
from analysis.design.simulate import Design, PriorLaw, load_prior, simulate
from analysis.fit.isoflop_pivot import MIN_USABLE
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
    members = search_members(study.family, settings.new_shapes)
    own_plan, planner = plan_study(study)
    ctx = hash_context(study)
    own = Design(f"{study.root.experiment_name} plan", independent(own_plan.runs))
    family = members[:len(build_family(study.family))]  # the plan's own, no new shapes
    baseline = simulate(own, prior, settings, fit, family)
    baseline["branches"] = branch_cost(own, planner, ctx)
    coster = BranchCoster(planner, ctx) if settings.branches else None
    own_branched = branch_variant(own, coster)
    explicit = settings.target_halfwidth is not None or settings.max_flops is not None
    target, cap = settings.target_halfwidth, settings.max_flops
    if not explicit:  # the question: how precise at a fraction of the plan's compute?
        cap = settings.compute_fraction * baseline["flops"]
    seeds = search_seeds(settings, prior)
    by_budget = candidate_runs(sorted(settings.budgets or list(study.budgets.flops)), members,
                               planner, ctx, max(seeds))
    pool = candidates(prior, by_budget, settings, fit.n_column, coster)
    if not pool:
        raise ConfigError("design.budgets: fewer than design.min_budgets budgets keep >= 3 "
                          "family members after the planner's constraints; add budgets")
    found = optimise(prior, pool, settings, fit, members, target, cap)
    found.best["branches"] = branch_cost(found.design, planner, ctx)
    extra = [simulate(own_branched, prior, settings, fit, family)] if own_branched else []
    written = None
    if explicit and settings.write_plan:
        from analysis.design.plan import write_design_plan
        written = write_design_plan(sweep_dir, study, found.design)
    report = _report(prior, settings, baseline, found, target, cap, written, extra)
    report["seeds_searched"] = seeds
    report["plan_command"] = plan_command(getattr(args, "overrides", []) or [], sweep_dir,
                                          report, explicit)
    report["cautions"] = cautions(report, found.best, baseline)
    atomic_write_text(sweep_dir / DESIGN_JSON, dumps(report))
    from analysis.design.plots import design_figure  # matplotlib only when figures are made
    lines = found.scores if settings.approach == "approach3" else [
        linear_halfwidth(d, prior, fit) for d in pool]
    screened = [(d.flops, hw) for d, hw in zip(pool, lines)]
    figures = design_figure(sweep_dir, report["designs"], screened, found.best["name"],
                            target, settings.approach, cap)
    console = Console(width=None if Console().is_terminal else 160)
    for w in prior.warnings:  # as `flame fit` prints them, before the numbers they qualify
        console.print(f"warning [{w.code}]: design.prior: {w.message}", highlight=False,
                      markup=False)
    console.print(design_table(report))
    console.print(members_text(report), highlight=False)
    console.print(_summary(report, baseline, found), highlight=False)
    console.print(f"wrote {sweep_dir / DESIGN_JSON}, {figures[0]}"
                  + (f", {written} (launch it: flame launch sweep_dir={sweep_dir})"
                     if written else ""), highlight=False)
    return 0


def plan_command(overrides: list[str], sweep_dir: Path, report: dict, explicit: bool) -> str:
    """The command that writes the chosen design as plan.csv + config.yaml: this one again
    with the same cap (the search is deterministic, so it chooses the same design)."""
    kept = [o for o in overrides if not o.split("=")[0].lstrip("+~").startswith(
        ("design.max_flops", "design.compute_fraction", "sweep_dir", "design.write_plan"))]
    if explicit and report.get("plan"):
        return f"flame launch sweep_dir={sweep_dir}"  # the sweep's config.yaml is the design
    cap = report["max_flops"] if report["target_halfwidth"] is None else None
    key = f"design.max_flops={cap!r}" if cap is not None else \
        f"design.target_halfwidth={report['target_halfwidth']!r}"
    return " ".join(["flame design", *map(shlex.quote, kept), key,
                     f"sweep_dir={sweep_dir}/chosen"])


def cautions(report: dict, best: dict, baseline: dict) -> list[str]:
    """What a user must know before acting on the chosen design."""
    out = []
    noise = report["prior"]
    if noise.get("warnings"):
        out.append(f"the prior law is degenerate ({len(noise['warnings'])} warning(s): "
                   f"{', '.join(w['code'] for w in noise['warnings'])}): every simulated study "
                   "draws from it as the truth, so the half-widths say how precisely a design "
                   "would measure that law, not how well the law is known; fit the prior on "
                   "more budgets, or give design.law")
    if noise["shape_sd"] == 0:
        out.append("the noise is simulated as independent per run (iid): the law's misfit, "
                   "shared by every run of a shape, is not in it, so half-widths here are lower "
                   "bounds; give design.shape_sd / design.seed_sd, or a prior fit.json with "
                   "variance_components")
    for entry, who in ((best, "chosen"), (baseline, "plan")):
        usable = entry["usable"].get("approach2", 0.0)
        if usable < 0.9:
            withheld = f" (`flame fit` withholds Approach 2's interval where under " \
                f"{MIN_USABLE:.0%} of its resamples drawn from the law give a law: expect " \
                "none)" if usable < MIN_USABLE else ""
            out.append(f"{who}: Approach 2 was usable (>= 2 bracketed budgets) in only "
                       f"{usable:.0%} of simulated studies{withheld}; do not rely on its law")
        p = entry.get("p_member") or {}
        worst = min(p.items(), key=lambda kv: kv[1]) if p else None
        if worst is not None and worst[1] < 0.8:
            out.append(f"{who}: selection picks the true law's member at {worst[0]} FLOPs in "
                       f"only {worst[1]:.0%} of simulated studies")
    if best.get("trained_as") == "branches":
        out.append(f"chosen: trained as branches; {ASSUMPTION}")
    if best.get("seeds", 1) > 1 and noise["shape_sd"] == 0:
        out.append("chosen: its seeds' gain rests on the iid model (seeds cannot average the "
                   "law's misfit away)")
    return out


def members_text(report: dict) -> str:
    """Per design: its budgets and the shapes at each (what "x k (k_top at the largest)" is)."""
    lines = ["Budgets and shapes (members) of each design:"]
    for entry in report["designs"]:
        parts = [f"{b}: {len(set(names))} ({_span(names)})" for b, names in
                 entry.get("members", {}).items()]
        seeds = entry.get("seeds", 1)
        lines.append(f"  {entry['name']}: " + "; ".join(parts)
                     + (f"; x {seeds} seeds each" if seeds > 1 else ""))
    return "\n".join(lines)


def _span(names: list[str]) -> str:
    distinct = list(dict.fromkeys(names))
    return ", ".join(distinct) if len(distinct) <= 4 else \
        f"{distinct[0]}, {distinct[1]} ... {distinct[-1]}"


def _report(prior: PriorLaw, settings, baseline: dict, found: SearchResult,
            target: float | None, cap: float | None, written: Path | None,
            extra: list[dict]) -> dict:
    others = [e for e in found.confirmed if e is not found.best]
    law, noise = prior.law, prior.split
    return {"prior": {"E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha,
                      "beta": law.beta, "a": law.a, "noise": prior.noise,
                      "shape_sd": noise.shape_sd, "seed_sd": noise.seed_sd,
                      "branch_shared": noise.branch_shared, "split_source": noise.source,
                      "source": prior.source, "noise_source": prior.noise_source,
                      "warnings": [w.as_dict() for w in prior.warnings]},
            "approach": settings.approach, "target_halfwidth": target,
            "cap_from": "design.max_flops" if settings.max_flops is not None else
            None if cap is None else f"design.compute_fraction={settings.compute_fraction:g} "
            "of the plan's compute",
            "max_flops": cap, "chosen": found.best["name"],
            "screened": found.screened, "plan": str(written) if written else None,
            "settings": plain(settings),
            "designs": [baseline, found.best, *extra, *others]}


def design_table(report: dict) -> Table:
    """One row per simulated design: how it is trained, cost, half-width of a (both approaches,
    with Approach 2's usable share), bias, selection, extrapolation."""
    base = report["designs"][0]["flops"]
    prior = report["prior"]
    noise = (f"misfit {prior['shape_sd']:.3g} per shape + seed {prior['seed_sd']:.3g}"
             if prior.get("shape_sd") else f"iid noise {prior['noise']:.3g}")
    table = Table(title=f"Designs simulated from {prior['source']} (a = {prior['a']:.3f}, "
                        f"{noise}; {report['designs'][0]['replications']} replications each)"
                        + ("; the prior is degenerate: see its warnings" if prior.get("warnings")
                           else ""))
    for col in ("design", "runs", "shapes", "budgets", "FLOPs", "vs plan", "GPU-h",
                "±a A2 (usable)", "±a A3 (usable)", "bias A3", "P(member) min",
                "N_opt err @max"):
        table.add_column(col, justify="left" if col == "design" else "right")
    for entry in report["designs"]:
        p = entry.get("p_member") or {}
        ext = entry["extrapolation"].get("approach3") or entry["extrapolation"]["approach2"]
        mark = " *" if entry["name"] == report["chosen"] else ""
        a2 = _with_usable(entry, "approach2")
        runs = str(entry["runs"])
        if entry.get("trained_as") == "branches":  # points + the trunks they branch from
            runs += f" + {(entry.get('branch_cost') or {}).get('trunks', '?')} trunks"
        table.add_row(entry["name"] + mark, runs,
                      str(entry.get("shapes", "")), _budgets(entry["budgets"]),
                      f"{entry['flops']:.3g}", f"{entry['flops'] / base:.0%}",
                      f"{entry['gpu_hours']:.3g}", a2, _with_usable(entry, "approach3"),
                      _num(entry["a_bias"].get("approach3"), "+.3f"),
                      _num(min(p.values()) if p else None, ".2f"),
                      f"x10^±{ext['n_opt_log10_halfwidth']:.2f}")
    return table


def _with_usable(entry: dict, approach: str) -> str:
    """A half-width with the share of simulated studies in which the approach was usable."""
    usable = entry["usable"].get(approach)
    if usable is None:
        return "not simulated"
    return f"{_num(entry['a_halfwidth'].get(approach))} ({_share(usable)})"


def _budgets(budgets: list[float]) -> str:
    return ", ".join(f"{b:.0e}".replace("e+", "e") for b in budgets)


def _share(value: float) -> str:
    """A usable fraction, never rounded to 0% or 100% when it is not."""
    if 0 < value < 0.01 or 0.99 < value < 1:
        return f"{value:.1%}"
    return f"{value:.0%}"


def _summary(report: dict, baseline: dict, found: SearchResult) -> str:
    prior = report["prior"]
    lines = [_chosen(report, baseline, found) + _branches(baseline, found.best),
             f"noise: {prior['noise']:.3g} total = shape misfit {prior['shape_sd']:.3g} "
             f"(shared by every run of a shape) + seed {prior['seed_sd']:.3g} ("
             f"{prior['split_source']}); seeds searched: {report['seeds_searched']}",
             "A3/A2 = Approach 3 (the law fitted to every point) / Approach 2 (a parabola per "
             "budget); ±a = 95% half-width of the exponent a of N_opt = k.C^a over the "
             "simulated studies; usable = share of studies with >= 2 bracketed budgets"]
    lines += [f"caution: {c}" for c in report["cautions"]]
    lines.append(("plan it: " if "design" in report["plan_command"].split()[1] else
                  "launch it: ") + report["plan_command"])
    return "\n".join(lines)


def _branches(baseline: dict, best: dict) -> str:
    """Why a design cannot be branched, and what branch rows assume."""
    lines = []
    for entry in (baseline, best) if best is not baseline else (baseline,):
        branch = entry.get("branches") or {}
        if "reason" in branch:
            lines.append(f"{entry['name']}: no branch design ({branch['reason']})")
    b = baseline.get("branches") or {}
    lines.append(f"branches (planner.strategy=branches, cooldown_fraction="
                 f"{b.get('cooldown_fraction')}, branch_step_multiple="
                 f"{b.get('branch_step_multiple')}): each trunk trained once, a cooldown per "
                 f"budget; {ASSUMPTION}")
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

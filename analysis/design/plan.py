"""A searched design as a normal sweep: the config that plans exactly its runs, and its files.

The design becomes a family whose members list the budgets they run at (as the demo family
does) and ``budgets.flops`` = the design's budgets; ``flame plan`` of that config gives the
design's runs, with the same run_ids as the experiment's own plan wherever a (budget, member)
is in both, and its replicates as ``planner.seeds``. Members the design does not run are left
out of the written family, so ``flame fit``'s selection on that sweep picks among the members
the design ran.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from analysis.config import family_config
from analysis.design.simulate import Design
from analysis.design_settings import ShapeGrid
from sweep.config import plan_study, read_plan, write_plan_text
from sweep.errors import ConfigError
from sweep.family import FamilyConfig, GridConfig, Member, build_family
from sweep.io import PLAN_CSV, run_dir
from sweep.schema import plain


def search_members(family: FamilyConfig, new: ShapeGrid) -> list[Member]:
    """The family's members, then ``design.new_shapes`` not already among them (built with
    the family's base and ratios, as a grid family's members are)."""
    members = build_family(family)
    if not (new.hidden_size and new.num_layers):
        return members
    grid = GridConfig(list(new.hidden_size), list(new.num_layers))
    extra = build_family(dataclasses.replace(family, members=None, grid=grid))
    known = {m.name for m in members}
    return members + [m for m in extra if m.name not in known]


def design_config(study: Any, design: Design) -> dict[str, Any]:
    """The study's config (a typed whole config, as the CLI passes it) as a mapping, with its
    family and budgets replaced by the design's (new shapes it trains added as members)."""
    data = yaml.safe_load(study.to_yaml())
    family = family_config(data)
    members = build_family(family)
    if family.members:
        specs = [{k: v for k, v in plain(m).items() if v is not None} for m in family.members]
    else:  # a grid family: members are hidden_size x num_layers, in build_family's order
        specs = [{"hidden_size": m.arch.hidden_size, "num_layers": m.arch.num_layers}
                 for m in members]
    runs_at: dict[str, list[float]] = {}
    for run in design.runs:
        runs_at.setdefault(run.member.name, []).append(run.budget)
    chosen = [dict(spec, name=m.name, budgets=sorted(runs_at[m.name]))
              for spec, m in zip(specs, members) if m.name in runs_at]
    known = {m.name for m in members}
    added = {r.member.name: r.member for r in design.runs if r.member.name not in known}
    chosen += [{"name": name, "hidden_size": m.arch.hidden_size, "num_layers": m.arch.num_layers,
                "budgets": sorted(runs_at[name])} for name, m in added.items()]  # new shapes
    data["family"]["members"] = chosen
    data["family"]["grid"] = {"hidden_size": [], "num_layers": []}
    data["budgets"]["flops"] = design.budgets
    # A searched design repeats every (budget, member) equally often: planner.seeds times.
    data["planner"]["seeds"] = 1 + max((r.replicate for r in design.runs), default=0)
    data["planner"]["strategy"] = "branches" if design.branches else "independent"
    return data


def _point(run) -> tuple:
    return (round(run.budget), run.member.name, run.replicate)


def write_design_plan(sweep_dir: Path, study: Any, design: Design) -> Path:
    """plan.csv + config.yaml of ``design`` in ``sweep_dir`` (refused over a launched sweep
    whose plan differs); returns plan.csv's path. ``study`` is the typed whole config; the
    design's config is typed by the same class (``type(study).from_cfg``): analysis never
    imports the whole config's schema, which sits above it (conf)."""
    config = type(study).from_cfg(design_config(study, design))
    the_plan, settings = plan_study(config)
    # The config must reproduce the design's points exactly, or nothing is written (as
    # branches: the same budget, member and seed; the run_ids are the branches' own).
    wanted = {_point(r) for r in design.runs}
    got = {_point(r) for r in the_plan.runs if r.role != "trunk"}
    if got != wanted:
        raise RuntimeError(f"the design's config plans {len(got)} points, not its "
                           f"{len(wanted)}")
    got = {r.run_id for r in the_plan.runs}
    plan_path = Path(sweep_dir) / PLAN_CSV
    if plan_path.is_file():
        previous = {row.run_id for row in read_plan(sweep_dir)}
        started = [rid for rid in previous if run_dir(sweep_dir, rid).is_dir()]
        if previous != got and started:
            raise ConfigError(f"sweep_dir={sweep_dir}: a launched sweep ({len(started)} runs "
                              "started) with another plan; give a new sweep_dir for the "
                              "design, or design.write_plan=false")
    write_plan_text(Path(sweep_dir), the_plan, settings, config.to_yaml())
    return plan_path

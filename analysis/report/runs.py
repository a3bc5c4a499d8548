"""The report's sections about the study itself: what was planned, the runs' states and cost,
the runs that failed or were excluded and why, the configuration, every run, the source files."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from analysis.fit.points import TRUNK_REASON, load_sweep_results
from analysis.fit.result import FitResult
from analysis.report.answer import headline_exponent
from analysis.report.extras import COMPARE_DIR, DESIGN_JSON
from analysis.report.page import MAX_RUN_ROWS, Section, Table, cut_note, frame_table, mapping_table
from analysis.report.states import RunStates
from sweep import records
from sweep.errors import ConfigError
from sweep.io import CONFIG_YAML, FIGURES_DIR, FIT_JSON, PLAN_CSV, RESULTS_CSV, SELECTION_CSV
from trainers.settings import trainer_config

RUN_COLUMNS = ("run_id", "member", "budget", "n_active_flame", "tokens", "train_iters",
               "status", "flag", "final_val_loss", "iterations_done", "gpu_hours",
               "gpu_hours_spent", "reason")


BRANCH_COLUMNS = ("role", "parent", "branch_step")


def headline(status: RunStates, fit: FitResult | None) -> str:
    runs = f"{status.total} planned runs: {status.summary()}"
    if fit is None:
        return f"{runs}; not fitted yet"
    law = headline_exponent(fit)
    return f"{runs}; {fit.n_used} runs fitted" + (f", {law}" if law else "")


def study_section(config: dict, plan: pd.DataFrame) -> Section:
    """What was studied, in one table, and the budgets it planned."""
    section = Section("study", "Study", layout="grid")
    if not config:
        section.notes.append(f"no {CONFIG_YAML} (a sweep planned before flame wrote one)")
    group = lambda key: config.get(key) or {}  # noqa: E731
    facts = {"experiment": config.get("experiment_name"),
             "family": f"{group('family').get('name')}: {plan['member'].nunique()} members",
             "budgets (FLOPs)": group("budgets").get("flops"),
             "trainer": group("trainer").get("name"),
             "recipe": ", ".join(f"{k}={v}" for k, v in group("training").items()
                                 if k in ("lr", "min_lr", "decay_style", "weight_decay",
                                          "seed")),
             "cluster": f"{group('cluster').get('name')} ({group('cluster').get('executor')})",
             "N (fit.n_column)": group("fit").get("n_column"),
             "accounting": f"{config.get('accounting')}, FLOPs = {config.get('flops_formula')}",
             "target budgets": group("fit").get("target_budgets")}
    section.items.append(mapping_table("study-facts", "What was studied", facts, CONFIG_YAML))
    section.items.append(budget_table(config, plan))
    return section


def budget_table(config: dict, plan: pd.DataFrame) -> Table:
    counts = plan.groupby("budget").agg(runs=("run_id", "size"), flops=("flops", "sum"),
                                        gpu_hours=("gpu_hours", "sum")).reset_index()
    listed = set((config.get("budgets") or {}).get("flops") or [])
    counts["in budgets.flops"] = [b in listed for b in counts["budget"]]
    counts.columns = ["budget (FLOPs)", "runs", "planned FLOPs", "planned GPU-hours",
                      "in budgets.flops"]
    return frame_table("config-budgets", "Budgets", counts, f"{PLAN_CSV}, {CONFIG_YAML}")


def member_table(plan: pd.DataFrame, n_column: str | None) -> Table:
    n_col = n_column if n_column in plan.columns else "n_active_flame"
    cols = [c for c in ("member", "num_layers", "hidden_size", "num_experts", "moe_router_topk",
                        n_col, "n_total_flame") if c in plan.columns]
    members = plan.groupby("member", sort=False)[cols[1:]].first().reset_index()
    members["budgets"] = plan.groupby("member", sort=False)["budget"].apply(list).to_numpy()
    return frame_table("config-members", f"Family members (N = {n_col})", members, PLAN_CSV)


def devices_per_run(config: dict) -> int:
    """The devices one run's job holds, as the launcher shapes it: a trainer whose config sets
    the job's shape (Megatron's trainer.nodes x trainer.gpus_per_node) decides, else
    cluster.nodes x cluster.gpus_per_node (config.yaml's groups); at least 1 (a CPU run holds
    one device)."""
    try:
        trainer = trainer_config(config.get("trainer") or {})
    except (ConfigError, TypeError, ValueError):  # no or an older config.yaml
        trainer = None
    if hasattr(trainer, "gpus_per_node"):  # the trainer shapes the job (Megatron's ranks)
        nodes, gpus = trainer.nodes, trainer.gpus_per_node
    else:
        cluster = config.get("cluster") or {}
        nodes, gpus = cluster.get("nodes", 1), cluster.get("gpus_per_node", 0)
    try:
        return max(1, int(nodes) * int(gpus))
    except (TypeError, ValueError):  # a hand-edited config.yaml: one per run
        return 1


def fit_exclusions(sweep_dir: Path, fit: FitResult | None) -> pd.DataFrame | None:
    """Per run of results.csv, why the fit left it out ("" when used): results.csv read
    again with the settings fit.json records, by the fit's own rules (analysis/data.py), so
    exclude_budgets, drop_highest_loss, duplicates and unusable values are named per run."""
    if fit is None or fit.input.kind != "sweep":
        return None
    try:
        points = load_sweep_results(sweep_dir / RESULTS_CSV, fit.fit_settings())
    except (ConfigError, OSError, TypeError, ValueError):  # results.csv gone or rewritten
        return None
    if "run_id" not in points.columns:
        return None
    return pd.DataFrame({"run_id": points["run_id"].astype(str),
                         "fit_excluded": points["excluded_reason"].astype(str)})


def runs_section(sweep_dir: Path, config: dict, plan: pd.DataFrame,
                 results: pd.DataFrame | None, status: RunStates,
                 fit: FitResult | None = None) -> Section:
    section = Section("runs", "Runs and cost")
    devices = devices_per_run(config)
    states = pd.DataFrame([{"state": r.state, "attempts": r.attempts,
                            "elapsed_h": r.elapsed_s / 3600, "planned_gpu_hours": r.gpu_hours_est}
                           for r in status.runs])
    by_state = states.groupby("state", sort=False).agg(
        runs=("state", "size"), attempts=("attempts", "sum"),
        wall_hours=("elapsed_h", "sum"), planned_gpu_hours=("planned_gpu_hours", "sum"))
    by_state.columns = ["runs", "attempts", "wall-clock hours", "planned GPU-hours"]
    section.items.append(frame_table("runs-states", "Runs by state (the ledger now)",
                                     by_state.reset_index(), f"runs/*/state.json, {PLAN_CSV}"))
    section.items.append(cost_table(plan, results, status, devices))
    if results is None:
        section.notes.append(f"no {RESULTS_CSV} yet: `flame collect` writes it (losses, flags)")
    problems = problem_runs(plan, results, status, fit_exclusions(sweep_dir, fit))
    if problems.empty:
        section.notes.append("no failed, cancelled or excluded runs")
    else:
        section.items.append(frame_table(
            "runs-problems", "Failed, cancelled or excluded runs, with their reasons",
            problems.head(MAX_RUN_ROWS),
            f"runs/<run_id>/state.json (state, error), {RESULTS_CSV} (flag, reason), "
            f"{FIT_JSON} settings (fit_excluded)",
            cut_note(len(problems), "these runs")))
    return section


def cost_table(plan: pd.DataFrame, results: pd.DataFrame | None, status: RunStates,
               devices: int) -> Table:
    """Planned vs spent compute. Spent FLOPs: each run's planned FLOPs x the fraction of its
    iterations done (results.csv); without results.csv, the completed runs' planned FLOPs."""
    if results is not None and {"iterations_done", "train_iters"} <= set(results.columns):
        done = (results["iterations_done"].fillna(0) / results["train_iters"]).clip(0, 1)
        spent_flops, flops_src = float((done * results["flops"]).sum()), RESULTS_CSV
    else:
        finished = {r.run_id for r in status.runs if r.state == records.COMPLETED}
        spent_flops = float(plan.loc[plan["run_id"].isin(finished), "flops"].sum())
        flops_src = f"runs/*/state.json, {PLAN_CSV}"
    wall = sum(r.elapsed_s for r in status.runs) / 3600 * devices
    rows = [["FLOPs", float(plan["flops"].sum()), spent_flops, f"{PLAN_CSV} flops; {flops_src}"],
            ["device-hours (wall time x devices per run)", float(plan["gpu_hours"].sum()), wall,
             f"{PLAN_CSV} gpu_hours; runs/*/state.json started_at..ended_at"]]
    if results is not None and "gpu_hours_spent" in results and \
            results["gpu_hours_spent"].notna().any():
        spent = results.dropna(subset=["gpu_hours_spent"])
        rows.append(["GPU-hours in training steps (runs reporting them)",
                     float(spent["gpu_hours"].sum()), float(spent["gpu_hours_spent"].sum()),
                     f"{RESULTS_CSV} gpu_hours, gpu_hours_spent"])
    frame = pd.DataFrame(rows, columns=["quantity", "planned", "spent", "from"])
    return frame_table("runs-cost", "Cost: planned vs spent", frame,
                       f"{PLAN_CSV}, {RESULTS_CSV}, runs/*/state.json")


def problem_runs(plan: pd.DataFrame, results: pd.DataFrame | None, status: RunStates,
                 excluded: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every run that ended without completing (failed, timed out, cancelled, unreadable
    state), that collect did not flag ok, or that the fit left out (``excluded``: run_id,
    fit_excluded), with why; runs still queued or running are only counted (runs by state)."""
    ledger = pd.DataFrame([{"run_id": r.run_id, "member": r.member, "budget": r.budget,
                            "state": r.state, "attempts": r.attempts, "job_id": r.job_id,
                            "error": r.error or r.reason or ""} for r in status.runs])
    if results is not None and {"flag", "reason"} <= set(results.columns):
        flags = results[["run_id", "member", "budget", "flag", "reason"]].copy()
        flags["reason"] = flags["reason"].astype(object).where(flags["reason"].notna(), "")
        # Earlier plans' runs are in results.csv only (flag unplanned): member, budget from it.
        merged = ledger.merge(flags, on="run_id", how="outer", suffixes=("", "_results"))
        for col in ("member", "budget"):
            merged[col] = merged[col].fillna(merged.pop(f"{col}_results"))
    else:
        merged = ledger.assign(flag=None, reason="")
    if excluded is not None:
        merged = merged.merge(excluded, on="run_id", how="left")
        merged["fit_excluded"] = merged["fit_excluded"].fillna("")
    else:
        merged["fit_excluded"] = ""
    waiting = merged["state"].isin([records.PLANNED, *records.ACTIVE])
    bad = merged["state"].ne(records.COMPLETED) | (merged["flag"].notna() &
                                                         merged["flag"].ne("ok"))
    # A trunk is left out of the fit by design (its branches are the points): not a problem.
    bad |= merged["fit_excluded"].ne("") & merged["fit_excluded"].ne(TRUNK_REASON)
    return merged.loc[bad & ~waiting].reset_index(drop=True)


def config_section(config: dict, plan: pd.DataFrame) -> Section:
    """The family's members, then every config group key by key (the study's config.yaml)."""
    section = Section("config", "Family members and configuration", layout="grid")
    section.items.append(member_table(plan, (config.get("fit") or {}).get("n_column")))
    top = {k: v for k, v in config.items() if not isinstance(v, dict)}
    section.items.append(mapping_table("config-study", "Study", top, CONFIG_YAML))
    for key, caption in (("family", "Family (shape rules)"), ("training", "Recipe (training)"),
                         ("trainer", "Trainer"), ("planner", "Planner"), ("cluster", "Cluster"),
                         ("fit", "Fit settings")):
        group = config.get(key)
        if isinstance(group, dict):
            shown = {k: v for k, v in group.items() if k != "members"}
            section.items.append(mapping_table(f"config-{key}", caption, shown, CONFIG_YAML))
    return section


def all_runs_section(plan: pd.DataFrame, results: pd.DataFrame | None) -> Section:
    frame, source = (plan, PLAN_CSV) if results is None else (results, RESULTS_CSV)
    section = Section("all-runs", "All runs")
    columns = [c for c in RUN_COLUMNS if c in frame.columns]
    if "role" in frame.columns and frame["role"].dropna().astype(str).ne("").any():
        # A branch study: which runs are trunks (listed, never fitted) and whose branch is whose.
        at = columns.index("train_iters") + 1 if "train_iters" in columns else len(columns)
        columns[at:at] = [c for c in BRANCH_COLUMNS if c in frame.columns]
    section.items.append(frame_table("all-runs-table", f"{len(frame)} runs ({source} has "
                                     "every column)", frame[columns].head(MAX_RUN_ROWS), source,
                                     cut_note(len(frame))))
    return section


def sources_section(sweep_dir: Path) -> Section:
    """The files this page was made from: modification time, size, SHA-256."""
    names = [CONFIG_YAML, PLAN_CSV, RESULTS_CSV, FIT_JSON, SELECTION_CSV, DESIGN_JSON]
    paths = [sweep_dir / n for n in names]
    paths += sorted((sweep_dir / FIGURES_DIR).glob("*.svg"))
    paths += sorted((sweep_dir / COMPARE_DIR).glob("*/compare.*"))
    rows = [{"file": str(p.relative_to(sweep_dir)),
             "modified (UTC)": datetime.fromtimestamp(p.stat().st_mtime, UTC)
             .strftime("%Y-%m-%d %H:%M:%S"), "bytes": p.stat().st_size,
             "sha256": hashlib.sha256(p.read_bytes()).hexdigest()[:16]}
            for p in paths if p.is_file()]
    section = Section("sources", "Source files")
    section.items.append(frame_table("sources-table", "The files this page was rendered from",
                                     pd.DataFrame(rows), str(sweep_dir)))
    return section

"""``flame report``: a study as one self-contained HTML page, ``<sweep_dir>/report.html``.

The page is rendered by Jinja2 (``analysis/templates/report.html.j2``) from the files the other
stages wrote: config.yaml, plan.csv, the ledger (``runs/*/state.json``), results.csv, fit.json,
selection.csv and the SVG figures of ``figures/`` (matplotlib's, embedded as data URIs, so the
page needs no network, no server and no other file). Every table and figure names the file its
numbers came from. A section whose file does not exist yet (mid-study: no fit) says so; the
optional sections (routing health, design, comparisons) appear when their files do, and are
rendered from whatever columns or keys those files have.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import jinja2
import pandas as pd
from omegaconf import DictConfig

from jobs import ledger as ledger_states
from jobs.status import SweepStatus, collect as ledger_status
from sweep.arch import ConfigError
from sweep.config import load_sweep_config
from sweep.io import (CONFIG_YAML, FIGURES_DIR, FIT_JSON, PLAN_CSV, RESULTS_CSV, SELECTION_CSV,
                      atomic_write_text)

REPORT_HTML = "report.html"
DESIGN_JSON = "design.json"
COMPARE_DIR = "compare"
# Rows of the all-runs table: beyond this the page would be megabytes; results.csv has them all.
MAX_RUN_ROWS = 5000
RUN_COLUMNS = ("run_id", "member", "budget", "n_active_flame", "tokens", "train_iters",
               "status", "flag", "final_val_loss", "iterations_done", "gpu_hours",
               "gpu_hours_spent", "reason")
ROUTING_PREFIX = "routing_"
# The fit's own figures, in the order the page shows them (plots.py writes them).
FIT_FIGURES = {"isoflop": "isoFLOP curves", "scaling_laws": "N_opt and D_opt vs compute",
               "loss_frontier": "Loss frontier", "residuals": "Approach 3 residuals"}
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("analysis", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
    trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class Cell:
    """One table cell."""

    text: str
    """What the page shows (numbers to 4 significant digits)."""
    sort: str
    """What the column sorts by (the full-precision number, or the text)."""
    title: str = ""
    """Tooltip: the value exactly as the source file has it, when ``text`` rounds it."""
    numeric: bool = False
    """A number (right-aligned)."""


@dataclass(frozen=True)
class Table:
    """A sortable table and the file its numbers came from."""

    id: str
    """HTML id (tests and links find it by this)."""
    caption: str
    """One line over the table."""
    columns: list[str]
    """Column headers."""
    rows: list[list[Cell]]
    """Cells, row by row."""
    source: str
    """The file(s) the numbers came from, relative to the sweep directory."""
    note: str = ""
    """A line under the table (e.g. rows left out)."""
    kind: str = "table"


@dataclass(frozen=True)
class Figure:
    """A matplotlib SVG embedded as a data URI."""

    id: str
    """HTML id."""
    caption: str
    """One line under the figure."""
    uri: str
    """``data:image/svg+xml;base64,...``."""
    source: str
    """The SVG file, relative to the sweep directory."""
    kind: str = "figure"


@dataclass
class Section:
    """One section of the page: paragraphs, then tables and figures in order."""

    id: str
    """HTML id (the table of contents links to it)."""
    title: str
    """Heading."""
    notes: list[str] = field(default_factory=list)
    """Paragraphs (what is missing and why, warnings)."""
    items: list[Table | Figure] = field(default_factory=list)
    """Tables and figures."""
    layout: str = "column"
    """column (one item under the other) or grid (small tables side by side)."""


def report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default=None,
                        help=f"where to write the page (default <sweep_dir>/{REPORT_HTML})")


def report_command(cfg: DictConfig, args: argparse.Namespace) -> int:
    """``flame report``: write the page; print its path."""
    sweep_dir = Path(cfg.sweep_dir)
    output = getattr(args, "output", None)
    path = write_report(sweep_dir, Path(output) if output else None)
    print(f"wrote {path}")
    return 0


def write_report(sweep_dir: Path, output: Path | None = None) -> Path:
    """Render the report of ``sweep_dir`` into ``output`` (default ``<sweep_dir>/report.html``,
    written atomically); return its path."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / PLAN_CSV).is_file():
        raise ConfigError(f"sweep_dir={sweep_dir}: no {PLAN_CSV}, so there is no study to "
                          f"report; run `flame plan sweep_dir={sweep_dir}` first")
    path = output or sweep_dir / REPORT_HTML
    atomic_write_text(path, render_report(sweep_dir))
    return path


def render_report(sweep_dir: Path) -> str:
    """The page's HTML."""
    sweep_dir = Path(sweep_dir).resolve()
    config = load_sweep_config(sweep_dir) or {}
    plan = _read_csv(sweep_dir / PLAN_CSV)
    results = _read_csv(sweep_dir / RESULTS_CSV)
    fit = _read_json(sweep_dir / FIT_JSON)
    status = ledger_status(sweep_dir)
    sections = [study_section(config, plan),
                runs_section(sweep_dir, config, plan, results, status),
                *fit_sections(sweep_dir, fit),
                selection_section(sweep_dir, fit),
                *optional_sections(sweep_dir, results),
                config_section(config, plan),
                all_runs_section(plan, results),
                sources_section(sweep_dir)]
    sections = [s for s in sections if s is not None]
    return TEMPLATES.get_template("report.html.j2").render(
        title=f"flame study: {config.get('experiment_name', sweep_dir.name)}",
        sweep_dir=str(sweep_dir), sections=sections, headline=headline(status, fit),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


# -- cells and generic tables ------------------------------------------------------------------

def cell(value: Any) -> Cell:
    """A cell: numbers to 4 significant digits (sorting by the full value), blanks as '-'."""
    if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
        return Cell("-", "")  # None, NaN, pandas' NA
    if isinstance(value, bool):
        return Cell("yes" if value else "no", str(int(value)))
    if isinstance(value, int):
        return Cell(str(value), str(value), numeric=True)
    if isinstance(value, float):
        text = f"{value:.4g}"
        return Cell(text, repr(value), "" if text == repr(value) else repr(value), True)
    if isinstance(value, (list, tuple)):
        return Cell(", ".join(cell(v).text for v in value), json.dumps(value, default=str),
                    json.dumps(value, default=str))
    if isinstance(value, dict):
        text = json.dumps(value, default=str)
        return Cell(text, text)
    return Cell(str(value), str(value))


def _plain(value: Any) -> Any:
    """numpy/pandas scalars as Python ones (pandas gives numpy types)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict)) \
        else value


def frame_table(id: str, caption: str, frame: pd.DataFrame, source: str,
                note: str = "") -> Table:
    """A table of every column of ``frame``."""
    rows = [[cell(_plain(v)) for v in record] for record in frame.itertuples(index=False)]
    return Table(id, caption, [str(c) for c in frame.columns], rows, source, note)


def records_table(id: str, caption: str, records: list[dict], source: str) -> Table:
    """A table of a list of dicts, nested keys flattened to ``a.b`` columns."""
    return frame_table(id, caption, pd.json_normalize(records, sep="."), source)


def mapping_table(id: str, caption: str, mapping: dict, source: str) -> Table:
    """A key/value table of a (nested) mapping: nested keys as ``a.b``."""
    flat = pd.json_normalize([mapping], sep=".").iloc[0].to_dict() if mapping else {}
    return Table(id, caption, ["key", "value"],
                 [[cell(k), cell(_plain(v))] for k, v in flat.items()], source)


def figure(sweep_dir: Path, name: str, caption: str, id: str | None = None) -> Figure | None:
    """``figures/<name>.svg`` as a data URI, or None when it was not written."""
    path = sweep_dir / FIGURES_DIR / f"{name}.svg"
    return svg_figure(path, caption, f"{FIGURES_DIR}/{name}.svg", id or f"fig-{name}")


def svg_figure(path: Path, caption: str, source: str, id: str) -> Figure | None:
    if not path.is_file():
        return None
    uri = "data:image/svg+xml;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return Figure(id, caption, uri, source)


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype={"run_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not a readable CSV ({err}); re-create it with the command "
                          "that writes it") from None


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not readable JSON ({err}); re-create it with the command "
                          "that writes it") from None


# -- sections ----------------------------------------------------------------------------------

def headline(status: SweepStatus, fit: dict | None) -> str:
    runs = f"{status.total} planned runs: {status.summary()}"
    if fit is None:
        return f"{runs}; not fitted yet"
    law = fit.get("approach3") or {}
    a = law.get("a") if law.get("a") is not None else (fit.get("approach2") or {}).get("a")
    return (f"{runs}; {fit.get('n_used')} runs fitted" +
            (f", N_opt ∝ C^{a:.3f}" if isinstance(a, (int, float)) else ""))


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


def runs_section(sweep_dir: Path, config: dict, plan: pd.DataFrame,
                 results: pd.DataFrame | None, status: SweepStatus) -> Section:
    section = Section("runs", "Runs and cost")
    devices = max(1, int((config.get("cluster") or {}).get("gpus_per_node") or 0))
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
    problems = problem_runs(plan, results, status)
    if problems.empty:
        section.notes.append("no failed, cancelled or excluded runs")
    else:
        section.items.append(frame_table(
            "runs-problems", "Failed, cancelled or excluded runs, with their reasons",
            problems.head(MAX_RUN_ROWS),
            f"runs/<run_id>/state.json (state, error), {RESULTS_CSV} (flag, reason)",
            _cut(len(problems), "these runs")))
    return section


def cost_table(plan: pd.DataFrame, results: pd.DataFrame | None, status: SweepStatus,
               devices: int) -> Table:
    """Planned vs spent compute. Spent FLOPs: each run's planned FLOPs x the fraction of its
    iterations done (results.csv); without results.csv, the completed runs' planned FLOPs."""
    if results is not None and {"iterations_done", "train_iters"} <= set(results.columns):
        done = (results["iterations_done"].fillna(0) / results["train_iters"]).clip(0, 1)
        spent_flops, flops_src = float((done * results["flops"]).sum()), RESULTS_CSV
    else:
        finished = {r.run_id for r in status.runs if r.state == "completed"}
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


def problem_runs(plan: pd.DataFrame, results: pd.DataFrame | None,
                 status: SweepStatus) -> pd.DataFrame:
    """Every run that ended without completing (failed, timed out, cancelled, unreadable
    state) or that collect did not flag ok, with why; runs still queued or running are only
    counted (runs by state)."""
    ledger = pd.DataFrame([{"run_id": r.run_id, "member": r.member, "budget": r.budget,
                            "state": r.state, "attempts": r.attempts, "job_id": r.job_id,
                            "error": r.error or r.reason or ""} for r in status.runs])
    if results is not None and {"flag", "reason"} <= set(results.columns):
        flags = results[["run_id", "member", "budget", "flag", "reason"]].copy()
        flags["reason"] = flags["reason"].fillna("")
        # Earlier plans' runs are in results.csv only (flag unplanned): member, budget from it.
        merged = ledger.merge(flags, on="run_id", how="outer", suffixes=("", "_results"))
        for col in ("member", "budget"):
            merged[col] = merged[col].fillna(merged.pop(f"{col}_results"))
    else:
        merged = ledger.assign(flag=None, reason="")
    waiting = merged["state"].isin([ledger_states.PLANNED, *ledger_states.ACTIVE])
    bad = merged["state"].ne(ledger_states.COMPLETED) | (merged["flag"].notna() &
                                                         merged["flag"].ne("ok"))
    return merged.loc[bad & ~waiting].reset_index(drop=True)


def fit_sections(sweep_dir: Path, fit: dict | None) -> list[Section]:
    if fit is None:
        return [Section("fit", "Fit", [f"no {FIT_JSON} yet: `flame fit` (or the end of "
                                       "`flame run`) writes it; this page shows the study so "
                                       "far"])]
    return [fit_overview(sweep_dir, fit), approach2_section(sweep_dir, fit),
            approach3_section(sweep_dir, fit), extrapolation_section(fit)]


def fit_overview(sweep_dir: Path, fit: dict) -> Section:
    section = Section("fit", "Fit: isoFLOP curves")
    section.notes.append(f"{fit.get('n_used')} runs fitted, {fit.get('n_excluded')} excluded "
                         f"({_counts(fit.get('excluded'))}); N = "
                         f"{(fit.get('input') or {}).get('n_column')}  ({FIT_JSON})")
    section.notes += [f"warning [{w.get('code')}]: {w.get('message')}"
                      for w in fit.get("warnings") or []]
    section.items += [f for f in (figure(sweep_dir, "isoflop", FIT_FIGURES["isoflop"]),) if f]
    return section


def _counts(counts: dict | None) -> str:
    return ", ".join(f"{k}: {v}" for k, v in (counts or {}).items()) or "none"


def approach2_section(sweep_dir: Path, fit: dict) -> Section:
    a2 = fit.get("approach2") or {}
    section = Section("approach2", "Approach 2: isoFLOP minima and N_opt / D_opt power laws")
    budgets = pd.DataFrame(a2.get("budgets") or [])
    if not budgets.empty:
        section.items.append(frame_table(
            "approach2-budgets", "Each budget's parabola: used, or the reason it is not",
            budgets, f"{FIT_JSON} approach2.budgets"))
    if a2.get("a") is None:
        section.notes.append(f"power laws: not fitted ({a2.get('reason')})")
    else:
        laws = pd.DataFrame([
            {"law": "N_opt = k C^a", "exponent": a2["a"], "interval": a2.get("a_ci"),
             "k": a2.get("k"), "k interval": a2.get("k_ci")},
            {"law": "D_opt = k_d C^b", "exponent": a2["b"], "interval": a2.get("b_ci"),
             "k": a2.get("k_d"), "k interval": None},
            {"law": "L_opt = k C^e", "exponent": (a2.get("loss_law") or {}).get("exponent"),
             "interval": None, "k": (a2.get("loss_law") or {}).get("k"), "k interval": None}])
        section.items.append(frame_table(
            "approach2-laws", f"Power laws ({a2.get('bootstrap')} {a2.get('bootstrap_kind') or ''}"
            " bootstrap resamples for the intervals)", laws, f"{FIT_JSON} approach2"))
    for key in ("note", "interval_reason"):
        if a2.get(key):
            section.notes.append(f"{key.replace('_', ' ')}: {a2[key]}")
    for name in ("scaling_laws", "loss_frontier"):
        if (f := figure(sweep_dir, name, FIT_FIGURES[name])) is not None:
            section.items.append(f)
    return section


def approach3_section(sweep_dir: Path, fit: dict) -> Section:
    a3 = fit.get("approach3") or {}
    section = Section("approach3", "Approach 3: L(N, D) = E + A/N^alpha + B/D^beta")
    if a3.get("E") is None:
        section.notes.append(f"not fitted: {a3.get('reason')}")
        return section
    ci, se = a3.get("ci") or {}, a3.get("se") or {}
    params = pd.DataFrame([{"parameter": name, "estimate": a3.get(name),
                            "interval low": (ci.get(name) or [None, None])[0],
                            "interval high": (ci.get(name) or [None, None])[1],
                            "std. error": se.get(name)}
                           for name in ("E", "A", "B", "alpha", "beta", "a", "b")])
    section.items.append(frame_table(
        "approach3-params", f"Parameters ({a3.get('n_points')} points, summed Huber objective "
        f"{cell(a3.get('objective')).text}; {a3.get('bootstrap')} bootstrap resamples: "
        f"{a3.get('bootstrap_method') or 'none'})", params, f"{FIT_JSON} approach3"))
    if a3.get("interval_reason"):
        section.notes.append(f"no interval: {a3['interval_reason']}")
    if (f := figure(sweep_dir, "residuals", FIT_FIGURES["residuals"])) is not None:
        section.items.append(f)
    return section


def extrapolation_section(fit: dict) -> Section:
    ex = fit.get("extrapolation") or {}
    section = Section("extrapolation", "Extrapolation check: refit without the largest budget")
    if "reason" in ex:
        section.notes.append(f"not applicable: {ex['reason']}")
        return section
    obs = ex.get("observed") or {}
    section.notes.append(f"held out {cell(ex.get('held_out_budget')).text} FLOPs "
                         f"({ex.get('n_held_out_points')} runs; fitted on "
                         f"{ex.get('n_train_points')}); observed from the {obs.get('source')}")
    rows = []
    for name in ("approach2", "approach3"):
        e = ex.get(name) or {}
        rows.append({"approach": name, "predicted N_opt": e.get("n_opt_pred"),
                     "observed N_opt": obs.get("n_opt"),
                     "log10 error": e.get("n_opt_log10_error"),
                     "predicted loss": e.get("loss_opt_pred"),
                     "observed loss": obs.get("loss_opt"),
                     "relative loss error": e.get("loss_opt_rel_error"),
                     "not applicable": e.get("reason", "")})
    section.items.append(frame_table("extrapolation-table", "Predicted vs observed at the "
                                     "held-out budget", pd.DataFrame(rows),
                                     f"{FIT_JSON} extrapolation"))
    return section


def selection_section(sweep_dir: Path, fit: dict | None) -> Section | None:
    if fit is None:
        return None
    sel = fit.get("selection") or {}
    section = Section("selection", "Selection: configurations for the target budgets")
    table = _read_csv(sweep_dir / SELECTION_CSV)
    if table is None:
        section.notes.append(f"no {SELECTION_CSV}: {sel.get('reason') or 'no fitted law'}")
        return section
    section.notes.append(f"law: {sel.get('approach')}" +
                         (f"; members: not applicable ({sel['reason']})"
                          if sel.get("reason") else ""))
    section.notes += [f"warning: {w}" for w in sel.get("warnings") or []]
    section.items.append(frame_table("selection-table", "Every column of selection.csv",
                                     table, SELECTION_CSV))
    return section


def optional_sections(sweep_dir: Path, results: pd.DataFrame | None) -> list[Section]:
    found = [routing_section(sweep_dir, results), design_section(sweep_dir),
             *comparison_sections(sweep_dir), other_figures(sweep_dir)]
    return [s for s in found if s is not None]


def other_figures(sweep_dir: Path) -> Section | None:
    """SVGs of figures/ that no section above shows (a figure added by a newer stage)."""
    shown = {*FIT_FIGURES, "routing", "design"}
    extra = [p for p in sorted((sweep_dir / FIGURES_DIR).glob("*.svg")) if p.stem not in shown]
    if not extra:
        return None
    return Section("other-figures", "Other figures", items=[
        svg_figure(p, p.stem.replace("_", " "), f"{FIGURES_DIR}/{p.name}", f"fig-{p.stem}")
        for p in extra])


def routing_section(sweep_dir: Path, results: pd.DataFrame | None) -> Section | None:
    columns = [] if results is None else [c for c in results.columns
                                          if c.startswith(ROUTING_PREFIX)]
    if not columns:
        return None
    section = Section("routing", "Routing health")
    keys = [c for c in ("run_id", "member", "budget") if c in results.columns]
    section.items.append(frame_table("routing-table", "Router statistics per run",
                                     results[keys + columns].head(MAX_RUN_ROWS),
                                     f"{RESULTS_CSV} {ROUTING_PREFIX}*", _cut(len(results))))
    if (f := figure(sweep_dir, "routing", "Routing health")) is not None:
        section.items.append(f)
    return section


def design_section(sweep_dir: Path) -> Section | None:
    design = _read_json(sweep_dir / DESIGN_JSON)
    if design is None:
        return None
    section = Section("design", "Sweep design")
    records = _records(design)
    if records:
        section.items.append(records_table("design-table", "Candidate designs", records,
                                           DESIGN_JSON))
    scalars = {k: v for k, v in design.items() if not isinstance(v, (list, dict))}
    if scalars:
        section.items.append(mapping_table("design-settings", "Design settings", scalars,
                                           DESIGN_JSON))
    if (f := figure(sweep_dir, "design", "Design: precision vs cost")) is not None:
        section.items.append(f)
    return section


def _records(document: Any) -> list[dict]:
    """The rows a JSON document holds: a list of objects, or the first such list among its
    values, or an object of objects (name -> fields, the name as a ``name`` column)."""
    if isinstance(document, list):
        return [r for r in document if isinstance(r, dict)]
    if not isinstance(document, dict):
        return []
    for value in document.values():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return value
    objects = {k: v for k, v in document.items() if isinstance(v, dict)}
    if objects and len(objects) == len(document):
        return [{"name": k, **v} for k, v in objects.items()]
    for value in objects.values():
        if (rows := _records(value)):
            return rows
    return []


def comparison_sections(sweep_dir: Path) -> Iterable[Section]:
    for path in sorted((sweep_dir / COMPARE_DIR).glob("*/compare.json")):
        other, source = path.parent.name, f"{COMPARE_DIR}/{path.parent.name}"
        document = _read_json(path) or {}
        section = Section(f"compare-{other}", f"Comparison with {other}")
        for key, value in document.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                section.items.append(records_table(f"compare-{other}-{key}", key, value,
                                                   f"{source}/compare.json {key}"))
        rest = {k: v for k, v in document.items()
                if not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))}
        if rest:
            section.items.append(mapping_table(f"compare-{other}-values", "Values", rest,
                                               f"{source}/compare.json"))
        if (f := svg_figure(path.parent / "compare.svg", f"{other} vs this study",
                            f"{source}/compare.svg", f"fig-compare-{other}")) is not None:
            section.items.append(f)
        yield section


def all_runs_section(plan: pd.DataFrame, results: pd.DataFrame | None) -> Section:
    frame, source = (plan, PLAN_CSV) if results is None else (results, RESULTS_CSV)
    section = Section("all-runs", "All runs")
    columns = [c for c in RUN_COLUMNS if c in frame.columns]
    section.items.append(frame_table("all-runs-table", f"{len(frame)} runs ({source} has "
                                     "every column)", frame[columns].head(MAX_RUN_ROWS), source,
                                     _cut(len(frame))))
    return section


def _cut(rows: int, what: str = "the runs") -> str:
    """The note under a table cut to MAX_RUN_ROWS rows ("" when it is not)."""
    return (f"the first {MAX_RUN_ROWS:,} of {rows:,} rows; the source file has all of {what}"
            if rows > MAX_RUN_ROWS else "")


def sources_section(sweep_dir: Path) -> Section:
    """The files this page was made from: modification time, size, SHA-256."""
    names = [CONFIG_YAML, PLAN_CSV, RESULTS_CSV, FIT_JSON, SELECTION_CSV, DESIGN_JSON]
    paths = [sweep_dir / n for n in names]
    paths += sorted((sweep_dir / FIGURES_DIR).glob("*.svg"))
    paths += sorted((sweep_dir / COMPARE_DIR).glob("*/compare.*"))
    rows = [{"file": str(p.relative_to(sweep_dir)),
             "modified (UTC)": datetime.fromtimestamp(p.stat().st_mtime, timezone.utc)
             .strftime("%Y-%m-%d %H:%M:%S"), "bytes": p.stat().st_size,
             "sha256": hashlib.sha256(p.read_bytes()).hexdigest()[:16]}
            for p in paths if p.is_file()]
    section = Section("sources", "Source files")
    section.items.append(frame_table("sources-table", "The files this page was rendered from",
                                     pd.DataFrame(rows), str(sweep_dir)))
    return section

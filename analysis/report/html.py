"""``flame report``: a study as one self-contained HTML page, ``<sweep_dir>/report.html``.

The page is rendered by Jinja2 (``analysis/report/templates/report.html.j2``) from the files the
other stages wrote: config.yaml, plan.csv, the run records (``runs/*/state.json``, read through
``sweep.records``), results.csv, fit.json, selection.csv and the SVG figures of ``figures/``
(matplotlib's, embedded as data URIs, so the page needs no network, no server and no other
file). Every table and figure names the file its
numbers came from. A section whose file does not exist yet (mid-study: no fit) says so; the
optional sections (design, comparisons) appear when their files do, routing health when some run
has routing data (a routing_status other than unknown), and are rendered from whatever columns
or keys those files have.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import jinja2
from omegaconf import DictConfig

from analysis.config import read_config
from analysis.fit.release_check import read_link
from analysis.fit.result import read_fit
from analysis.report.answer import answer_sections, release_headline
from analysis.report.extras import optional_sections
from analysis.report.fit import fit_sections, selection_section
from analysis.report.page import read_csv_file
from analysis.report.runs import (
    all_runs_section,
    config_section,
    headline,
    runs_section,
    sources_section,
    study_section,
)
from analysis.report.states import run_states
from sweep.commands import check_sweep_dir
from sweep.errors import ConfigError
from sweep.io import FIT_JSON, PLAN_CSV, RESULTS_CSV, atomic_write_text

REPORT_HTML = "report.html"
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("analysis.report", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
    trim_blocks=True, lstrip_blocks=True)


def report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default=None,
                        help=f"where to write the page (default <sweep_dir>/{REPORT_HTML}); "
                        "never a file of the sweep's own (only <sweep_dir>/NAME.html there); "
                        "'-': to stdout, writing nothing (a full or read-only disk)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing --output file that is not a flame report")


def report_command(cfg: DictConfig, args: argparse.Namespace) -> int:
    """``flame report``: write the page; print its path."""
    output = getattr(args, "output", None)
    if output == "-":  # reads the sweep, writes no file (a full or read-only disk)
        sweep_dir = Path(str(cfg.get("sweep_dir")))
        require_plan(sweep_dir)
        sys.stdout.write(render_report(sweep_dir))
        return 0
    sweep_dir = check_sweep_dir(cfg.get("sweep_dir"))
    path = write_report(sweep_dir, Path(output) if output else None,
                        force=bool(getattr(args, "force", False)))
    print(f"wrote {path}")
    return 0


def write_report(sweep_dir: Path, output: Path | None = None, force: bool = False) -> Path:
    """Render the report of ``sweep_dir`` into ``output`` (default ``<sweep_dir>/report.html``,
    written atomically); return its path. ``force``: replace an existing ``output`` that is not
    a flame report (a sweep's own file is refused even then)."""
    sweep_dir = Path(sweep_dir)
    require_plan(sweep_dir)
    path = output or sweep_dir / REPORT_HTML
    check_output(sweep_dir, path, force)
    atomic_write_text(path, render_report(sweep_dir))
    return path


def require_plan(sweep_dir: Path) -> None:
    """A ConfigError unless ``sweep_dir`` has a plan (a study to report)."""
    if not (Path(sweep_dir) / PLAN_CSV).is_file():
        raise ConfigError(f"sweep_dir={sweep_dir}: no {PLAN_CSV}, so there is no study to "
                          f"report; run `flame plan sweep_dir={sweep_dir}` first")


def check_output(sweep_dir: Path, path: Path, force: bool = False) -> None:
    """A ConfigError unless the page may be written at ``path``: inside the sweep only as
    ``<sweep_dir>/NAME.html`` (every other file there is the study's input or state: plan.csv,
    results.csv, runs/...), never a directory, and never over a file that is not a flame report
    unless ``force``."""
    sweep, target = Path(sweep_dir).resolve(), Path(path).resolve()
    fix = f"pass --output elsewhere (default {Path(sweep_dir) / REPORT_HTML})"
    if target == sweep or sweep in target.parents:
        if target.parent != sweep or target.suffix.lower() not in (".html", ".htm"):
            raise ConfigError(f"--output={path}: inside the sweep directory, which holds the "
                              f"study's own files; only <sweep_dir>/NAME.html may be written "
                              f"there: {fix}")
    if target.is_dir():
        raise ConfigError(f"--output={path}: is a directory; {fix}")
    if target.exists() and not force and not is_flame_report(target):
        raise ConfigError(f"--output={path}: exists and is not a flame report; pass --force "
                          f"to replace it, or {fix}")


def is_flame_report(path: Path) -> bool:
    """Whether ``path`` is a page ``flame report`` wrote: its generator tag (or, on a page
    older than the tag, the header's "by flame report") in its first 64 KiB."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(65536)
    except OSError:
        return False
    return any(mark in head for mark in (b'<meta name="generator" content="flame report">',
                                         b"by\n    <code>flame report</code>"))


def render_report(sweep_dir: Path) -> str:
    """The page's HTML."""
    sweep_dir = Path(sweep_dir).resolve()
    config = read_config(sweep_dir) or {}
    plan = read_csv_file(sweep_dir / PLAN_CSV)
    results = read_csv_file(sweep_dir / RESULTS_CSV)
    fit = read_fit(sweep_dir) if (sweep_dir / FIT_JSON).is_file() else None
    status = run_states(sweep_dir, plan)
    link = read_link(sweep_dir)  # a release: its law is its source's, it has no fit of its own
    # The answer first (picks, law, prediction check, downstream), then the evidence.
    sections = [*answer_sections(sweep_dir, fit),
                study_section(config, plan),
                runs_section(sweep_dir, config, plan, results, status, fit),
                *(fit_sections(sweep_dir, fit) if link is None else []),
                selection_section(sweep_dir, fit),
                *optional_sections(sweep_dir, results),
                config_section(config, plan),
                all_runs_section(plan, results),
                sources_section(sweep_dir)]
    sections = [s for s in sections if s is not None]
    return TEMPLATES.get_template("report.html.j2").render(
        title=f"flame study: {config.get('experiment_name', sweep_dir.name)}",
        sweep_dir=str(sweep_dir), sections=sections,
        headline=headline(status, fit) if link is None else release_headline(status, link),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))

"""``flame collect`` and ``flame fit``: thin wrappers over analysis.collect and analysis.report."""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console

from sweep.arch import ConfigError


def _sweep_dir(cfg: DictConfig) -> Path:
    if not cfg.get("sweep_dir"):
        raise ConfigError("sweep_dir: not set; pass sweep_dir=DIR")
    return Path(str(cfg.sweep_dir))


def collect(cfg: DictConfig, args: argparse.Namespace) -> int:
    """runs/*/ -> <sweep_dir>/results.csv, then a count of runs by flag."""
    from analysis.collect import collect_sweep, flag_table
    table = collect_sweep(_sweep_dir(cfg), cfg)
    console = Console()
    console.print(flag_table(table))
    console.print(f"wrote {_sweep_dir(cfg) / 'results.csv'} ({len(table)} runs)")
    from analysis.collect import cost_line
    if (line := cost_line(table)) is not None:
        console.print(line)
    return 0


def fit_arguments(parser: argparse.ArgumentParser) -> None:
    """`flame fit` has no flags of its own: everything is in the `fit` config group."""


def fit(cfg: DictConfig, args: argparse.Namespace) -> int:
    """Fit <sweep_dir>/results.csv (or results=FILE.csv) and print the summary."""
    from analysis.report import fit_sweep, summary_text
    sweep_dir = _sweep_dir(cfg)
    results = cfg.get("results")
    result = fit_sweep(sweep_dir, cfg, Path(str(results)) if results else None)
    print(summary_text(result), end="")
    print(f"wrote {sweep_dir / 'fit.json'}, figures in {sweep_dir / 'figures'}")
    return 0

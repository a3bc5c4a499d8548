"""``flame collect``, ``flame fit`` and ``flame compare``: thin wrappers over the stages."""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from sweep.errors import ConfigError


def _sweep_dir(cfg: DictConfig) -> Path:
    if not cfg.get("sweep_dir"):
        raise ConfigError("sweep_dir: not set; pass sweep_dir=DIR")
    return Path(str(cfg.sweep_dir))


def collect(cfg: DictConfig, args: argparse.Namespace) -> int:
    """runs/*/ -> <sweep_dir>/results.csv, then a count of runs by flag."""
    from analysis.collect import collect_sweep, cost_line, flag_table
    table = collect_sweep(_sweep_dir(cfg), cfg)
    console = Console()
    console.print(flag_table(table))
    console.print(f"wrote {_sweep_dir(cfg) / 'results.csv'} ({len(table)} runs)")
    if (line := cost_line(table)) is not None:
        console.print(line)
    return 0


def fit_arguments(parser: argparse.ArgumentParser) -> None:
    """`flame fit` has no flags of its own: everything is in the `fit` config group."""


def fit(cfg: DictConfig, args: argparse.Namespace) -> int:
    """Fit <sweep_dir>/results.csv (or results=FILE.csv) and print the summary."""
    from analysis.fit import fit_sweep, summary_text
    results = Path(str(cfg.results)) if cfg.get("results") else None
    out_dir = fit_output_dir(cfg, results)
    # a CSV's family is the one the user names: the default experiment's would be a guess
    named = {o.lstrip("+~").split("=")[0] for o in getattr(args, "overrides", [])}
    result = fit_sweep(out_dir, cfg, results, csv_family=bool(named & {"experiment", "family"}))
    print(summary_text(result), end="")
    print(f"wrote {out_dir / 'fit.json'}, figures in {out_dir / 'figures'}")
    return 0


def fit_output_dir(cfg: DictConfig, results: Path | None) -> Path:
    """Where `flame fit` writes: the sweep directory, except for ``results=FILE.csv`` without
    an explicit ``sweep_dir``: then ``<FILE's folder>/<FILE's stem>_fit/``, beside the CSV.

    Fitting some CSV must not overwrite the default sweep's (``out/<experiment>``) fit.json,
    selection.csv and figures (issue 11, item 4). ``sweep_dir`` counts as not given while it
    is still the config's interpolated default (``out/${experiment_name}``): a value typed on
    the command line or in an experiment file is a plain path.
    """
    if results is None:
        return _sweep_dir(cfg)
    raw = OmegaConf.to_container(cfg, resolve=False).get("sweep_dir")
    if raw and "${" not in str(raw):
        return _sweep_dir(cfg)
    return results.parent / f"{results.stem}_fit"


def compare_arguments(parser: argparse.ArgumentParser) -> None:
    """`flame compare A B`: two fitted sweep directories."""
    # Optional to argparse so that `flame compare --help` works; compare() requires both.
    parser.add_argument("a", type=Path, nargs="?", help="fitted sweep directory: the study "
                        "whose compute advantage is measured")
    parser.add_argument("b", type=Path, nargs="?", help="fitted sweep directory: the study "
                        "it is measured against")
    parser.add_argument("--bootstrap", type=int, default=None,
                        help="resamples of each study (default: as each was fitted)")


def compare(cfg: None, args: argparse.Namespace) -> int:
    """The effective compute multiplier of A over B: a table, compare.json/.csv, a figure."""
    from analysis.compare import write_comparison
    if args.a is None or args.b is None:
        raise ConfigError("give two fitted sweep directories: flame compare A B (e.g. "
                          "flame compare out/demo out/demo_dense)")
    result, out = write_comparison(args.a, args.b, args.bootstrap)
    Console(width=120).print(compare_table(result))
    print(f"wrote {out}/compare.json, compare.csv, compare.png, compare.svg")
    return 0


def compare_table(result: dict):
    """The printed table of a compare.json dict."""
    from rich.table import Table
    ci = result["multiplier_ci"]
    summary = "-" if result["multiplier"] is None else f"{result['multiplier']:.3g}" + (
        f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")
    table = Table(title=f"Compute multiplier of A = {result['a']} over B = {result['b']}: "
                        f"{summary} ({result['multiplier_note']}; "
                        f"{int(result['confidence'] * 100)}% bootstrap interval, "
                        f"{result['bootstrap']} resamples). "
                        f"{_sentence(result['crossover']['note'])}.", title_justify="left")
    for col in ("budget C", "A's optimal loss", "B's loss at C", "B's compute for it",
                "multiplier", "interval", "note"):
        table.add_column(col, justify="right")
    for row in result["budgets"]:
        lo, hi = row["multiplier_lo"], row["multiplier_hi"]
        table.add_row(f"{row['budget']:.3g}", f"{row['loss_a']:.4g}", f"{row['loss_b_law']:.4g}",
                      f"{row['compute_b']:.3g}", f"{row['multiplier']:.3g}",
                      "-" if lo is None or lo != lo else f"[{lo:.3g}, {hi:.3g}]",
                      "extrapolated" if row["extrapolated"] else "")
    return table


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]

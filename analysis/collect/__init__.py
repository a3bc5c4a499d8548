"""Collect: ``runs/*/`` -> ``results.csv`` (one row per planned run, flagged ok, diverged, nan,
incomplete or missing with a reason) and routing health (``routing.csv``)."""

from analysis.collect.results import collect_run, collect_sweep, cost_line, flag_table, read_csv
from analysis.collect.routing import ROUTING_COLUMNS, ROUTING_CSV, routing_figure

__all__ = ["collect_sweep", "collect_run", "cost_line", "flag_table", "read_csv",
           "ROUTING_COLUMNS", "ROUTING_CSV", "routing_figure"]

"""The runs' states as the report shows them, from the sweep directory alone: plan.csv and each
run's record (``runs/<run_id>/state.json``, read through ``sweep.records``). No scheduler is
asked (the report is a picture of the files), and nothing of ``jobs`` is imported: each run's
state, attempts, elapsed time and reason come from ``sweep.runstate``, the code ``flame status``
uses too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sweep.records import scan_records
from sweep.runstate import RunState, count_states, state_of


@dataclass(frozen=True)
class RunStates:
    """Every planned run's state, in plan order, and the counts by state."""

    runs: tuple[RunState, ...]
    """In plan order."""
    counts: dict[str, int]
    """State -> runs (every shown state, zeros included)."""

    @property
    def total(self) -> int:
        return len(self.runs)

    def summary(self) -> str:
        """``3 completed, 1 failed``: the states that have runs, in the records' order."""
        return ", ".join(f"{n} {s}" for s, n in self.counts.items() if n) or "no runs"


def run_states(sweep_dir: Path, plan: pd.DataFrame) -> RunStates:
    """The state of each run of ``plan`` (plan.csv's table) from its record."""
    found, corrupt = scan_records(sweep_dir)
    runs = tuple(state_of(str(row["run_id"]), str(row.get("member", "")),
                          float(row.get("budget", 0.0)), float(row.get("gpu_hours", 0.0) or 0.0),
                          found, corrupt)
                 for row in plan.to_dict(orient="records"))
    return RunStates(runs, count_states(runs))

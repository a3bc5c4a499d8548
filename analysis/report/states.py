"""The runs' states as the report shows them, from the sweep directory alone: plan.csv and each
run's record (``runs/<run_id>/state.json``, read through ``sweep.records``). No scheduler is
asked (the report is a picture of the files), and nothing of ``jobs`` is imported: the states,
attempts, elapsed times and reasons are computed here from the records, as ``flame status``
computes them from the same records."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sweep import records
from sweep.records import scan_records
from sweep.runstate import RunState, corrupt_state, run_state

SHOWN_STATES = (*records.STATES, records.CORRUPT)
"""The states counted: the records', and ``corrupt`` (an unreadable state.json)."""


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
    runs = []
    for row in plan.to_dict(orient="records"):
        run_id = str(row["run_id"])
        common = {"run_id": run_id, "member": str(row.get("member", "")),
                  "budget": float(row.get("budget", 0.0)),
                  "gpu_hours_est": float(row.get("gpu_hours", 0.0) or 0.0)}
        if run_id in corrupt:
            runs.append(corrupt_state(run_id, common["member"], common["budget"],
                                      common["gpu_hours_est"], str(corrupt[run_id])))
            continue
        runs.append(run_state(run_id, common["member"], common["budget"],
                              common["gpu_hours_est"], found.get(run_id)))
    counts = Counter(r.state for r in runs)
    return RunStates(tuple(runs), {s: counts.get(s, 0) for s in SHOWN_STATES})

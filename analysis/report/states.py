"""The runs' states as the report shows them, from the sweep directory alone: plan.csv and each
run's record (``runs/<run_id>/state.json``, read through ``sweep.records``). No scheduler is
asked (the report is a picture of the files), and nothing of ``jobs`` is imported: the states,
attempts, elapsed times and reasons are computed here from the records, as ``flame status``
computes them from the same records."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from sweep import records
from sweep.records import RunRecord, scan_records

SHOWN_STATES = (*records.STATES, records.CORRUPT)
"""The states counted: the records', and ``corrupt`` (an unreadable state.json)."""


@dataclass(frozen=True)
class RunState:
    """One planned run's state, as its record has it."""

    run_id: str
    """The run."""
    member: str
    """Its family member."""
    budget: float
    """Its isoFLOP budget."""
    state: str
    """Its record's state (``planned`` without a record; ``corrupt`` when unreadable)."""
    attempts: int
    """Starts so far, requeues included."""
    job_id: str | None
    """Scheduler id of the latest attempt."""
    elapsed_s: float
    """Wall time from its start to its end (or now); 0 while queued."""
    gpu_hours_est: float
    """The planner's GPU-hour estimate (plan.csv)."""
    error: str | None
    """The last line of its error tail (for ``corrupt``: what is wrong with the file)."""
    reason: str | None = None
    """Why a ``submitted`` run went back to the queue, when its record says."""


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


def seconds_between(start: str | None, end: str | None) -> float:
    """Seconds from the ISO time ``start`` to ``end`` (or now); 0 without a start."""
    if not start:
        return 0.0
    stop = datetime.fromisoformat(end) if end else datetime.now(UTC)
    return max(0.0, (stop - datetime.fromisoformat(start)).total_seconds())


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
            runs.append(RunState(**common, state=records.CORRUPT, attempts=0, job_id=None,
                                 elapsed_s=0.0, error=str(corrupt[run_id])))
            continue
        runs.append(_state(found.get(run_id) or RunRecord(run_id=run_id), common))
    counts = Counter(r.state for r in runs)
    return RunStates(tuple(runs), {s: counts.get(s, 0) for s in SHOWN_STATES})


def _state(rec: RunRecord, common: dict) -> RunState:
    error = (rec.error_tail or "").strip().splitlines()
    # A queued run (a requeued one included) is not using time now: no growing clock.
    queued = rec.state in (records.PLANNED, records.SUBMITTED)
    return RunState(**common, state=rec.state, attempts=int(rec.attempts),
                    job_id=rec.last_job_id,
                    elapsed_s=0.0 if queued else seconds_between(rec.started_at, rec.ended_at),
                    error=error[-1] if error else None,
                    reason=rec.pending_reason if rec.state == records.SUBMITTED else None)

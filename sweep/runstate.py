"""One planned run's state as the sweep directory says it (its plan row and its record): what
``flame status`` and the report both show, computed in this one place from the files alone."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sweep import records
from sweep.records import RunRecord

SHOWN_STATES = (*records.STATES, records.CORRUPT)
"""The states shown and counted: the records', and ``corrupt`` (an unreadable state.json)."""


def seconds_between(start: str | None, end: str | None) -> float:
    """Seconds from the ISO time ``start`` to ``end`` (or now); 0 without a start."""
    if not start:
        return 0.0
    stop = datetime.fromisoformat(end) if end else datetime.now(UTC)
    return max(0.0, (stop - datetime.fromisoformat(start)).total_seconds())


@dataclass(frozen=True)
class RunState:
    """One planned run's state, as its record has it."""

    run_id: str
    """The run."""
    member: str
    """Its family member (architecture) name."""
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
    """The last line of its error tail (for ``corrupt``: what is wrong with the file, the fix)."""
    reason: str | None = None
    """Why a ``submitted`` run is pending: the scheduler's reason, else its record's."""


def run_state(run_id: str, member: str, budget: float, gpu_hours: float,
              rec: RunRecord | None, pending: str | None = None) -> RunState:
    """The state of one planned run from its record (None: never launched); ``pending``: the
    scheduler's reason it is queued now, which wins over the one the record keeps."""
    rec = rec or RunRecord(run_id=run_id)
    error = (rec.error_tail or "").strip().splitlines()
    # A queued run (a requeued one included) is not using time now: no growing clock.
    queued = rec.state in (records.PLANNED, records.SUBMITTED)
    return RunState(run_id, member, budget, rec.state, int(rec.attempts), rec.last_job_id,
                    0.0 if queued else seconds_between(rec.started_at, rec.ended_at),
                    gpu_hours, error[-1] if error else None,
                    (pending or rec.pending_reason) if rec.state == records.SUBMITTED else None)


def corrupt_state(run_id: str, member: str, budget: float, gpu_hours: float,
                  why: str) -> RunState:
    """A run whose state.json cannot be read: ``why`` names the file and the fix."""
    return RunState(run_id, member, budget, records.CORRUPT, 0, None, 0.0, gpu_hours, why)


def state_of(run_id: str, member: str, budget: float, gpu_hours: float,
             found: Mapping[str, RunRecord], corrupt: Mapping[str, Exception],
             pending: str | None = None) -> RunState:
    """One planned run's state from ``scan_records``' two answers: its unreadable file's error,
    else its record (None: never launched)."""
    if run_id in corrupt:
        return corrupt_state(run_id, member, budget, gpu_hours, str(corrupt[run_id]))
    return run_state(run_id, member, budget, gpu_hours, found.get(run_id), pending)


def count_states(runs: Iterable[RunState]) -> dict[str, int]:
    """Runs by state, every shown state present (zeros included), in ``SHOWN_STATES`` order."""
    counts = Counter(r.state for r in runs)
    return {s: counts.get(s, 0) for s in SHOWN_STATES}

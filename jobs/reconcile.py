"""Reconcile the ledger with the scheduler: what the jobs could not record themselves.

The executor says what its scheduler knows (``Executor.reconcile``): on SLURM one ``sacct``
and one ``squeue`` call per poll for the whole sweep (ends: time-limit kills, cancels, node
failures, failing setup lines; jobs pending again after a requeue, and why), locally the
workers that died while training. Used by ``flame status`` (jobs.status) and by ``flame
launch`` before it selects what to submit (jobs.launch).
"""

from __future__ import annotations

from pathlib import Path

from jobs import ledger
from jobs.executors.base import Executor, Reconciled

__all__ = ["Reconciled", "reconcile"]


def reconcile(sweep_dir: Path, executor: Executor,
              records: dict[str, ledger.RunRecord] | None = None) -> Reconciled:
    """Record what the ledger missed for every queued or running run (with a job id).
    ``records``: the ledger as the caller just read it (else read here)."""
    records = ledger.read_all(sweep_dir) if records is None else records
    active = {rid: rec for rid, rec in records.items()
              if rec.state in ledger.ACTIVE and rec.job_ids}
    return executor.reconcile(sweep_dir, active)

"""Reconcile the ledger with the scheduler: what the jobs could not record themselves.

SLURM: one ``sacct`` call (ends: time-limit kills, cancels, node failures, failing setup
lines) and one ``squeue`` call (jobs pending again after a requeue, and why) per poll for the
whole sweep. Local: workers that died while training. Used by ``flame status`` (jobs.status)
and by ``flame launch`` before it selects what to submit (jobs.launch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jobs import ledger, slurm
from jobs.settings import ClusterSettings
from jobs.sweepdir import jobs_dir
from jobs.task import pid_alive


def _stderr_tail(sweep_dir: Path, job_id: str) -> str | None:
    path = jobs_dir(sweep_dir) / "logs" / job_id / f"{job_id}_0_log.err"
    try:
        return ledger.tail(path.read_text(errors="replace"))
    except OSError:
        return None


@dataclass(frozen=True)
class Reconciled:
    """What one reconcile found."""

    changed: int
    """Runs whose ledger entry it changed."""
    pending: dict[str, str]
    """Run id -> squeue's reason, for every queued or running run whose job SLURM holds
    pending now (not written to each state.json: on a big sweep reasons change every poll)."""


def reconcile(sweep_dir: Path, settings: ClusterSettings) -> Reconciled:
    """Record what the ledger missed: jobs the scheduler ended without the task recording it
    (time limit kill, cancel, setup failure, node failure), jobs it put back in its queue, or
    local workers that died. One ``sacct`` and one ``squeue`` call for the whole sweep."""
    records = ledger.read_all(sweep_dir)
    active = {rid: rec for rid, rec in records.items()
              if rec.state in ledger.ACTIVE and rec.job_ids}
    changed, pending = 0, {}
    if settings.executor == "slurm":
        slurm.ensure_client(settings)
        infos = slurm.job_states(rec.last_job_id for rec in active.values())
        queue = slurm.queue_entries() if active else {}
        changed += _forgotten(sweep_dir, active, infos)
        changed += _requeued(sweep_dir, active, queue)
        pending = {rid: queue[rec.last_job_id].reason for rid, rec in active.items()
                   if queue.get(rec.last_job_id, _RUNNING).state == "PENDING"}
        for run_id, rec in active.items():
            job_id = rec.last_job_id
            if job_id in queue:  # slurmctld still holds it (a node failure's requeue): not
                continue         # ended, whatever accounting's latest record says
            info = infos.get(job_id)
            new = slurm.SACCT_TO_LEDGER.get(info.state) if info else None
            if new not in ledger.TERMINAL:
                continue
            tail = _stderr_tail(sweep_dir, job_id)
            if new == ledger.COMPLETED:  # the task records this itself before its job ends
                new = ledger.FAILED
                tail = f"job {job_id} ended COMPLETED without the run recording its end\n{tail}"
            note = f"scheduler: job {job_id} {info.state}"
            if ledger.transition(sweep_dir, run_id, new, error_tail=f"{note}\n{tail or ''}"):
                changed += 1
    else:
        for run_id, rec in active.items():
            job_id = rec.last_job_id
            pid = job_id.removeprefix("local-")
            # The pid is submitit's controller; the task training the run is its child and
            # outlives a controller killed alone: it still holds the run's train.lock.
            if (rec.state == ledger.RUNNING and job_id.startswith("local-") and pid.isdigit()
                    and not pid_alive(int(pid)) and ledger.lock_holder(sweep_dir, run_id) is None):
                if ledger.transition(sweep_dir, run_id, ledger.FAILED,
                                     error_tail=f"local worker {pid} exited while training "
                                                f"this run (killed?)"):
                    changed += 1
    return Reconciled(changed, pending)


_RUNNING = slurm.QueueEntry("RUNNING", "None")


def _requeued(sweep_dir: Path, active: dict[str, ledger.RunRecord],
              queue: dict[str, slurm.QueueEntry]) -> int:
    """A ``running`` run whose job squeue shows pending again (a node failure or ``scontrol
    requeue`` put it back) goes back to ``submitted``. ``active`` was read before squeue was
    asked: a run whose task started since then has one more attempt and is left alone."""
    changed = 0
    for run_id, rec in active.items():
        job_id = rec.last_job_id
        entry = queue.get(job_id)
        if rec.state == ledger.RUNNING and entry is not None and entry.state == "PENDING":
            changed += ledger.requeued(sweep_dir, run_id, job_id, entry.reason,
                                       attempts=rec.attempts)
    return changed


FORGOTTEN_AFTER_S = 600.0
"""A job neither sacct nor squeue knows this long after the run's last ledger change is gone
(its cluster's state was reset, or accounting purged it): the run is marked failed."""


def _forgotten(sweep_dir: Path, active: dict[str, ledger.RunRecord], infos: dict) -> int:
    """Fail active runs whose job the scheduler has no record of (else they wait forever)."""
    unknown = {rid: rec for rid, rec in active.items() if rec.last_job_id not in infos
               and ledger.seconds_between(rec.updated_at, None) > FORGOTTEN_AFTER_S}
    if not unknown:
        return 0
    queued = slurm.queued_jobs()  # slurmdbd can lag or be down while slurmctld has the job
    changed = 0
    for run_id, rec in unknown.items():
        job_id = rec.last_job_id
        if job_id.split("_")[0] in queued:
            continue
        note = (f"scheduler: no record of job {job_id} in sacct or squeue "
                f"{FORGOTTEN_AFTER_S:.0f} s after its last change (cluster state reset or "
                "accounting purged); `flame resubmit --failed` submits it again")
        changed += ledger.transition(sweep_dir, run_id, ledger.FAILED, error_tail=note) is not None
    return changed

"""The few SLURM client calls the SLURM executor makes itself (submission goes through
submitit): one ``sacct`` for a whole sweep's states, ``squeue`` for jobs sacct does not know,
job look-up by name, ``scancel``, ``scontrol release``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from jobs.cluster import LocalCluster, default_state_dir
from jobs.executors.base import JobId, SchedulerError
from sweep.errors import ConfigError
from sweep.records import CANCELLED, COMPLETED, FAILED, RUNNING, SUBMITTED, TIMEOUT

# SLURM's job states (sacct's and squeue's State column, first word), as the code names them.
PENDING, REQUEUED, REQUEUE_HOLD = "PENDING", "REQUEUED", "REQUEUE_HOLD"
S_RUNNING, COMPLETING, SUSPENDED, PREEMPTED = "RUNNING", "COMPLETING", "SUSPENDED", "PREEMPTED"
S_COMPLETED, S_TIMEOUT, S_CANCELLED, S_FAILED = "COMPLETED", "TIMEOUT", "CANCELLED", "FAILED"
OUT_OF_MEMORY, NODE_FAIL = "OUT_OF_MEMORY", "NODE_FAIL"
BOOT_FAIL, DEADLINE = "BOOT_FAIL", "DEADLINE"
UNKNOWN = "UNKNOWN"
"""What flame records for an accounting line without a state."""

# sacct state -> ledger state for a job that ended without the task recording it itself
# (killed by the time limit, cancelled, node failure, setup line failed, out of memory).
SACCT_TO_LEDGER = {
    PENDING: SUBMITTED, REQUEUED: SUBMITTED, REQUEUE_HOLD: SUBMITTED,
    S_RUNNING: RUNNING, COMPLETING: RUNNING, SUSPENDED: RUNNING,
    S_COMPLETED: COMPLETED, S_TIMEOUT: TIMEOUT, S_CANCELLED: CANCELLED,
    S_FAILED: FAILED, OUT_OF_MEMORY: FAILED, NODE_FAIL: FAILED,
    BOOT_FAIL: FAILED, DEADLINE: TIMEOUT, PREEMPTED: RUNNING,
}
_RANGE = re.compile(r"^(\d+)_\[([^\]]+)\]$")


def ensure_client(name: str, use_local_cluster: bool) -> None:
    """Make sbatch/sacct usable from this process, or raise a ConfigError saying how
    (``name``: the cluster config's, for the message)."""
    if shutil.which("sbatch") is None:
        raise ConfigError("cluster=slurm: `sbatch` is not on PATH; run on a SLURM login node, "
                          "or start the local one with `flame cluster up`")
    if use_local_cluster and not os.environ.get("SLURM_CONF"):
        local = LocalCluster(default_state_dir())
        if not local.slurm_conf.exists():
            raise ConfigError(f"cluster.use_local_cluster=true but {local.slurm_conf} does not "
                              "exist: run `flame cluster up` (or export SLURM_CONF)")
        os.environ["SLURM_CONF"] = str(local.slurm_conf)
    # A login node without a reachable controller (no slurm.conf, DNS SRV lookup failing)
    # makes sbatch die mid-submission: ask the controller first, before anything is written.
    try:
        _run(["scontrol", "ping"], timeout=30)
    except SchedulerError as err:
        detail = str(err).splitlines()[-1] if str(err) else "no answer"
        raise ConfigError(f"cluster={name}: the SLURM controller does not answer "
                          f"(`scontrol ping`: {detail[-200:]}); run on a login node of the "
                          "cluster, export SLURM_CONF, or use cluster=slurm_local after "
                          "`flame cluster up`") from None


def _run(cmd: list[str], timeout: float = 60) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{' '.join(cmd[:3])} ... timed out after {timeout:.0f} s") from None
    if out.returncode != 0:
        raise SchedulerError(f"{' '.join(cmd[:3])} ... failed ({out.returncode}): "
                           f"{out.stderr.strip()[-500:]}")
    return out.stdout


@dataclass(frozen=True)
class JobInfo:
    """One array task (or job) as the scheduler reports it."""

    state: str
    """sacct/squeue state, first word (``CANCELLED by 0`` -> ``CANCELLED``)."""
    elapsed_s: float
    """Elapsed seconds of the latest attempt."""


def _expand(job_id: str) -> list[str]:
    """``12_[3-5,9%4]`` -> ``12_3 12_4 12_5 12_9`` (pending array tasks share one line)."""
    m = _RANGE.match(job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def job_states(jobs: Iterable[JobId]) -> dict[str, JobInfo]:
    """States of every task of the given jobs/arrays, by task (``12_3``): ONE sacct call.

    Not submitit's ``SlurmInfoWatcher``: it only follows jobs this process registered (submitit
    ``Job`` objects it created), and a sweep's jobs were submitted by earlier processes; its
    public API has no "state of these job ids" call. The parsing is ours for that reason."""
    bases = sorted({job.job for job in jobs})
    if not bases:
        return {}
    text = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State,ElapsedRaw",
                 "-j", ",".join(bases)])
    out: dict[str, JobInfo] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 3:
            continue
        info = JobInfo(fields[1].split()[0] if fields[1] else UNKNOWN,
                       float(fields[2] or 0))
        for task in _expand(fields[0]):
            out[task] = info
    return out


def queued_jobs() -> set[str]:
    """Ids (array job ids for arrays) of every job slurmctld holds now: pending or running."""
    return set(_run(["squeue", "-h", "-o", "%F"]).split())


@dataclass(frozen=True)
class QueueEntry:
    """A job or array task slurmctld holds now, as ``squeue`` shows it."""

    state: str
    """``PENDING``, ``RUNNING``, ``COMPLETING``, ..."""
    reason: str
    """squeue's %r: why it is pending (``Priority``, ``JobHeldUser``, ``ReqNodeNotAvail``,
    ``BeginTime`` after a requeue, ...); ``None`` when running."""


def queue_entries() -> dict[str, QueueEntry]:
    """Every queued or running job, array tasks one by one (``12_3``): ONE squeue call. squeue
    (slurmctld) rather than sacct: a requeued job is pending here at once, and the reason is
    only here."""
    out: dict[str, QueueEntry] = {}
    for line in _run(["squeue", "-h", "-r", "-o", "%i|%T|%r"]).splitlines():
        job_id, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        for task in _expand(job_id.strip()):
            out[task] = QueueEntry(state.strip(), reason.strip())
    return out


def job_state(job_id: str) -> str | None:
    """squeue's state of one job or array task (``RUNNING``, ``COMPLETING``, ...); None when
    slurmctld no longer holds it."""
    found = _run(["squeue", "-h", "-j", job_id, "-o", "%T"]).split()
    return found[0] if found else None


def find_by_name(name: str) -> str | None:
    """The job id of the job named ``name`` (queued or finished), or None."""
    queued = _run(["squeue", "-h", "-r", "--name", name, "-o", "%F"]).split()
    if queued:
        return queued[0]
    done = _run(["sacct", "-n", "-X", "-P", "-S", "now-7days", "--name", name, "-o", "JobID"])
    ids = [line.split("_")[0] for line in done.split()]
    return ids[0] if ids else None


def scancel(job_ids: Iterable[str]) -> None:
    ids = sorted(set(job_ids))
    if ids:
        _run(["scancel", *ids])


def release(job_id: str) -> None:
    """Let a held job (submitted with ``--hold``) run."""
    _run(["scontrol", "release", job_id])

"""submitit executors from ``ClusterSettings``; every SLURM option through submitit's own
parameters (``slurm_partition``, ``slurm_account``, ``slurm_qos``, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import submitit

from jobs.settings import ClusterSettings


def slurm_parameters(settings: ClusterSettings, name: str, hold: bool = True,
                     dependency: str | None = None) -> dict[str, Any]:
    """AutoExecutor parameters of one array. ``hold``: submitted held, released by the launcher
    once the ledger records the job id, so a launcher killed in between leaves nothing
    running that the ledger does not know (see jobs.launch). ``dependency``: sbatch's
    ``--dependency`` (a branch array's ``afterok:<trunk job>_<task>``), with
    ``--kill-on-invalid-dep=no`` so that a failed trunk leaves its branches pending
    (``DependencyNeverSatisfied``) on every cluster, whatever its ``DependencyParameters``."""
    extra = dict(settings.additional_parameters)
    if hold:
        extra["hold"] = True
    if dependency:
        extra.update(dependency=dependency, kill_on_invalid_dep="no")
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": settings.timeout_min,
        "nodes": settings.nodes,  # one task per node: each runs that node's launcher
        "tasks_per_node": 1,
        "cpus_per_task": settings.cpus_per_task,
        "slurm_signal_delay_s": settings.signal_delay_s,
        "slurm_array_parallelism": settings.array_parallelism,
        "slurm_setup": list(settings.setup),
        "slurm_additional_parameters": extra,
    }
    if settings.gpus_per_node and settings.request_gpus:
        params["gpus_per_node"] = settings.gpus_per_node
    if settings.mem_gb:
        params["mem_gb"] = settings.mem_gb
    for key in ("partition", "account", "qos"):
        if getattr(settings, key):
            params[f"slurm_{key}"] = getattr(settings, key)
    return params


def slurm_executor(settings: ClusterSettings, folder: Path, name: str, hold: bool = True,
                   dependency: str | None = None) -> submitit.AutoExecutor:
    """An executor whose ``batch()`` submits one SLURM array named ``name``."""
    # submitit stops requeuing after this many timeouts; the ledger's cap must decide first
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm",
                                     slurm_max_num_timeout=settings.max_attempts + 1)
    executor.update_parameters(**slurm_parameters(settings, name, hold, dependency))
    return executor


class DryRunSlurmExecutor(submitit.SlurmExecutor):
    """submitit's SlurmExecutor on a machine without SLURM, for ``flame launch --dry-run``: its
    constructor refuses to exist without ``srun`` on PATH (SlurmExecutor.__init__ checks
    ``affinity()``), though writing an sbatch file needs none. Never submits."""

    @classmethod
    def affinity(cls) -> int:
        return 1


def dry_run_executor(settings: ClusterSettings, folder: Path, name: str,
                     dependency: str | None = None) -> DryRunSlurmExecutor:
    """The SlurmExecutor ``slurm_executor`` would wrap, with the same parameters (AutoExecutor's
    generic names, and ``slurm_*`` ones without their prefix, as AutoExecutor passes them)."""
    executor = DryRunSlurmExecutor(folder=folder / "%j", max_num_timeout=settings.max_attempts + 1)
    params = slurm_parameters(settings, name, hold=False, dependency=dependency)
    generic = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    # AutoExecutor's own translation of generic names (timeout_min -> time, ...): what
    # AutoExecutor.update_parameters calls; submitit has no public equivalent.
    executor.update_parameters(**executor._convert_parameters(generic),
                               **{k[len("slurm_"):]: v for k, v in params.items()
                                  if k.startswith("slurm_")})
    return executor


def local_executor(settings: ClusterSettings, folder: Path) -> submitit.AutoExecutor:
    """submitit's LocalExecutor (through AutoExecutor) for the local worker jobs."""
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="local")
    executor.update_parameters(timeout_min=settings.timeout_min, name="flame-worker")
    return executor

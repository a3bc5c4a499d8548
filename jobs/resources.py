"""What one SLURM job asks of a node: CPUs and memory, derived from the node's shape for GPU
jobs, and the lines ``flame launch --dry-run`` and ``flame check`` print about them.

Why derived: a GPU job of 8 Megatron ranks runs 8 processes, their DataLoader workers and
``OMP_NUM_THREADS`` threads each; SLURM's default of one CPU per task and the partition's
default memory (often DefMemPerCPU x 1) would squeeze them onto one core and kill the job on
host memory. ``--exclusive`` gives the job every CPU of its nodes "but is only allocated as
much memory as it requested ... To request all the memory on a node, use --mem=0" (sbatch(1),
SLURM 22.05, --exclusive); and "Beginning with 22.05, srun will not inherit the
--cpus-per-task value requested by salloc or sbatch. It must be requested again with the
call to srun or set with the SRUN_CPUS_PER_TASK environment variable" (sbatch(1),
--cpus-per-task), so the job exports SRUN_CPUS_PER_TASK before submitit's srun.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALL_MEMORY = 0.0
"""``--mem=0``: all of each node's memory (sbatch(1): "a memory size specification of zero is
treated as a special case and grants the job access to all of the memory on each node")."""


@dataclass(frozen=True)
class JobResources:
    """CPUs and memory of one task (= one node: one task per node), with where each came from."""

    cpus_per_task: int
    """sbatch --cpus-per-task (and SRUN_CPUS_PER_TASK)."""
    mem_gb: float | None
    """sbatch --mem in GB; 0 = all of the node's memory; None = the partition's default."""
    cpus_from: str
    """Where the CPU count came from, in words (the key to change)."""
    mem_from: str
    """Where the memory came from, in words."""

    def mem_text(self) -> str:
        """The memory as the dry run prints it."""
        if self.mem_gb is None:
            return "the partition's default (no --mem)"
        if self.mem_gb == ALL_MEMORY:
            return "all of the node's (--mem=0)"
        return f"{self.mem_gb:g} GB (--mem={mem_option(self.mem_gb)})"

    def lines(self, nodes: int, gpus: int) -> list[str]:
        """What a job of this shape asks for, per node, and where it comes from."""
        shape = (f"{nodes} node{'s' if nodes != 1 else ''}, {gpus} "
                 f"GPU{'s' if gpus != 1 else ''} each")
        return [f"job resources per node ({shape}): {self.cpus_per_task} CPUs (--cpus-per-task, "
                f"SRUN_CPUS_PER_TASK; {self.cpus_from}), memory {self.mem_text()} "
                f"({self.mem_from})"]


def mem_option(mem_gb: float) -> str:
    """sbatch's --mem value: whole GB as ``<n>G``, else MB (sbatch's default unit)."""
    if mem_gb == ALL_MEMORY:
        return "0"
    return f"{int(mem_gb)}G" if float(mem_gb).is_integer() else str(int(mem_gb * 1024))


def job_resources(cluster: Any) -> JobResources:
    """CPUs and memory per task of a job of ``cluster``'s shape (a ``ClusterSettings`` after
    ``with_trainer``: ``gpus_per_node`` is the job's). A key the user set wins; a GPU job
    (GPUs requested) takes the node's CPUs and memory in proportion to the GPUs it asks of the
    node (``node_gpus``, else the whole node); a CPU job, one CPU and the partition's memory."""
    gpus = cluster.gpus_per_node if cluster.request_gpus else 0
    if not gpus:
        return JobResources(cluster.cpus_per_task or 1, cluster.mem_gb,
                            "cluster.cpus_per_task" if cluster.cpus_per_task else
                            "a CPU job: 1 unless cluster.cpus_per_task",
                            "cluster.mem_gb" if cluster.mem_gb is not None else
                            "cluster.mem_gb=null")
    node_gpus = cluster.node_gpus or gpus
    share = min(1.0, gpus / node_gpus)
    whole = share == 1.0
    if cluster.cpus_per_task:
        cpus, cpus_from = cluster.cpus_per_task, "cluster.cpus_per_task"
    elif cluster.node_cpus:
        cpus = max(1, int(cluster.node_cpus * share))
        cpus_from = (f"cluster.node_cpus={cluster.node_cpus}" + ("" if whole else
                     f" x {gpus}/{node_gpus} GPUs"))
    else:
        cpus = cluster.cpus_per_gpu * gpus
        cpus_from = (f"cluster.cpus_per_gpu={cluster.cpus_per_gpu} x {gpus} GPUs; set "
                     "cluster.node_cpus to take the node's")
    if cluster.mem_gb is not None:
        return JobResources(cpus, cluster.mem_gb, cpus_from, "cluster.mem_gb")
    if cluster.node_mem_gb:
        mem = float(int(cluster.node_mem_gb * share))
        return JobResources(cpus, mem, cpus_from, f"cluster.node_mem_gb={cluster.node_mem_gb:g}"
                            + ("" if whole else f" x {gpus}/{node_gpus} GPUs"))
    if whole:
        return JobResources(cpus, ALL_MEMORY, cpus_from,
                            "the job takes whole nodes; set cluster.mem_gb to ask less")
    return JobResources(cpus, None, cpus_from, f"{gpus} of {node_gpus} GPUs: set "
                        "cluster.node_mem_gb or cluster.mem_gb")


def signal_lead_s(configured: int, checkpoint_gb: float, write_gb_s: float) -> int:
    """The time-limit signal's lead (sbatch --signal=USR2@S): at least the configured
    ``cluster.signal_delay_s``, and at least SLURM's 60 s signal resolution plus twice the
    time one checkpoint takes to write at ``write_gb_s`` (the run saves at the next iteration
    boundary after the signal, then exits)."""
    return max(int(configured), 60 + int(2 * checkpoint_gb / write_gb_s + 0.999))


__all__ = ["JobResources", "job_resources", "mem_option", "signal_lead_s", "ALL_MEMORY"]

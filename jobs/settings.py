"""The ``cluster`` config group as a typed, validated dataclass (errors name the key to fix)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from omegaconf import MISSING, DictConfig

from jobs.executors.registry import executor_class, names
from sweep.errors import ConfigError
from sweep.schema import to_typed
from trainers.registry import trainer_for
from trainers.settings import trainer_config

EXECUTORS = names()
"""The built-in executors (a plugin is named ``package.module:ClassName``)."""


@dataclass
class ClusterSettings:
    """The ``cluster`` group: where and how jobs run (``conf/cluster/*.yaml``)."""

    name: str = MISSING
    """The config's name (local, slurm, slurm_local, slurm_h100, ...)."""
    executor: str = MISSING
    """``local`` (submitit LocalExecutor on this machine) or ``slurm`` (or a plugin executor,
    ``package.module:ClassName``)."""
    device_peak_flops: float = 989.0e12
    """Peak FLOP/s of one device, for the plan's cost estimate (default: H100 SXM dense bf16)."""
    assumed_mfu: float = 0.35
    """Model FLOPs utilisation the cost estimate assumes."""
    max_attempts: int = 3
    """Starts of one submission, requeues included, before the run is marked ``timeout``."""
    timeout_min: int = 60
    """Wall-time limit of one attempt, minutes (whole minutes for SLURM)."""
    poll_s: float = 10.0
    """Refresh period of ``flame status --watch`` and the blocking wait (s)."""
    wait: bool = True
    """``flame run`` blocks until every run ends (false: submit, return, run it again later)."""
    parallelism: int | None = None
    """local: concurrent runs (null = CPU cores)."""
    threads_per_job: int = 1
    """local: ``FLAME_THREADS`` of each run (never oversubscribe the cores)."""
    use_local_cluster: bool = False
    """slurm: with no ``SLURM_CONF`` in the environment, use ``flame cluster up``'s cluster."""
    partition: str | None = None
    """slurm: ``--partition`` (null = the cluster's default)."""
    account: str | None = None
    """slurm: ``--account``."""
    qos: str | None = None
    """slurm: ``--qos``."""
    gpus_per_node: int = 0
    """slurm: GPUs per node of a job."""
    cpus_per_task: int | None = None
    """slurm: CPUs per task, i.e. per node (one task per node). null: a GPU job takes the
    node's CPUs in proportion to its GPUs (``node_cpus``; unknown: ``cpus_per_gpu`` a GPU), a
    CPU job 1 (jobs/resources.py)."""
    nodes: int = 1
    """slurm: nodes per job, one task each (trainer=megatron: trainer.nodes, see with_trainer)."""
    request_gpus: bool = True
    """slurm: ask for gpus_per_node GPUs (false on a CPU-only cluster such as `flame cluster
    up`'s, where trainer=megatron runs the CPU stand-in)."""
    mem_gb: float | None = None
    """slurm: memory per node in GB (0 = all of each node's memory, sbatch --mem=0). null: a
    GPU job takes the node's memory in proportion to its GPUs (``node_mem_gb``; unknown and
    the whole node: --mem=0), a CPU job the partition's default."""
    node_cpus: int | None = None
    """slurm: CPUs of one compute node (sinfo -o %c; null = unknown)."""
    node_mem_gb: float | None = None
    """slurm: memory of one compute node in GB that jobs may take (sinfo -o %m, in MB; null =
    unknown)."""
    node_gpus: int | None = None
    """slurm: GPUs of one compute node (null = the job's GPUs per node: jobs take whole
    nodes)."""
    cpus_per_gpu: int = 8
    """slurm: CPUs a GPU job asks for per GPU when ``node_cpus`` is unknown (8: one for the
    rank, the rest for its DataLoader workers; any 8-GPU H100 node has >= 64)."""
    checkpoint_write_gb_s: float = 1.0
    """slurm: the rate (GB/s) at which one job writes a checkpoint to the file system holding
    the sweep: the time-limit signal comes at least twice the largest checkpoint's write time
    (plus SLURM's 60 s signal resolution) before the limit."""
    signal_delay_s: int = 120
    """slurm: USR2 this many seconds before the time limit -> checkpoint + requeue (>= 45:
    SLURM's signal timing has ~60 s resolution; more for large checkpoints)."""
    array_parallelism: int = 256
    """slurm: tasks of one array running at once (%N)."""
    max_array_size: int = 1000
    """slurm: tasks per sbatch array (below the cluster's MaxArraySize)."""
    setup: list[str] = field(default_factory=list)
    """slurm: shell lines run before each job (module load, source an environment)."""
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    """slurm: any other sbatch option (submitit's ``slurm_additional_parameters``), e.g.
    {constraint: h100, exclusive: true}."""

    def __post_init__(self) -> None:
        kind = executor_class(self.executor)  # a ConfigError naming the choices if unknown
        for key in ("max_attempts", "timeout_min", "threads_per_job", "nodes",
                    "array_parallelism", "max_array_size", "cpus_per_gpu"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"cluster.{key}={getattr(self, key)}: must be >= 1")
        for key in ("cpus_per_task", "node_cpus", "node_gpus"):
            if getattr(self, key) is not None and int(getattr(self, key)) < 1:
                raise ConfigError(f"cluster.{key}={getattr(self, key)}: must be >= 1 or null")
        for key in ("mem_gb", "node_mem_gb"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ConfigError(f"cluster.{key}={getattr(self, key)}: must be >= 0 or null")
        if self.checkpoint_write_gb_s <= 0:
            raise ConfigError(f"cluster.checkpoint_write_gb_s={self.checkpoint_write_gb_s}: "
                              "must be > 0")
        if self.parallelism is not None and self.parallelism < 1:
            raise ConfigError(f"cluster.parallelism={self.parallelism}: must be >= 1 or null")
        if self.gpus_per_node < 0 or self.signal_delay_s < 0 or self.poll_s <= 0:
            raise ConfigError("cluster.gpus_per_node and cluster.signal_delay_s must be >= 0, "
                              "cluster.poll_s > 0")
        if not (0 < self.assumed_mfu <= 1) or self.device_peak_flops <= 0:
            raise ConfigError("cluster.assumed_mfu must be in (0, 1] and "
                              "cluster.device_peak_flops > 0")
        # the executor's own keys (e.g. SLURM's signal_delay_s), checked by the executor
        kind.settings_from(self)

    def with_trainer(self, trainer: Mapping[str, Any]) -> ClusterSettings:
        """The job shape the planned trainer needs. trainer=megatron runs one launcher per node
        on trainer.nodes x trainer.gpus_per_node, so the job's nodes and GPUs per node come from
        the trainer; cluster.nodes / cluster.gpus_per_node may stay unset (1 / 0) or agree."""
        shape = trainer_for(trainer).job_shape(trainer_config(trainer)) if trainer else None
        if shape is None:
            return self
        nodes, gpus = shape.nodes, shape.gpus_per_node
        if self.gpus_per_node not in (0, gpus):
            raise ConfigError(f"cluster.gpus_per_node={self.gpus_per_node} disagrees with "
                              f"trainer.gpus_per_node={gpus} (the ranks per node); set both to "
                              "the same value, or cluster.gpus_per_node=0 to take the trainer's")
        if self.nodes not in (1, nodes):
            raise ConfigError(f"cluster.nodes={self.nodes} disagrees with trainer.nodes={nodes}; "
                              "set trainer.nodes (the job takes it) and leave cluster.nodes=1")
        return replace(self, nodes=nodes, gpus_per_node=gpus)

    @classmethod
    def from_cfg(cls, cfg: DictConfig | Mapping[str, Any]) -> ClusterSettings:
        """From the whole composed config (its ``cluster`` group); unknown keys are errors."""
        raw = cfg.get("cluster")
        if raw is None:
            raise ConfigError("cluster: not set; choose one with cluster=local or cluster=slurm")
        return to_typed(cls, raw, "cluster")

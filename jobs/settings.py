"""The ``cluster`` config group as a typed, validated dataclass (errors name the key to fix)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from omegaconf import DictConfig

from sweep.arch import ConfigError
from sweep.config import container

EXECUTORS = ("local", "slurm")


@dataclass(frozen=True)
class ClusterSettings:
    """Where and how jobs run (``conf/cluster/*.yaml``)."""

    name: str
    """The config's name (local, slurm, slurm_h100, ...)."""
    executor: str
    """``local`` (submitit LocalExecutor on this machine) or ``slurm``."""
    max_attempts: int = 3
    """Starts of one submission, requeues included, before the run is marked ``timeout``."""
    timeout_min: int = 60
    """Wall-time limit of one attempt, minutes."""
    poll_s: float = 10.0
    """Refresh period of ``flame status --watch`` and the blocking wait."""
    wait: bool = True
    """``flame run`` blocks until every run ends (False: submit, return, run it again later)."""
    parallelism: int | None = None
    """local: concurrent runs (None = CPU cores)."""
    threads_per_job: int = 1
    """local: ``FLAME_THREADS`` of each run."""
    use_local_cluster: bool = False
    """slurm: with no ``SLURM_CONF`` in the environment, use ``flame cluster up``'s cluster."""
    partition: str | None = None
    """slurm: ``--partition``."""
    account: str | None = None
    """slurm: ``--account``."""
    qos: str | None = None
    """slurm: ``--qos``."""
    gpus_per_node: int = 0
    """slurm: GPUs per job (one node per run)."""
    cpus_per_task: int = 1
    """slurm: CPUs per job; also the run's torch threads."""
    mem_gb: float | None = None
    """slurm: memory per job (None = partition default)."""
    signal_delay_s: int = 90
    """slurm: USR2 this many seconds before the time limit (checkpoint + requeue)."""
    array_parallelism: int = 256
    """slurm: array tasks running at once."""
    max_array_size: int = 1000
    """slurm: tasks per sbatch array."""
    setup: tuple[str, ...] = ()
    """slurm: shell lines run before each job."""
    additional_parameters: Mapping[str, Any] = field(default_factory=dict)
    """slurm: any other sbatch option, passed to submitit's ``slurm_additional_parameters``."""

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"cluster.executor={self.executor!r}: use one of {EXECUTORS} "
                              "(e.g. cluster=local or cluster=slurm)")
        for key in ("max_attempts", "timeout_min", "threads_per_job", "cpus_per_task",
                    "array_parallelism", "max_array_size"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"cluster.{key}={getattr(self, key)}: must be >= 1")
        if self.parallelism is not None and self.parallelism < 1:
            raise ConfigError(f"cluster.parallelism={self.parallelism}: must be >= 1 or null")
        if self.gpus_per_node < 0 or self.signal_delay_s < 0 or self.poll_s <= 0:
            raise ConfigError("cluster.gpus_per_node and cluster.signal_delay_s must be >= 0, "
                              "cluster.poll_s > 0")
        if self.executor == "slurm" and self.signal_delay_s >= 60 * self.timeout_min:
            raise ConfigError(f"cluster.signal_delay_s={self.signal_delay_s} is not shorter than "
                              f"cluster.timeout_min={self.timeout_min} minutes; lower it")

    @property
    def workers(self) -> int:
        """local: worker jobs to run at once."""
        return self.parallelism or os.cpu_count() or 1

    @classmethod
    def from_cfg(cls, cfg: DictConfig | Mapping[str, Any]) -> "ClusterSettings":
        """From the whole composed config (its ``cluster`` group)."""
        raw = container(cfg.get("cluster") or {})
        known = set(cls.__dataclass_fields__)
        args = {k: v for k, v in raw.items() if k in known}
        if "name" not in args or "executor" not in args:
            raise ConfigError("cluster: needs `name` and `executor`; choose one with "
                              "cluster=local or cluster=slurm")
        args["setup"] = tuple(args.get("setup") or ())
        args["additional_parameters"] = dict(args.get("additional_parameters") or {})
        try:
            return cls(**args)
        except TypeError as err:
            raise ConfigError(f"cluster: {err}") from None

"""Which executors exist: the built-in ones by name, a plugin by ``package.module:attr``.

``cluster.executor`` names one. A name with a colon is imported (``tests.jobs.toys:Inline``), so
an executor defined outside flame needs no change here, and a job in another process finds it
the same way. Modules are imported by name (``sweep.plugins.load``), not by import
statements: this module is read when the ``cluster`` group is validated (``jobs.settings``),
before any executor loads.
"""

from __future__ import annotations

from typing import Any

from sweep.errors import ConfigError
from sweep.plugins import load

BUILTIN = {"local": "jobs.executors.local:LocalExecutor",
           "slurm": "jobs.executors.slurm:SlurmExecutor"}
"""Executor name -> where its class is."""

_PREFIXES: dict[str, str] = {"local": "local-", "slurm": ""}
"""Executor name -> how its job ids begin in state.json (``local-<pid>``, ``<job>_<task>``)."""

_LOADED: dict[str, Any] = {}


def names() -> tuple[str, ...]:
    """The built-in executors' names."""
    return tuple(BUILTIN)


def executor_class(name: str) -> Any:
    """The executor class ``name`` stands for (a built-in, or ``package.module:attr``);
    a ConfigError naming ``cluster.executor`` and the choices otherwise."""
    if name in _LOADED:
        return _LOADED[name]
    target = BUILTIN.get(name) or (name if ":" in str(name) else None)
    if target is None:
        raise ConfigError(f"cluster.executor={name!r}: use one of {names()} (e.g. cluster=local "
                          "or cluster=slurm), or a plugin as package.module:ClassName")
    found = load("cluster.executor", name, target, "a class as package.module:ClassName")
    attr = target.partition(":")[2]
    _PREFIXES.setdefault(name, getattr(found, "job_prefix", f"{attr.lower()}-"))
    _LOADED[name] = found
    return found


def prefix_of(name: str) -> str:
    """How the job ids of executor ``name`` begin."""
    if name not in _PREFIXES:
        executor_class(name)
    return _PREFIXES[name]


def backend_of(prefix: str) -> str | None:
    """The loaded executor whose job ids begin with ``prefix``, or None."""
    return next((name for name, known in _PREFIXES.items() if known == prefix), None)


def executor_for(cluster: Any) -> Any:
    """The executor of a validated ``cluster`` group (``jobs.settings.ClusterSettings``): an
    ``jobs.executors.base.Executor``, built once at a command's entry and passed down."""
    return executor_class(cluster.executor)(cluster)

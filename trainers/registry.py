"""Which code a ``trainer.name`` runs: ``trainer_for(name | trainer config) -> Trainer``.

The built-ins (embedded, simulated, megatron) are imported the first time they are asked for,
so a job of the simulated trainer never imports torch. Any other name of the form
``package.module:attr`` is a plugin: the module is imported and ``attr`` (a ``Trainer``, or a
class of one, built without arguments) is registered under that name. The name is what a
sweep's config.yaml holds, so a job in another process (a SLURM task, a local worker) finds the
same plugin by importing it too; ``register`` adds a trainer in this process only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sweep.errors import ConfigError
from sweep.plugins import load
from trainers.base import Trainer

BUILTINS: dict[str, str] = {
    "embedded": "trainers.embedded.trainer:EmbeddedTrainer",
    "simulated": "trainers.simulated:SimulatedTrainer",
    "megatron": "trainers.megatron_trainer:MegatronTrainer",
}
"""The built-in trainers by name, as ``module:attr`` (imported lazily)."""

_REGISTERED: dict[str, Trainer] = {}


def register(trainer: Trainer | type, name: str | None = None) -> Trainer:
    """Make ``trainer`` (an instance, or a class built without arguments) the one
    ``trainer_for(name)`` returns in this process; ``name`` defaults to ``trainer.name``."""
    obj = trainer() if isinstance(trainer, type) else trainer
    if not isinstance(obj, Trainer):
        raise TypeError(f"{trainer!r} does not implement trainers.base.Trainer")
    _REGISTERED[name or obj.name] = obj
    return obj


def trainer_name(spec: Any) -> str | None:
    """The trainer name of a name, a ``trainer`` mapping or a trainer config dataclass."""
    if spec is None or isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        return spec.get("name")
    return getattr(spec, "name", None)


def trainer_for(spec: Any) -> Trainer:
    """The trainer a name (``embedded``, ``package.module:attr``), a config's ``trainer``
    mapping or its typed config names; a Trainer is returned as it is. A ConfigError names
    the key when there is no such trainer."""
    if isinstance(spec, Trainer):
        return spec
    name = trainer_name(spec)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"trainer.name={name!r}: use one of {', '.join(BUILTINS)} (e.g. "
                          "trainer=simulated) or a plugin's package.module:attr")
    if name not in _REGISTERED:
        target = BUILTINS.get(name, name)
        if ":" not in target:
            raise ConfigError(f"trainer.name={name!r}: no such trainer; use one of "
                              f"{', '.join(BUILTINS)} (e.g. trainer=simulated) or a plugin's "
                              "package.module:attr")
        register(load("trainer.name", name, target, "a trainer as package.module:attr"),
                 name)
    return _REGISTERED[name]


def builtin_names() -> tuple[str, ...]:
    """The built-in trainers' names."""
    return tuple(BUILTINS)


class _BuiltinConfigs(Mapping[str, type]):
    """The built-ins' config dataclasses by name, each from its trainer (``Trainer.config``)."""

    def __getitem__(self, name: str) -> type:
        if name not in BUILTINS:
            raise KeyError(name)
        return trainer_for(name).config

    def __iter__(self) -> Iterator[str]:
        return iter(BUILTINS)

    def __len__(self) -> int:
        return len(BUILTINS)


BUILTIN_CONFIGS: Mapping[str, type] = _BuiltinConfigs()
"""name -> config dataclass of the built-ins (the ``schema/trainer`` options conf registers)."""

__all__ = ["BUILTINS", "BUILTIN_CONFIGS", "register", "trainer_for", "trainer_name",
           "builtin_names"]

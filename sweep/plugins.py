"""Plugins named as ``package.module:attr``: one loader for every registry (trainers,
executors), so a plugin is found, and a bad name refused, the same way whatever it plugs into.

The name is what a sweep's config.yaml holds, so a job in another process (a SLURM task, a local
worker) finds the same plugin by importing it too.
"""

from __future__ import annotations

import importlib
from typing import Any

from sweep.errors import ConfigError


def load(field: str, name: str, target: str, example: str) -> Any:
    """``attr`` of ``module`` for ``target`` = ``module:attr``; a ConfigError naming
    ``field=name`` and what to give instead (``example``) when it cannot be imported."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{field}={name!r}: cannot import {module_name} ({err}); name "
                          f"{example} importable from this process (on its PYTHONPATH)") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{field}={name!r}: {module_name} has no {attr}; name "
                          f"{example}") from None

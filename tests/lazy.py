"""Modules imported on first use, for the test modules that use torch.

Every xdist worker imports every test module to collect it, so a module-level ``import torch``
costs each of them ~2.5 s of CPU even though one worker runs those tests (tests/conftest.py
hands the files in ``TORCH_FILES`` to one worker). With their torch-bound imports written as
``torch = LazyModule("torch")`` only the worker that runs them imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """Stands for the module ``name``, imported at the first read of a public attribute.

    Private and dunder names raise AttributeError without importing: pytest's collection
    probes every module-level object for them (``__test__``, ``__wrapped__``, ``_mock_name``),
    and a private name (``_Loop``) is imported where a test uses it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(f"{attr}: a lazy module gives its public names only")
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"

"""megatron-core's dataset modules without the start-up cost of megatron/core/__init__.py.

The embedded trainer and ``flame data`` use only ``megatron.core.datasets`` (IndexedDataset,
GPTDataset, BlendedMegatronDatasetBuilder). Importing any of them first runs
megatron/core/__init__.py (core_v0.16.1), which imports the model-parallel stack:
tensor_parallel, DistributedDataParallel, the Transformer Engine shims, and registers torch
safe globals. On this 2-core machine that is 3.6-4.2 s of CPU after torch; without it the
dataset modules take 1.0-1.1 s. Every embedded run in its own process (a SLURM job, a fresh
local worker) paid the difference.

``datasets_package()`` registers ``megatron.core`` as a package built from its own spec
without running its ``__init__`` (submodules import as usual from its folder), after importing
``parallel_state`` so that the ``utils`` <-> ``parallel_state`` cycle resolves as the full
package's import order resolves it. The first attribute asked of the package that no
submodule has set (``megatron.core.__version__``, ``ModelParallelConfig``) runs the real
``__init__`` in that module (PEP 562's module ``__getattr__``; a submodule's name imports just
that submodule), so code that uses the whole package later in the same process sees it whole.
Where ``megatron.core`` is already imported, nothing changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from types import ModuleType

PACKAGE = "megatron.core"


def datasets_package() -> None:
    """Make ``import megatron.core.datasets.*`` skip megatron/core/__init__.py's imports."""
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None:
        return  # not installed: the import that follows raises its own ImportError
    module = importlib.util.module_from_spec(spec)
    module.__getattr__ = _completing(module, spec)  # type: ignore[attr-defined]
    sys.modules[PACKAGE] = module
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its notes about TransformerEngine and Apex
            importlib.import_module(f"{PACKAGE}.parallel_state")
    except BaseException:
        sys.modules.pop(PACKAGE, None)
        raise


def _completing(module: ModuleType, spec):
    """The package's ``__getattr__``: a submodule's name imports that submodule (what
    ``from megatron.core import config`` asks for); any other name runs the real
    ``__init__`` once, then looks again."""
    def complete(name: str):
        if importlib.util.find_spec(f"{PACKAGE}.{name}") is not None:
            return importlib.import_module(f"{PACKAGE}.{name}")
        del module.__getattr__
        spec.loader.exec_module(module)
        return getattr(module, name)
    return complete

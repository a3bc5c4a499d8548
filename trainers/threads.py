"""How many threads a training job may use, and applying that to torch."""

from __future__ import annotations

import os

from sweep.errors import ConfigError


def thread_count() -> int:
    """Threads this process may use: SLURM's (or submitit's local) cpus per task, else
    ``FLAME_THREADS``, else 1. Never more: two jobs on two cores want one thread each (two
    threads each ran 18x slower here)."""
    for var in ("SLURM_CPUS_PER_TASK", "FLAME_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                count = int(value)
            except ValueError:
                raise ConfigError(f"{var}={value!r}: must be a whole number of threads") from None
            if count < 1:
                raise ConfigError(f"{var}={value!r}: must be >= 1")
            return count
    return 1


def configure_torch_threads() -> int:
    """Apply ``thread_count()`` to torch (intra- and inter-op) and flush denormals."""
    import torch

    count = thread_count()
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(count)
    except RuntimeError:  # only settable before the first parallel op; intra-op is what counts
        pass
    torch.set_flush_denormal(True)
    return count

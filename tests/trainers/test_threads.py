"""Thread count per the contract: SLURM_CPUS_PER_TASK, else FLAME_THREADS, else 1."""

import pytest

from sweep.errors import ConfigError
from trainers.threads import thread_count


def test_thread_count_precedence(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("FLAME_THREADS", raising=False)
    assert thread_count() == 1
    monkeypatch.setenv("FLAME_THREADS", "3")
    assert thread_count() == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert thread_count() == 2
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "two")
    with pytest.raises(ConfigError, match="SLURM_CPUS_PER_TASK"):
        thread_count()

"""Atomic checkpoints of the embedded trainer: everything needed to continue bit for bit."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweep.io import atomic_writer

CHECKPOINT_FILE = "latest.pt"


def rng_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate()}


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def write(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` via a temp file and a rename, so a job killed mid-save
    leaves the previous file intact."""
    with atomic_writer(path) as handle:
        torch.save(state, handle)
    return path


def read(path: Path) -> dict[str, Any]:
    """A state written by ``write``."""
    # Our own files: optimiser state and RNG tuples need the full unpickler.
    return torch.load(path, map_location="cpu", weights_only=False)


def save(directory: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``directory/latest.pt`` (atomically, see ``write``)."""
    return write(directory / CHECKPOINT_FILE, state)


def load(directory: Path) -> dict[str, Any] | None:
    """The latest checkpoint's state, or None when there is none."""
    path = directory / CHECKPOINT_FILE
    return read(path) if path.exists() else None

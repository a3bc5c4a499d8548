"""Atomic file writes and the sweep directory's file names (the on-disk contract)."""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from sweep.errors import ConfigError

PLAN_CSV = "plan.csv"
CONFIG_YAML = "config.yaml"
RUNS_DIR = "runs"
RESULTS_CSV = "results.csv"
FIT_JSON = "fit.json"
SELECTION_CSV = "selection.csv"
FIGURES_DIR = "figures"
ADAPTIVE_DIR = "adaptive"  # decision_NNN.json of an adaptive study (jobs/adaptive.py), one per wave
HISTORY_DIR = "history"  # earlier plan.csv + config.yaml of a re-planned sweep, by time
# Inside runs/<run_id>/ (written by jobs/ and trainers/, read by analysis/).
STATE_JSON = "state.json"
TRAIN_LOG = "train.log"
METRICS_JSONL = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
SUMMARY_JSON = "summary.json"
SWEEP_FORMAT_VERSION = 1


_OPEN_MODE = 0o666
_PLAIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces ``path`` only when the block ends without error.

    Readers see the old file or the new one, never a part: temp file in the same directory,
    fsync, rename, then fsync the directory so the rename itself survives a crash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _OPEN_MODE & ~_umask())  # mkstemp makes 0600; give open()'s usual mode
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created, with its folder, if missing) for the
    block: one process at a time, the others wait."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see ``atomic_writer``)."""
    with atomic_writer(path) as handle:
        handle.write(text.encode("utf-8"))


def run_dir(sweep_dir: str | os.PathLike, run_id: str) -> Path:
    """Where one run's ledger, logs, metrics and checkpoints live. ``run_id`` comes from
    plan.csv, which a person may edit: anything but a plain id (``../../x``, ``a/b``) would
    put files outside ``<sweep>/runs/``, so it is refused before anything is written."""
    return Path(sweep_dir) / RUNS_DIR / check_run_id(run_id, sweep_dir)


def check_run_id(run_id: object, sweep_dir: str | os.PathLike = "...") -> str:
    """``run_id`` if it is a plain id (safe as a directory name), else a ConfigError."""
    if not isinstance(run_id, str) or not _PLAIN_ID.match(run_id):
        raise ConfigError(f"plan.csv: run_id {run_id!r} is not a plain id (letters, digits, "
                          f"'.', '_', '-'; no '/' or leading '.'); restore it, or re-plan with "
                          f"`flame plan sweep_dir={sweep_dir}`")
    return run_id

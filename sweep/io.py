"""Atomic file writes and the sweep directory's file names (the on-disk contract)."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, TypeVar

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
T = TypeVar("T")

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""A write refused for want of space: the file system is full, or the user's quota is."""


class DiskFull(OSError):
    """A write of ``filename`` failed because its file system is full (or over quota). An
    ``OSError`` still (``errno`` ENOSPC or EDQUOT), so handlers of OSError keep working; its
    text names the file, says "disk full" and how much space is left."""

    def __init__(self, path: str | os.PathLike, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or os.strerror(cause.errno or 0),
                         os.fspath(path))

    def __str__(self) -> str:
        return f"{self.filename}: disk full ({self.strerror}; {free_space(self.filename)})"

    def __reduce__(self) -> tuple:
        """Pickled as its three parts (a job's error crosses processes)."""
        return _disk_full, (self.filename, self.errno, self.strerror)


def _disk_full(path: str, code: int, text: str) -> DiskFull:
    return DiskFull(path, OSError(code, text))


def disk_full_cause(err: BaseException | None) -> OSError | None:
    """The OSError with ENOSPC/EDQUOT in ``err``'s chain (itself, its cause or the exception
    it was raised while handling), or None: a trainer or library may wrap the write's error."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return err
        err = err.__cause__ or err.__context__
    return None


def _existing(path: str | os.PathLike) -> Path:
    """``path``, or its nearest existing parent: where its file system can be asked."""
    folder = Path(os.path.abspath(path))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def free_space(path: str | os.PathLike) -> str:
    """``"12.0 KiB free on /mnt/data"``: the space left to unprivileged writers on the file
    system holding ``path`` (its nearest existing folder)."""
    folder = _existing(path)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    mount = folder
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return f"{_size(free)} free on {mount}"


def disk_is_full(path: str | os.PathLike, below: int = 1 << 20) -> bool:
    """Whether the file system holding ``path`` has less than ``below`` bytes left (1 MiB:
    less than a run's next checkpoint or log lines need). Some writers do not say ENOSPC
    (torch.save raises "file write failed"); this is how their failures are told apart."""
    try:
        return shutil.disk_usage(_existing(path)).free < below
    except OSError:
        return False


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count} TiB"


@contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """A write to ``path`` inside the block that fails for want of space raises ``DiskFull``
    naming ``path`` (a bare ENOSPC from ``handle.write`` names no file; torch.save turns it
    into a RuntimeError of its own). A ``DiskFull`` from a nested write keeps its own file."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as err:
        if (cause := disk_full_cause(err)) is not None:
            raise DiskFull(path, cause) from None
        raise


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
    with naming(path):  # ENOSPC anywhere here (mkdir, mkstemp, the caller's writes, fsync)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, _OPEN_MODE & ~_umask())  # mkstemp makes 0600; open()'s usual mode
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


def reserve_space(path: str | os.PathLike, size: int) -> None:
    """Make ``path`` hold ``size`` bytes of allocated space (a ballast file), if it holds
    less: what ``spend_reserve`` gives back when the disk is full, so the end of a run can
    still be recorded. Never more than an eighth of the space left (a small disk keeps room
    to work). Best effort: on a disk already full it stays as it is."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, _OPEN_MODE & ~_umask())
    except OSError:
        return
    try:
        have = os.fstat(fd).st_size
        want = min(size, have + shutil.disk_usage(path.parent).free // 8)
        if want > have:  # real blocks, not a sparse hole: only those free space when given back
            os.posix_fallocate(fd, 0, want)
    except OSError:
        pass
    finally:
        os.close(fd)


def spend_reserve(path: str | os.PathLike, write: Callable[[], T],
                  chunk: int = 64 << 10) -> T:
    """``write()``; while it fails with ``DiskFull``, give part of the ballast file ``path``
    (``reserve_space``) back to the file system and try again: ``chunk`` bytes at a time, or
    the whole file when the disk is out of inodes (a new file needs one), until none is left
    (then the ``DiskFull`` is raised). Processes take the ballast in turns (a lock on its
    folder: the file itself may go)."""
    path = Path(path)
    try:
        return write()
    except DiskFull:
        if not path.is_file():  # no ballast (a sweep launched by an older flame)
            raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        with suppress(OSError):  # NFS locks no folder: then the processes race for it
            fcntl.flock(folder, fcntl.LOCK_EX)
        while True:
            try:
                return write()
            except DiskFull:
                if not path.is_file():  # spent: the DiskFull stands
                    raise
                with suppress(FileNotFoundError):  # another process took the last of it
                    left = path.stat().st_size
                    if left == 0 or os.statvfs(path.parent).f_favail == 0:
                        path.unlink()  # its inode too: the last of it
                    else:
                        os.truncate(path, max(0, left - chunk))
    finally:
        os.close(folder)


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

"""The per-run ledger ``<sweep>/runs/<run_id>/state.json``: durable, atomic, locked.

States move forward only, ``planned -> submitted -> running -> completed | failed | timeout |
cancelled``, except ``running -> running`` (a requeued attempt starts) and ``reset`` (resubmit).
The launcher, ``flame status`` and the job itself all write the file, so every
read-modify-write holds an exclusive ``fcntl`` lock on ``state.lock`` beside it; the write
itself is atomic (temp file, fsync, rename), so readers without the lock never see half a file.

A ``state.json`` that is not valid JSON anyway (a disk filled, a hand edit) is ``corrupt``: it is
never overwritten by flame; readers name it with the fix, and the sweep's other runs go on.
One move goes back: ``running -> submitted`` when the scheduler has put the job back in its
queue (a node failure requeued it), see ``requeued``. Training itself is guarded by a second
lock, ``train.lock`` (``training_lock``): whatever happens to state.json, no run is trained by
two processes at once.

A full disk must not hide how a run ended: each worker keeps a ballast file,
``<sweep>/jobs/disk.reserve`` (``ensure_reserve``), and a write that records an end (a terminal
state, a run sent back to the queue) gives part of it back when the disk refuses the write
(``sweep.io.spend_reserve``), so the run's error says "disk full", not that its worker vanished.

The entry itself, ``RunRecord``, its state names and its file's text are ``sweep.records``'s
(readers that only look use it directly); this module adds the locks and the moves.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from sweep.io import STATE_JSON, naming, reserve_space, run_dir, spend_reserve
from sweep.records import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    CORRUPT,
    FAILED,
    PLANNED,
    RECORD_VERSION,
    RUNNING,
    STATES,
    SUBMITTED,
    TERMINAL,
    TIMEOUT,
    CorruptRecord,
    RunRecord,
    now,
    parse_record,
    read_record,
    record_path,
    record_text,
    scan_records,
    write_record,
)
from sweep.runstate import seconds_between  # noqa: F401 - callers read it from the ledger

__all__ = ["ACTIVE", "CANCELLED", "COMPLETED", "CORRUPT", "FAILED", "PLANNED", "RUNNING",
           "STATES", "SUBMITTED", "TERMINAL", "TIMEOUT", "RunRecord", "now"]

LOCK_FILE = "state.lock"
TRAIN_LOCK = "train.lock"
LEDGER_VERSION = RECORD_VERSION
_RANK = {PLANNED: 0, SUBMITTED: 1, RUNNING: 2, **{s: 3 for s in TERMINAL}}
ERROR_TAIL_LINES = 30

RESERVE_FILE = "jobs/disk.reserve"
"""The sweep's ballast file (relative to the sweep directory): space set aside while the disk
has some, given back to record how runs ended once it has none."""
RESERVE_BYTES = 1 << 20
"""Its size: a record is under 4 KiB, so 1 MiB records a few hundred ends."""

CorruptLedger = CorruptRecord
"""A run's state.json exists but is not a ledger entry (``sweep.records.CorruptRecord``)."""


class TransitionError(RuntimeError):
    """A state change the state machine forbids (e.g. completed -> running)."""


def new_record(run_id: str) -> RunRecord:
    """A ``planned`` run's ledger entry."""
    return RunRecord(run_id=run_id)


def state_of(records: Mapping[str, RunRecord], run_id: str) -> str:
    """The run's state in ``records`` (a ``scan``), ``planned`` if it has no entry."""
    rec = records.get(run_id)
    return rec.state if rec is not None else PLANNED


def state_path(sweep_dir: Path, run_id: str) -> Path:
    return record_path(sweep_dir, run_id)


def read(sweep_dir: Path, run_id: str) -> RunRecord | None:
    """The run's ledger entry, or None if it was never written (``CorruptLedger`` if it is
    unreadable)."""
    return read_record(sweep_dir, run_id)


def scan(sweep_dir: Path) -> tuple[dict[str, RunRecord], dict[str, CorruptLedger]]:
    """Every ledger entry under ``<sweep>/runs/`` by run_id (no locks: writes are atomic), and
    the unreadable ones apart, by run_id, so one bad file does not stop the others."""
    return scan_records(sweep_dir)


def read_all(sweep_dir: Path) -> dict[str, RunRecord]:
    """The readable ledger entries (see ``scan`` for the unreadable ones)."""
    return scan(sweep_dir)[0]


def reserve_path(sweep_dir: Path) -> Path:
    """Where the sweep's ballast file is (``RESERVE_FILE``)."""
    return Path(sweep_dir) / RESERVE_FILE


def ensure_reserve(sweep_dir: Path) -> None:
    """Set ``RESERVE_BYTES`` aside for recording ends, if the disk has them (each worker or
    task calls it as it starts; one given back after a full disk is made again here)."""
    reserve_space(reserve_path(sweep_dir), RESERVE_BYTES)


@contextmanager
def locked(sweep_dir: Path, run_id: str, reserve: bool = False) -> Iterator[RunRecord]:
    """Hold the run's lock; yield its entry (a new ``planned`` one if none) and write it back
    atomically on exit if it changed. ``reserve``: on a full disk, the write may spend the
    sweep's ballast (``ensure_reserve``): for writes that record how a run ended."""
    folder = run_dir(sweep_dir, run_id)
    with naming(folder / LOCK_FILE):  # a full disk refuses even an empty new file
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / LOCK_FILE, "a")
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = read(sweep_dir, run_id) or new_record(run_id)
        before = json.dumps(record.to_json(), sort_keys=True)
        yield record
        if json.dumps(record.to_json(), sort_keys=True) != before:
            record.updated_at = now()
            if reserve:
                spend_reserve(reserve_path(sweep_dir), lambda: write_record(sweep_dir, record))
            else:
                write_record(sweep_dir, record)


def can_move(old: str, new: str) -> bool:
    """Forward only; a new attempt may start while running (requeue)."""
    if old in TERMINAL:
        return False
    return _RANK[new] > _RANK[old] or (old == new == RUNNING)


def transition(sweep_dir: Path, run_id: str, new: str, *, job_id: str | None = None,
               error_tail: str | None = None, strict: bool = False) -> RunRecord | None:
    """Move the run to ``new`` (recording ``job_id`` and timestamps); returns the new entry,
    or None if the move is not allowed (``strict``: raise ``TransitionError``)."""
    with locked(sweep_dir, run_id, reserve=new in TERMINAL) as rec:
        if not can_move(rec.state, new):
            if strict:
                raise TransitionError(f"run {run_id}: {rec.state} -> {new} is not allowed")
            return None
        apply(rec, new, job_id=job_id, error_tail=error_tail)
        return rec.copy()


def transition_many(sweep_dir: Path, moves: list[tuple[str, str, str | None]],
                    chunk: int = 256) -> list[str]:
    """``transition`` for many runs at once: ``(run_id, new_state, job_id)`` each; returns the
    run ids that moved. Same locks and atomic renames, but one ``os.sync`` per ``chunk`` runs
    instead of two fsyncs per file: recording 1,000 submissions drops from ~8 s to well under
    one (fsync dominated the launch). A run whose state.json is unreadable is left alone."""
    moved: list[str] = []
    for start in range(0, len(moves), chunk):
        part = moves[start:start + chunk]
        with ExitStack() as stack:
            staged: list[tuple[str, str, str]] = []
            stack.callback(_drop_staged, staged)  # a failed write (full disk) leaves no temp
            for run_id, new, job_id in part:
                # plain string paths: at 10,000 runs pathlib's parsing alone cost ~1 s
                folder = os.fspath(run_dir(sweep_dir, run_id))
                os.makedirs(folder, exist_ok=True)
                lock = stack.enter_context(open(os.path.join(folder, LOCK_FILE), "a"))
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    rec = _read_locked(os.path.join(folder, STATE_JSON)) or new_record(run_id)
                except CorruptLedger:  # never overwritten; its readers name it
                    continue
                if not can_move(rec.state, new):
                    continue
                apply(rec, new, job_id=job_id)
                rec.updated_at = now()
                tmp = os.path.join(folder, f".{STATE_JSON}.{os.getpid()}.tmp")
                staged.append((run_id, tmp, os.path.join(folder, STATE_JSON)))
                with naming(staged[-1][2]), open(tmp, "w", encoding="utf-8") as handle:
                    handle.write(rec.text())
            os.sync()  # the new contents are on disk before any rename exposes them
            for run_id, tmp, path in staged:
                os.replace(tmp, path)
                moved.append(run_id)
            staged.clear()
            os.sync()  # and the renames themselves
    return moved


def _drop_staged(staged: list[tuple[str, str, str]]) -> None:
    """Remove the temp files of ``transition_many`` a failure left unrenamed."""
    for _, tmp, _ in staged:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _read_locked(path: str) -> RunRecord | None:
    """The record at ``path`` (state.json), or None if there is none yet."""
    text = record_text(path)
    return None if text is None else parse_record(Path(path), text)


def apply(rec: RunRecord, new: str, *, job_id: str | None = None,
          error_tail: str | None = None) -> None:
    """Change an entry held under its lock (no checks)."""
    stamp = now()
    rec.pending_reason = None  # only ``requeued`` sets it: why a started run went back
    if job_id is not None and rec.last_job_id != job_id:
        rec.job_ids.append(job_id)
    if new == SUBMITTED:
        rec.submitted_at = stamp
        rec.attempts_at_submit = rec.attempts
        rec.ended_at = None
    elif new == RUNNING:
        rec.attempts += 1
        rec.started_at = rec.started_at or stamp
        rec.host = os.uname().nodename
    elif new in TERMINAL:
        rec.ended_at = stamp
    if error_tail is not None:
        rec.error_tail = error_tail
    rec.state = new


def reset(sweep_dir: Path, run_id: str, allowed: frozenset[str]) -> bool:
    """Back to ``planned`` for a resubmit, if the run is in one of ``allowed`` states; job ids
    and attempts are kept as history."""
    with locked(sweep_dir, run_id) as rec:
        if rec.state not in allowed:
            return False
        rec.state, rec.error_tail, rec.pending_reason = PLANNED, None, None
        rec.ended_at = rec.started_at = None
        return True


def tail(text: str, lines: int = ERROR_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``: what state.json keeps of an error."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def requeued(sweep_dir: Path, run_id: str, job_id: str, reason: str,
             attempts: int | None = None) -> bool:
    """The scheduler holds the run's job ``job_id`` pending again (a node failure or
    ``scontrol requeue`` put it back in the queue): ``running -> submitted``, keeping squeue's
    reason as ``pending_reason`` (why it went back), so status shows what the scheduler says. The
    attempt count and the submission stay (the
    next start is one more attempt of the same submission). ``attempts``: the count the caller
    saw before asking the scheduler; a run started since then is left alone. Returns whether
    it changed."""
    with locked(sweep_dir, run_id, reserve=True) as rec:
        if rec.state != RUNNING or rec.last_job_id != job_id:
            return False
        if attempts is not None and rec.attempts != attempts:
            return False
        rec.state, rec.pending_reason = SUBMITTED, reason
        return True


def adopt(sweep_dir: Path, run_id: str, holder: str) -> RunRecord | None:
    """Another process (job ``holder``) is training the run though the ledger does not say so
    (its state.json was deleted and the run launched again): record it as ``running`` in that
    job, so status and reconcile follow the real trainer. None if the run is not queued."""
    with locked(sweep_dir, run_id) as rec:
        if rec.state not in (PLANNED, SUBMITTED):
            return None
        if rec.last_job_id != holder:
            rec.job_ids.append(holder)
        rec.state, rec.host = RUNNING, None
        rec.started_at = rec.started_at or now()
        return rec.copy()


SAME_JOB_WAIT_S = 300.0
"""How long a task waits for a training lock held under its own job id: an earlier attempt of
the same job, whose lock outlives it a while only on a network file system (an NFS lease
after a node crash); any other holder is a different trainer and the task gives way at once."""


@contextmanager
def training_lock(sweep_dir: Path, run_id: str, holder: str,
                  same_job_wait_s: float = SAME_JOB_WAIT_S) -> Iterator[bool]:
    """Try to take the run's exclusive training lock (``runs/<run_id>/train.lock``, flock);
    yields whether this process got it, and holds it until the block ends. The holder writes
    its job id in the file, for ``lock_holder``. flock dies with its process, so a killed
    trainer never leaves a stale lock on a local disk."""
    folder = run_dir(sweep_dir, run_id)
    with naming(folder / TRAIN_LOCK):
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / TRAIN_LOCK, "a+")
    with handle:
        deadline = time.monotonic() + same_job_wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if lock_holder(sweep_dir, run_id) != holder or time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(1.0)
        handle.truncate(0)
        handle.write(f"{holder} pid {os.getpid()} host {os.uname().nodename}\n")
        handle.flush()
        try:
            yield True
        finally:
            handle.truncate(0)  # released: the next reader sees no holder


def lock_holder(sweep_dir: Path, run_id: str, wait_s: float = 2.0) -> str | None:
    """The job id of the process training the run now (it holds train.lock), or None."""
    path = run_dir(sweep_dir, run_id) / TRAIN_LOCK
    try:
        handle = open(path)
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return holder_line(handle, wait_s).split()[0]
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def holder_line(handle: IO[str], wait_s: float = 2.0) -> str:
    """What the holder of a held lock file wrote in it ("unknown" if nothing). A holder writes
    right after it takes the lock, so a reader that comes in between waits up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        handle.seek(0)
        text = handle.read().strip()
        if text or time.monotonic() > deadline:
            return text or "unknown"
        time.sleep(0.05)

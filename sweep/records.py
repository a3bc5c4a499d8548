"""One run's record, ``<sweep>/runs/<run_id>/state.json``: the typed entry and its file.

This module is the one place state.json is read and written as text. The locking and the state
machine (which moves are allowed, what each move stamps) sit on top of it in ``jobs.ledger``;
readers that only look (analysis, ``flame status``) use ``read_record`` and ``scan_records``
here. The bytes on disk are those flame always wrote: the keys in ``RunRecord``'s field order,
then any key a newer flame or a hand edit added (kept as it was), ``json.dumps(indent=1)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sweep.errors import ConfigError
from sweep.io import RUNS_DIR, STATE_JSON, atomic_write_text, run_dir

RECORD_VERSION = 1
"""state.json's ``version``; a change of its meaning bumps it."""

PLANNED, SUBMITTED, RUNNING = "planned", "submitted", "running"
COMPLETED, FAILED, TIMEOUT, CANCELLED = "completed", "failed", "timeout", "cancelled"
STATES = (PLANNED, SUBMITTED, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, TIMEOUT, CANCELLED})
ACTIVE = frozenset({SUBMITTED, RUNNING})
CORRUPT = "corrupt"
"""Shown for a run whose state.json cannot be read; not a state (nothing writes it)."""


def now() -> str:
    """ISO-8601 UTC with seconds, e.g. ``2026-11-23T19:40:00+00:00``."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class CorruptRecord(ConfigError):
    """A run's state.json exists but is not a record; the message names it and the fix."""

    def __init__(self, path: Path, why: str, culprit: Path | None = None) -> None:
        self.path, self.run_id = path, path.parent.name
        super().__init__(f"{culprit or path} is unreadable ({why}); flame leaves it as it is: "
                         "delete it to "
                         f"reset run {self.run_id} to planned (`flame launch` then submits it; "
                         "its checkpoints are kept)")


@dataclass(kw_only=True)
class RunRecord:
    """One run's state.json; the fields in the order the file has them."""

    version: int = RECORD_VERSION
    """The record format (``RECORD_VERSION`` when written)."""
    run_id: str
    """The run (plan.csv's ``run_id``, also the directory name)."""
    state: str = PLANNED
    """One of ``STATES``."""
    job_ids: list[str] = field(default_factory=list)
    """Every scheduler job that held the run, oldest first (``<job>_<task>``, ``local-<pid>``)."""
    attempts: int = 0
    """How many times a job started training it (requeues included)."""
    attempts_at_submit: int = 0
    """``attempts`` when it was last submitted: the attempts of this submission are the rest."""
    submitted_at: str | None = None
    """When it was last submitted (ISO UTC)."""
    started_at: str | None = None
    """When its first attempt of this submission started (ISO UTC)."""
    ended_at: str | None = None
    """When it reached a terminal state (ISO UTC)."""
    updated_at: str = field(default_factory=now)
    """When the record last changed (ISO UTC)."""
    error_tail: str | None = None
    """The last lines of the error that ended it, if one did."""
    host: str | None = None
    """The machine its latest attempt ran on."""
    pending_reason: str | None = None
    """Why a started run is queued again (the scheduler's reason after a requeue)."""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    """Keys the file has that this flame does not know (a newer flame, a hand edit): kept."""

    @property
    def last_job_id(self) -> str | None:
        """The job that holds (or last held) the run, or None if it was never submitted."""
        return self.job_ids[-1] if self.job_ids else None

    def copy(self) -> RunRecord:
        """An independent copy (its lists and extras too)."""
        return replace(self, job_ids=list(self.job_ids), extra=dict(self.extra))

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object: known keys in field order, then the extras."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**out, **{k: v for k, v in self.extra.items() if k not in out}}

    @classmethod
    def from_json(cls, data: dict[str, Any], run_id: str) -> RunRecord:
        """A record from the file's object; keys it lacks (written by hand, or by an older
        flame) read as a new record's, and ``run_id`` (the directory's) fills a missing one."""
        known = _KNOWN_KEYS
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("run_id", run_id)
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra)

    def text(self) -> str:
        """The file's bytes, as flame has always written them."""
        return json.dumps(self.to_json(), indent=1) + "\n"


_KNOWN_KEYS = frozenset(f.name for f in fields(RunRecord)) - {"extra"}
"""The keys state.json has a field for (read once: a sweep's scan parses thousands)."""


def parse_record(path: Path, text: str) -> RunRecord:
    """The record in ``text`` read from ``path`` (``CorruptRecord`` if it is not one)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CorruptRecord(path, f"not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("state") not in STATES:
        raise CorruptRecord(path, "not a ledger entry: no valid 'state'")
    return RunRecord.from_json(data, path.parent.name)


def record_path(sweep_dir: str | os.PathLike, run_id: str) -> Path:
    """Where the run's state.json is."""
    return run_dir(sweep_dir, run_id) / STATE_JSON


def record_text(path: str | os.PathLike) -> str | None:
    """The text of a state.json, None if there is none; a ``CorruptRecord`` where a folder
    stands for the file, or a file for the run's folder (moved or made by hand)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise CorruptRecord(path, "a folder, not a file") from None
    except NotADirectoryError:
        raise CorruptRecord(path, f"a file stands where run {path.parent.name}'s folder "
                            "belongs", culprit=path.parent) from None


def read_record(sweep_dir: str | os.PathLike, run_id: str) -> RunRecord | None:
    """The run's record, or None if it was never written (``CorruptRecord`` if unreadable)."""
    path = record_path(sweep_dir, run_id)
    text = record_text(path)
    return None if text is None else parse_record(path, text)


def write_record(sweep_dir: str | os.PathLike, record: RunRecord) -> None:
    """Replace the run's state.json atomically (callers hold ``jobs.ledger``'s lock)."""
    atomic_write_text(record_path(sweep_dir, record.run_id), record.text())


def scan_records(sweep_dir: str | os.PathLike
                 ) -> tuple[dict[str, RunRecord], dict[str, CorruptRecord]]:
    """Every record under ``<sweep>/runs/`` by run_id (no locks: writes are atomic), and the
    unreadable ones apart, by run_id, so one bad file does not stop the others."""
    out: dict[str, RunRecord] = {}
    corrupt: dict[str, CorruptRecord] = {}
    runs = Path(sweep_dir) / RUNS_DIR
    if runs.is_dir():
        for entry in os.scandir(runs):
            if entry.name.startswith("."):  # no run id starts with a dot (sweep.io)
                continue
            path = Path(entry.path) / STATE_JSON
            try:
                text = record_text(path)
                if text is not None:
                    out[entry.name] = parse_record(path, text)
            except CorruptRecord as err:
                corrupt[entry.name] = err
    return out, corrupt

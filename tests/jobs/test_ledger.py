"""The ledger: forward-only state machine, atomic locked writes, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import ledger
from tests.jobs.conftest import REPO


def test_state_machine_moves_forward_only(tmp_path: Path) -> None:
    rec = ledger.transition(tmp_path, "r1", ledger.SUBMITTED, job_id="7_0")
    assert rec.state == "submitted" and rec.job_ids == ["7_0"] and rec.attempts == 0
    rec = ledger.transition(tmp_path, "r1", ledger.RUNNING, job_id="7_0")
    assert rec.attempts == 1 and rec.job_ids == ["7_0"] and rec.started_at
    rec = ledger.transition(tmp_path, "r1", ledger.RUNNING, job_id="7_0")  # requeued attempt
    assert rec.attempts == 2 and rec.job_ids == ["7_0"]
    assert ledger.transition(tmp_path, "r1", ledger.SUBMITTED) is None  # never backwards
    rec = ledger.transition(tmp_path, "r1", ledger.FAILED, error_tail="boom")
    assert rec.state == "failed" and rec.ended_at and rec.error_tail == "boom"
    for later in (ledger.COMPLETED, ledger.RUNNING, ledger.CANCELLED):
        assert ledger.transition(tmp_path, "r1", later) is None  # terminal stays terminal
    with pytest.raises(ledger.TransitionError, match="failed -> completed"):
        ledger.transition(tmp_path, "r1", ledger.COMPLETED, strict=True)
    on_disk = json.loads((tmp_path / "runs" / "r1" / "state.json").read_text())
    for key in ("run_id", "state", "job_ids", "attempts", "submitted_at", "started_at",
                "ended_at", "updated_at", "error_tail"):
        assert key in on_disk
    # resubmit: back to planned, history kept, the attempt budget counts from the new submit
    assert ledger.reset(tmp_path, "r1", frozenset({ledger.FAILED}))
    rec = ledger.transition(tmp_path, "r1", ledger.SUBMITTED, job_id="9_0")
    assert rec.job_ids == ["7_0", "9_0"] and rec.attempts_at_submit == 2
    assert not ledger.reset(tmp_path, "r1", frozenset({ledger.FAILED}))  # submitted: refused


def _bump(args: tuple[str, int]) -> None:
    sweep, n = args
    for _ in range(n):
        ledger.transition(Path(sweep), "shared", ledger.RUNNING, job_id="1")


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    """Four processes each start 25 attempts of one run: the lock keeps all 100."""
    ledger.transition(tmp_path, "shared", ledger.SUBMITTED)
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_bump, [(str(tmp_path), 25)] * 4)
    assert ledger.read(tmp_path, "shared").attempts == 100
    leftovers = [p.name for p in (tmp_path / "runs" / "shared").iterdir()
                 if p.name not in ("state.json", "state.lock")]
    assert leftovers == []  # no temp files left behind by the atomic writes


def test_read_all_and_tail(tmp_path: Path) -> None:
    for i in range(3):
        ledger.transition(tmp_path, f"r{i}", ledger.SUBMITTED)
    (tmp_path / "runs" / "not-a-run").mkdir()
    assert sorted(ledger.read_all(tmp_path)) == ["r0", "r1", "r2"]
    assert ledger.tail("\n".join(str(i) for i in range(100)), 3) == "97\n98\n99"


HOLD = """
import sys, time
from pathlib import Path
from jobs import ledger
with ledger.training_lock(Path(sys.argv[1]), "r1", "5_0") as mine:
    print(mine, flush=True)
    time.sleep(60)
"""


def test_training_lock_is_exclusive_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        assert ledger.lock_holder(tmp_path, "r1") == "5_0"
        with ledger.training_lock(tmp_path, "r1", "6_0") as mine:
            assert mine is False  # another job trains it: give way at once
    finally:
        holder.kill()  # SIGKILL: no cleanup runs in the holder
        holder.wait()
    assert ledger.lock_holder(tmp_path, "r1") is None  # no stale lock
    with ledger.training_lock(tmp_path, "r1", "6_0") as mine:
        assert mine is True and ledger.lock_holder(tmp_path, "r1") == "6_0"


def test_unreadable_state_json_is_named_and_never_overwritten(tmp_path: Path) -> None:
    ledger.transition(tmp_path, "ok", ledger.SUBMITTED)
    path = tmp_path / "runs" / "bad" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"state": "runn')
    records, corrupt = ledger.scan(tmp_path)
    assert list(records) == ["ok"] and list(corrupt) == ["bad"]
    assert str(path) in str(corrupt["bad"]) and "delete it" in str(corrupt["bad"])
    with pytest.raises(ledger.CorruptLedger, match="state.json is unreadable"):
        ledger.transition(tmp_path, "bad", ledger.CANCELLED)
    assert ledger.transition_many(tmp_path, [("bad", ledger.SUBMITTED, "1"),
                                             ("ok", ledger.RUNNING, "1")]) == ["ok"]
    assert path.read_text() == '{"state": "runn'


def test_an_entry_with_only_a_state_reads_with_the_other_keys_defaulted(tmp_path):
    folder = tmp_path / "runs" / "r1"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text('{"run_id": "r1", "state": "completed"}')
    rec = ledger.read_all(tmp_path)["r1"]
    assert rec.state == "completed" and rec.attempts == 0 and rec.job_ids == []

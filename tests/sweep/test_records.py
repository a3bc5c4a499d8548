"""RunRecord: state.json read and written in one place, the bytes as flame always wrote them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweep import records
from sweep.records import RunRecord

OLD_BYTES = """{
 "version": 1,
 "run_id": "r1",
 "state": "submitted",
 "job_ids": [
  "7_0"
 ],
 "attempts": 0,
 "attempts_at_submit": 0,
 "submitted_at": "2026-11-23T19:40:00+00:00",
 "started_at": null,
 "ended_at": null,
 "updated_at": "2026-11-23T19:40:00+00:00",
 "error_tail": null,
 "host": null,
 "pending_reason": null
}
"""


def _write(sweep: Path, run_id: str, text: str) -> Path:
    path = sweep / "runs" / run_id / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_round_trip_keeps_the_bytes(tmp_path: Path) -> None:
    _write(tmp_path, "r1", OLD_BYTES)
    rec = records.read_record(tmp_path, "r1")
    assert rec is not None and rec.state == records.SUBMITTED and rec.last_job_id == "7_0"
    assert rec.text() == OLD_BYTES
    records.write_record(tmp_path, rec)
    assert (tmp_path / "runs" / "r1" / "state.json").read_text() == OLD_BYTES


def test_a_new_record_has_every_key_in_order() -> None:
    rec = RunRecord(run_id="r2")
    assert list(rec.to_json()) == ["version", "run_id", "state", "job_ids", "attempts",
                                   "attempts_at_submit", "submitted_at", "started_at",
                                   "ended_at", "updated_at", "error_tail", "host",
                                   "pending_reason"]
    assert rec.state == records.PLANNED and rec.last_job_id is None and rec.updated_at


def test_missing_keys_read_as_new_and_unknown_keys_are_kept(tmp_path: Path) -> None:
    _write(tmp_path, "r3", json.dumps({"state": "running", "job_ids": ["local-12"],
                                       "note": "by hand"}))
    rec = records.read_record(tmp_path, "r3")
    assert rec.run_id == "r3" and rec.attempts == 0 and rec.extra == {"note": "by hand"}
    assert list(rec.to_json())[-1] == "note"
    copy = rec.copy()
    copy.job_ids.append("local-13")
    assert rec.job_ids == ["local-12"]


def test_scan_sets_corrupt_records_apart(tmp_path: Path) -> None:
    _write(tmp_path, "good", OLD_BYTES.replace('"r1"', '"good"'))
    _write(tmp_path, "bad", "{not json")
    _write(tmp_path, "odd", json.dumps({"state": "sleeping"}))
    (tmp_path / "runs" / "empty").mkdir()
    found, corrupt = records.scan_records(tmp_path)
    assert list(found) == ["good"] and sorted(corrupt) == ["bad", "odd"]
    assert "delete it" in str(corrupt["bad"]) and corrupt["odd"].run_id == "odd"
    assert records.read_record(tmp_path, "never") is None
    with pytest.raises(records.CorruptRecord, match="not valid JSON"):
        records.read_record(tmp_path, "bad")
    assert records.scan_records(tmp_path / "nowhere") == ({}, {})

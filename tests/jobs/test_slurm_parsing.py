"""Parsing what sacct prints: pending array ranges, states -> ledger states."""

from __future__ import annotations

from jobs import ledger
from jobs.executors.slurm_client import SACCT_TO_LEDGER, _expand


def test_pending_array_ranges_expand_to_tasks() -> None:
    assert _expand("12_[0-2,7%4]") == ["12_0", "12_1", "12_2", "12_7"]
    assert _expand("12_[5]") == ["12_5"]
    assert _expand("12_3") == ["12_3"] and _expand("99") == ["99"]


def test_every_scheduler_end_state_maps_to_a_ledger_state() -> None:
    assert set(SACCT_TO_LEDGER.values()) <= set(ledger.STATES)
    assert SACCT_TO_LEDGER["TIMEOUT"] == "timeout" and SACCT_TO_LEDGER["OUT_OF_MEMORY"] == "failed"
    assert SACCT_TO_LEDGER["CANCELLED"] == "cancelled" and SACCT_TO_LEDGER["PENDING"] == "submitted"

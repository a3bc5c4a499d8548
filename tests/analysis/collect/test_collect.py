"""flame collect: results.csv from real run artefacts, flags, and damaged files."""

from __future__ import annotations

import json
import math
import os

import pandas as pd
import pytest
from omegaconf import OmegaConf

from analysis.collect.results import collect_run, collect_sweep
from jobs.cli import main
from sweep.errors import ConfigError
from sweep.io import atomic_write_text, run_dir
from tests.analysis.conftest import final_loss, plan_sweep, write_run
from trainers.run import train_run


def _by_id(results: pd.DataFrame, run_id: str) -> dict:
    return results.set_index("run_id").loc[run_id].to_dict()


def test_completed_sweep_all_ok(demo_sweep):
    sweep, plan = demo_sweep
    assert main(["collect", f"sweep_dir={sweep}"]) == 0
    results = pd.read_csv(sweep / "results.csv", dtype={"run_id": str})
    assert list(results["run_id"]) == list(plan["run_id"])
    assert set(plan.columns) <= set(results.columns)
    assert (results["flag"] == "ok").all() and (results["status"] == "completed").all()
    for row in plan.to_dict(orient="records"):
        got = _by_id(results, row["run_id"])
        assert got["final_val_loss"] == pytest.approx(final_loss(row), rel=1e-12)
        assert got["best_val_loss"] == pytest.approx(got["final_val_loss"])
        assert got["iterations_done"] == row["train_iters"]
        assert got["tokens_seen"] == row["tokens"]
        assert got["source"] == "metrics.jsonl"


def test_truncated_nan_diverged_missing(tmp_path):
    sweep = tmp_path / "s"
    rows = plan_sweep(sweep).to_dict(orient="records")
    truncated, nan_run, diverged, missing, failed, ok = rows[:6]
    # Truncated: a run cut mid-write; both files end in half a line.
    rd = write_run(sweep, truncated, state="running", upto=0.5)
    for name in ("train.log", "metrics.jsonl"):
        size = (rd / name).stat().st_size
        os.truncate(rd / name, size - 17)
    write_run(sweep, nan_run, losses=lambda it: math.nan if it > 10 else 3.0)
    write_run(sweep, diverged, losses=lambda it: 2.5 if it < diverged["train_iters"] else 4.0)
    write_run(sweep, failed, state="failed", upto=0.0)
    write_run(sweep, ok)
    results = collect_sweep(sweep)
    flags = {r: _by_id(results, rows[i]["run_id"]) for i, r in enumerate(
        ["truncated", "nan", "diverged", "missing", "failed", "ok"])}
    assert flags["truncated"]["flag"] == "incomplete"
    assert "state=running" in flags["truncated"]["reason"]
    assert 0 < flags["truncated"]["iterations_done"] < truncated["train_iters"]
    assert math.isfinite(flags["truncated"]["final_val_loss"])
    assert flags["nan"]["flag"] == "nan" and "non-finite" in flags["nan"]["reason"]
    assert flags["diverged"]["flag"] == "diverged"
    assert flags["diverged"]["final_val_loss"] == pytest.approx(4.0)
    assert flags["diverged"]["best_val_loss"] == pytest.approx(2.5)
    assert flags["missing"]["flag"] == "missing" and "never launched" in flags["missing"]["reason"]
    assert math.isnan(flags["missing"]["final_val_loss"])
    assert flags["missing"]["status"] == "planned"
    assert flags["failed"]["flag"] == "missing" and flags["failed"]["status"] == "failed"
    assert flags["ok"]["flag"] == "ok"
    assert (results["flag"] == "missing").sum() == len(rows) - 4  # untouched, failed


def test_corrupt_files_never_crash(tmp_path):
    sweep = tmp_path / "s"
    rows = plan_sweep(sweep).to_dict(orient="records")
    rd = write_run(sweep, rows[0])
    (rd / "metrics.jsonl").write_bytes(b"\x00\xff{not json\n" * 50)
    (rd / "state.json").write_text("{\"state\": ")
    rd2 = write_run(sweep, rows[1])
    (rd2 / "train.log").write_bytes(os.urandom(4096))
    (rd2 / "metrics.jsonl").unlink()
    results = collect_sweep(sweep)
    first, second = _by_id(results, rows[0]["run_id"]), _by_id(results, rows[1]["run_id"])
    # metrics.jsonl is garbage, so the losses come from train.log (Megatron's 7 digits).
    assert first["source"] == "train.log"
    assert first["final_val_loss"] == pytest.approx(final_loss(rows[0]), rel=1e-6)
    assert first["status"] == "unknown" and "state.json unreadable" in first["reason"]
    assert first["flag"] == "incomplete"
    assert second["flag"] == "missing"


def test_train_log_used_when_metrics_lag(tmp_path):
    sweep = tmp_path / "s"
    row = plan_sweep(sweep).to_dict(orient="records")[0]
    rd = write_run(sweep, row)
    lines = (rd / "metrics.jsonl").read_text().splitlines()
    (rd / "metrics.jsonl").write_text("\n".join(lines[:len(lines) // 2]) + "\n")
    got = collect_run(rd, row)
    assert got.source == "train.log" and got.flag == "ok"
    assert got.iterations_done == row["train_iters"]


def _tensorboard_run(rd, values: dict[int, float]) -> None:
    """Real event files, as Megatron's --tensorboard-dir holds (scalars per iteration)."""
    from torch.utils.tensorboard import SummaryWriter  # torch: only where it runs (tests/lazy.py)

    writer = SummaryWriter(log_dir=str(rd / "tensorboard"))
    for step, value in values.items():
        writer.add_scalar("lm loss", value + 0.05, step)
        writer.add_scalar("lm loss validation", value, step)
    writer.close()


def test_tensorboard_events(tmp_path):
    sweep = tmp_path / "s"
    rows = plan_sweep(sweep).to_dict(orient="records")
    row = rows[0]
    total = int(row["train_iters"])
    rd = run_dir(sweep, row["run_id"])
    _tensorboard_run(rd, {total // 2: 3.2, total: 3.0})
    (rd / "state.json").write_text('{"state": "completed"}')
    got = collect_run(rd, row)
    assert got.source == "tensorboard" and got.flag == "ok"
    assert got.final_val_loss == pytest.approx(3.0) and got.iterations_done == total
    # A truncated event file yields what precedes the damage, never an exception.
    event = next((rd / "tensorboard").glob("events.out.tfevents.*"))
    os.truncate(event, event.stat().st_size - 9)
    got = collect_run(rd, row)
    assert got.source == "tensorboard" and got.final_val_loss == pytest.approx(3.2)
    assert got.flag == "incomplete"


def test_missing_plan_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="flame plan"):
        collect_sweep(tmp_path)
    assert main(["collect", f"sweep_dir={tmp_path}"]) == 2


def test_simulated_trainer_artefacts(tmp_path):
    """The real simulated trainer (trainers.run.train_run) writes what collect reads."""
    sweep = tmp_path / "s"
    assert main(["plan", f"sweep_dir={sweep}", "trainer=simulated"]) == 0
    cfg = OmegaConf.to_container(OmegaConf.load(sweep / "config.yaml"), resolve=True)
    plan = pd.read_csv(sweep / "plan.csv", dtype={"run_id": str})
    summaries = {}
    for row in plan.to_dict(orient="records"):
        rd = run_dir(sweep, row["run_id"])
        summaries[row["run_id"]] = train_run(row, cfg, rd)
        atomic_write_text(rd / "state.json", json.dumps({"run_id": row["run_id"],
                                                         "state": "completed"}))
    results = collect_sweep(sweep)
    assert (results["flag"] == "ok").all(), results[["flag", "reason"]]
    # its log lines carry made-up MoE losses: no routing is read from them
    assert (results["routing_status"] == "unknown").all()
    assert results["routing_aux_loss"].isna().all() and not (sweep / "routing.csv").exists()
    for rec in results.to_dict(orient="records"):
        summary = summaries[rec["run_id"]]
        assert rec["final_val_loss"] == pytest.approx(summary["final_val_loss"], rel=1e-12)
        assert rec["iterations_done"] == summary["iterations"]
        assert rec["tokens_seen"] == summary["tokens"]

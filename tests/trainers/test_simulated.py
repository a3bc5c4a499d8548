"""The simulated trainer and the train_run contract: artefacts, law, resume, signals."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from pathlib import Path

import pytest

from sweep.errors import ConfigError
from trainers.logformat import parse_lines
from trainers.run import Preempted, train_run


def _metrics(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    for r in records:
        r.pop("time"), r.pop("tokens_per_s", None)
    return records


def test_writes_megatron_log_and_metrics(sim_plan, tmp_path):
    rows, cfg = sim_plan
    run_dir = tmp_path / "runs" / rows[0]["run_id"]
    summary = train_run(rows[0], cfg, run_dir)
    parsed = parse_lines(open(run_dir / "train.log"))
    iters = int(rows[0]["train_iters"])
    assert summary["iterations"] == iters
    assert parsed.train[-1]["iteration"] == iters
    assert parsed.validation[-1]["final"] and parsed.last_val_loss == pytest.approx(
        summary["final_val_loss"], rel=1e-6)
    evals = [r for r in _metrics(run_dir) if r["kind"] == "eval"]
    assert evals[-1]["final"] and evals[-1]["consumed_tokens"] == int(rows[0]["tokens"])
    # the loss curve falls along training
    assert evals[0]["val_loss"] > evals[-1]["val_loss"]


def test_final_loss_follows_the_law(sim_plan, tmp_path):
    rows, cfg = sim_plan
    cfg["trainer"]["noise"] = 0.0
    law = cfg["trainer"]["law"]
    for row in rows[:3]:
        got = train_run(row, cfg, tmp_path / row["run_id"])["final_val_loss"]
        n, d = float(row["n_active_flame"]), float(row["tokens"])
        want = law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]
        assert got == pytest.approx(want, rel=1e-12)


def test_deterministic_and_seeded(sim_plan, tmp_path):
    rows, cfg = sim_plan
    a = train_run(rows[1], cfg, tmp_path / "a")["final_val_loss"]
    b = train_run(rows[1], cfg, tmp_path / "b")["final_val_loss"]
    cfg["trainer"]["seed"] += 1
    c = train_run(rows[1], cfg, tmp_path / "c")["final_val_loss"]
    assert a == b and a != c


def _signal_soon(signum: int, delay: float) -> threading.Timer:
    timer = threading.Timer(delay, os.kill, (os.getpid(), signum))
    timer.start()
    return timer


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM])
def test_signal_checkpoints_then_resume_matches(sim_plan, tmp_path, signum):
    rows, cfg = sim_plan
    cfg["trainer"]["seconds_per_run"] = 1.0
    whole = train_run(rows[0], cfg, tmp_path / "whole")
    cut = tmp_path / "cut"
    _signal_soon(signum, 0.3)
    with pytest.raises(Preempted) as info:
        train_run(rows[0], cfg, cut)
    assert 0 < info.value.iteration < whole["iterations"]
    assert (cut / "checkpoints").is_dir()
    # the default handler is back once train_run has returned
    assert signal.getsignal(signum) == signal.SIG_DFL
    resumed = train_run(rows[0], cfg, cut)
    assert resumed["resumed_from"] == info.value.iteration
    assert resumed["final_val_loss"] == whole["final_val_loss"]
    assert _metrics(cut) == _metrics(tmp_path / "whole")  # no duplicated or missing records


def test_previous_handler_called_after_checkpoint(sim_plan, tmp_path):
    rows, cfg = sim_plan
    cfg["trainer"]["seconds_per_run"] = 0.6
    run_dir = tmp_path / "run"
    seen: list[tuple[int, bool]] = []
    previous = signal.signal(signal.SIGUSR2, lambda s, f: seen.append(
        (s, (run_dir / "checkpoints").exists())))
    try:
        _signal_soon(signal.SIGUSR2, 0.2)
        summary = train_run(rows[0], cfg, run_dir)  # the handler returns: training goes on
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [(signal.SIGUSR2, True)]
    assert math.isfinite(summary["final_val_loss"])


def test_completed_run_called_again_returns_its_result(sim_plan, tmp_path):
    rows, cfg = sim_plan
    first = train_run(rows[2], cfg, tmp_path / "r")
    again = train_run(rows[2], cfg, tmp_path / "r")
    assert again["final_val_loss"] == first["final_val_loss"]
    assert len(parse_lines(open(tmp_path / "r" / "train.log")).validation) == 5


def test_bad_trainer_name_and_law(sim_plan, tmp_path):
    rows, cfg = sim_plan
    with pytest.raises(ConfigError, match="trainer.name"):
        train_run(rows[0], {**cfg, "trainer": {"name": "nope"}}, tmp_path)
    cfg["trainer"]["law"].pop("beta")
    with pytest.raises(ConfigError, match=r"trainer.law.*beta"):
        train_run(rows[0], cfg, tmp_path)


def test_replicates_draw_their_own_noise(planner, tmp_path):
    rows, cfg = planner(tmp_path / "p", "trainer=simulated", "planner.seeds=2")
    first, second = rows[0], rows[1]
    assert (first["replicate"], second["replicate"]) == ("0", "1")
    assert first["run_id"] != second["run_id"] and first["tokens"] == second["tokens"]
    a = train_run(first, cfg, tmp_path / first["run_id"])["final_val_loss"]
    b = train_run(second, cfg, tmp_path / second["run_id"])["final_val_loss"]
    assert a != b and a == pytest.approx(b, rel=0.2)  # same run, other noise

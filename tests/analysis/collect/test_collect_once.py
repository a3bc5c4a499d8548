"""`flame collect` reads each run's files once: its losses, routing and (Megatron) speed come
from one parse of metrics.jsonl, train.log and each TensorBoard event file
(``trainers.readers.reading``), where each reader alone read them again."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_file_loader

import trainers.readers as readers
from analysis.collect.results import collect_sweep
from jobs.cli import main
from sweep.io import atomic_write_text, run_dir
from tests.analysis.collect.test_routing import _standin_run
from tests.analysis.conftest import plan_sweep, write_run
from trainers.artifacts import RunLog


@pytest.fixture
def reads(monkeypatch) -> Counter:
    """Every read of a run's text files (``readers.lines``) and event files, by path."""
    counts: Counter = Counter()
    lines, loader = readers.lines, event_file_loader.EventFileLoader

    def counted_lines(path: Path) -> list[str]:
        counts[Path(path)] += 1
        return lines(path)

    class CountedLoader(loader):
        def __init__(self, path, *args, **kwargs):
            counts[Path(path)] += 1
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(readers, "lines", counted_lines)
    monkeypatch.setattr(event_file_loader, "EventFileLoader", CountedLoader)
    return counts


def test_embedded_losses_and_routing_from_one_parse_per_run(tmp_path, reads):
    sweep = tmp_path / "s"
    rows = plan_sweep(sweep).to_dict(orient="records")[:3]
    for k, row in enumerate(rows):
        rd = write_run(sweep, row)
        share = [0.5, 0.5, 0.0, 0.0] if k == 2 else [0.25] * 4  # the third: two starved experts
        RunLog(rd).routing(iteration=int(row["train_iters"]), layers=[
            {"layer": 1, "expert_fraction": share, "load_max_mean": 4 * max(share),
             "entropy": 0.9, "aux_loss": 1.0, "z_loss": 0.1}])
    results = collect_sweep(sweep).set_index("run_id")
    for k, row in enumerate(rows):
        rd = run_dir(sweep, row["run_id"])
        assert reads[rd / "metrics.jsonl"] == 1  # loss and routing: one parse
        assert reads[rd / "train.log"] == 0  # metrics.jsonl held the final evaluation
        got = results.loc[row["run_id"]]
        assert got["flag"] == "ok" and got["source"] == "metrics.jsonl"
        assert got["routing_status"] == ("collapsed" if k == 2 else "ok")


def test_megatron_losses_routing_and_speed_from_one_parse(tmp_path, reads):
    sweep = tmp_path / "s"
    assert main(["plan", f"sweep_dir={sweep}", "experiment=megatron_smoke"]) == 0
    run_id = (sweep / "plan.csv").read_text().splitlines()[1].split(",")[0]
    rd = run_dir(sweep, run_id)
    shutil.copytree(_standin_run(tmp_path, "--moe-per-layer-logging"), rd)
    atomic_write_text(rd / "state.json", json.dumps({"run_id": run_id, "state": "completed"}))
    reads.clear()
    got = collect_sweep(sweep).set_index("run_id").loc[run_id]
    events = sorted((rd / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and all(reads[path] == 1 for path in events)  # losses and per-layer routing
    assert reads[rd / "train.log"] == 1  # speed (and what TensorBoard lacks)
    assert reads[rd / "metrics.jsonl"] <= 1
    assert got["source"] in ("train.log", "tensorboard") and got["gpu_hours_spent"] > 0
    assert got["routing_aux_loss"] > 0 and got["routing_status"] in ("ok", "collapsed")
    layers = __import__("pandas").read_csv(sweep / "routing.csv")
    assert sorted(layers["layer"]) == [1, 2]  # per layer: --moe-per-layer-logging

"""The embedded trainer end to end on the real corpus: it learns, resumes exactly, defers
signals, keeps validation out of training, and reads a user's jsonl."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from pathlib import Path

import pytest

from tests.lazy import LazyModule
from tests.trainers.conftest import make_plan
from trainers.embedded.data import build_datasets, prepare_corpus
from trainers.logformat import parse_lines
from trainers.run import Preempted, train_run
from trainers.settings import DataConfig
from trainers.signals import DeferredSignals

embedded = LazyModule("trainers.embedded.train")  # torch: where it runs (tests/lazy.py)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="module")
def tiny_plan(tmp_path_factory, cache_dir):
    """One real plan row: the demo family's smallest member at a tiny budget (~70 steps)."""
    rows, cfg = make_plan(tmp_path_factory.mktemp("plan"), "family.members=[{hidden_size:32}]",
                          "budgets.flops=[3e10]", "planner.min_iters=10",
                          f"trainer.cache_dir={cache_dir}", "trainer.eval_iters=4")
    return rows[0], cfg


@pytest.fixture
def tiny(tiny_plan, monkeypatch):
    monkeypatch.setenv("FLAME_THREADS", "1")
    row, cfg = tiny_plan
    return dict(row), json.loads(json.dumps(cfg))


@pytest.fixture(scope="module")
def whole(tiny_plan, tmp_path_factory):
    """The tiny run trained once, uninterrupted (shared by the tests that compare with it)."""
    row, cfg = tiny_plan
    run_dir = tmp_path_factory.mktemp("whole")
    os.environ.setdefault("FLAME_THREADS", "1")
    return train_run(dict(row), json.loads(json.dumps(cfg)), run_dir), run_dir


def _records(run_dir: Path) -> list[dict]:
    out = []
    for line in open(run_dir / "metrics.jsonl"):
        rec = json.loads(line)
        out.append({k: v for k, v in rec.items() if k not in ("time", "tokens_per_s")})
    return out


def test_learns_and_writes_artefacts(tiny, whole):
    row, _ = tiny
    summary, run_dir = whole
    assert summary["iterations"] == int(row["train_iters"])
    parsed = parse_lines(open(run_dir / "train.log"))
    assert parsed.validation[-1]["final"]
    assert parsed.last_val_loss == pytest.approx(summary["final_val_loss"], rel=1e-6)
    evals = [r for r in _records(run_dir) if r["kind"] == "eval"]
    assert evals[0]["val_loss"] > evals[-1]["val_loss"]
    assert summary["final_val_loss"] < 0.6 * math.log(256)  # well below uniform over bytes
    assert evals[-1]["consumed_tokens"] == int(row["tokens"])
    assert (run_dir / "checkpoints" / "latest.pt").exists()
    # routing health: one record per evaluation, each MoE layer (the demo's layer 1) once
    routing = [r for r in _records(run_dir) if r["kind"] == "routing"]
    assert [r["iteration"] for r in routing] == [r["iteration"] for r in evals]
    assert [layer["layer"] for layer in routing[-1]["layers"]] == [1]
    assert sum(routing[-1]["layers"][0]["expert_fraction"]) == pytest.approx(1.0)
    assert summary["routing"] == routing[-1]["layers"]


def test_interrupted_then_resumed_equals_uninterrupted(tiny, whole, tmp_path, monkeypatch):
    from trainers.embedded.train import _Loop  # torch: here, not at collection

    row, cfg = tiny
    whole, whole_dir = whole
    cut = tmp_path / "cut"
    step = _Loop._train_step

    def preempted_after_23(loop):  # the test injects the signal, as SLURM would send it
        step(loop)
        if loop.step == 23:
            signals.pending = signal.SIGUSR2

    monkeypatch.setattr(_Loop, "_train_step", preempted_after_23)
    with DeferredSignals() as signals, pytest.raises(Preempted) as info:
        embedded.train(row, cfg, cut, signals)
    assert info.value.iteration == 23
    monkeypatch.undo()
    resumed = train_run(row, cfg, cut)  # a fresh call, as a requeued job makes
    assert resumed["resumed_from"] == 23
    assert resumed["final_val_loss"] == pytest.approx(whole["final_val_loss"], abs=1e-6)
    got, want = _records(cut), _records(whole_dir)
    assert [r.keys() for r in got] == [r.keys() for r in want]
    for a, b in zip(got, want):  # the same log, line for line, no gap and no duplicate
        if a["kind"] == "routing":  # the window open at the cut was carried by the checkpoint
            assert a == b
            continue
        assert {k: v for k, v in a.items() if k != "kind"} == pytest.approx(
            {k: v for k, v in b.items() if k != "kind"}, abs=1e-6)
    assert resumed["routing"] == whole["routing"]


def test_sigusr2_saves_checkpoint_and_raises_preempted(tiny, tmp_path):
    row, cfg = tiny
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR2))
    timer.start()
    with pytest.raises(Preempted) as info:
        train_run(row, cfg, tmp_path / "run")
    timer.join()
    assert 0 < info.value.iteration < int(row["train_iters"])
    resumed = train_run(row, cfg, tmp_path / "run")
    assert resumed["resumed_from"] == info.value.iteration
    assert resumed["iterations"] == int(row["train_iters"])


def test_train_and_validation_documents_are_disjoint(cache_dir):
    cfg = DataConfig()
    corpus = prepare_corpus(cfg, str(cache_dir))
    assert corpus.tokens > 5_000_000 and corpus.documents > 400
    train, valid = build_datasets(corpus, cfg, 128, 1000, 100)
    train_docs, valid_docs = set(train.indices.tolist()), set(valid.indices.tolist())
    assert train_docs and valid_docs and not train_docs & valid_docs
    # every sample the trainer reads is cut from training documents only
    assert set(train.document_index.tolist()) <= train_docs


def test_user_jsonl_corpus(tmp_path):
    lines = [json.dumps({"text": f"document {i}: " + "the quick brown fox. " * 40})
             for i in range(60)]
    (tmp_path / "mine.jsonl").write_text("\n".join(lines))
    cfg = DataConfig(paths=[str(tmp_path / "*.jsonl")], split="80,20,0")
    corpus = prepare_corpus(cfg, str(tmp_path / "cache"))
    assert corpus.documents == 60
    assert corpus.tokens == sum(len(json.loads(line)["text"]) + 1 for line in lines)
    train, valid = build_datasets(corpus, cfg, 64, 50, 10)
    assert bytes(train[0]["tokens"].numpy().astype("uint8")).replace(b"\0", b"").decode()


def test_replicates_start_from_different_weights(tiny_plan, tmp_path):
    import dataclasses

    from sweep.planrow import PlanRow
    from trainers.embedded.train import _Loop
    from trainers.settings import Recipe, trainer_config
    row, cfg = tiny_plan
    spec, recipe = PlanRow.of(dict(row)), Recipe.from_cfg(cfg["training"])
    ecfg = trainer_config(cfg["trainer"])

    def weights(replicate: int, name: str) -> list:
        loop = _Loop(dataclasses.replace(spec, replicate=replicate), recipe, ecfg, tmp_path / name)
        return [p.detach().clone() for p in loop.model.parameters()]

    first, other = weights(0, "a"), weights(1, "b")  # replicate 0 seeds as before: PlanRow.seed
    assert any(x.dim() > 1 and not (x == y).all() for x, y in zip(first, other))

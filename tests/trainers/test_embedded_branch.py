"""WSD cooldown branches on the embedded trainer (issue 14): a trunk trained to its branch step
and a branch trained on from its checkpoint give, bit for bit, the losses of one run that trains
the branch's schedule straight through; a requeued branch resumes from its own checkpoint; the
data gives the same sample i whatever length a run asks for."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from sweep.io import CHECKPOINTS_DIR
from sweep.planrow import PlanRow
from tests.lazy import LazyModule
from tests.trainers.conftest import make_plan
from trainers.artifacts import branch_checkpoint, branch_ready
from trainers.embedded.data import build_datasets, prepare_corpus
from trainers.run import Preempted, train_run
from trainers.schedule import WSD
from trainers.settings import DataConfig, Recipe
from trainers.signals import DeferredSignals

embedded = LazyModule("trainers.embedded.train")  # torch: where it runs (tests/lazy.py)
torch = LazyModule("torch")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="module")
def branch_plan(tmp_path_factory, cache_dir):
    """A real branch plan: one size at two budgets (31 and 51 iterations of 4 sequences), so
    one trunk (to iteration 41) with branches at 25 and 41; every iteration logged."""
    rows, cfg = make_plan(tmp_path_factory.mktemp("plan"), "planner.strategy=branches",
                          "family.members=[{hidden_size:16,budgets:[1.2e9,2e9]}]",
                          "budgets.flops=[1.2e9,2e9]", "planner.min_iters=10",
                          "planner.global_batch_size=4", "training.warmup_fraction=0.1",
                          f"trainer.cache_dir={cache_dir}", "trainer.eval_iters=2",
                          "trainer.eval_batch_size=4", "trainer.eval_interval=5",
                          "trainer.log_interval=1")
    rows = [PlanRow.from_csv(r) for r in rows]
    trunk = next(r for r in rows if r.role == "trunk")
    return trunk, [r for r in rows if r.role == "branch"], cfg


@pytest.fixture(scope="module")
def trained(branch_plan, tmp_path_factory):
    """The trunk, then its longer branch, each trained once in its own run directory."""
    torch.set_num_threads(1)
    trunk, branches, cfg = branch_plan
    runs = tmp_path_factory.mktemp("sweep") / "runs"
    longest = max(branches, key=lambda b: b.train_iters)
    train_run(trunk.to_csv(), cfg, runs / trunk.run_id)
    summary = train_run(longest.to_csv(), cfg, runs / longest.run_id)
    return runs, longest, summary


def _records(run_dir: Path, kind: str) -> dict[int, float]:
    key = {"train": "train_loss", "eval": "val_loss"}[kind]
    lines = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    return {r["iteration"]: r[key] for r in lines if r["kind"] == kind}


def test_plan_and_schedules(branch_plan):
    trunk, branches, cfg = branch_plan
    assert trunk.save_steps == (25, 41) and trunk.train_iters == 41 and trunk.warmup_iters == 3
    assert sorted((b.branch_step, b.train_iters) for b in branches) == [(25, 31), (41, 51)]
    recipe = Recipe.from_cfg(cfg["training"])
    long = WSD.for_row(recipe, max(branches, key=lambda b: b.train_iters))
    trunk_lr = WSD.for_row(recipe, trunk)
    assert [trunk_lr(i) for i in (1, 3, 4, 41)] == pytest.approx([recipe.lr / 3, recipe.lr,
                                                                   recipe.lr, recipe.lr])
    assert [long(i) for i in range(1, 42)] == [trunk_lr(i) for i in range(1, 42)]
    assert long(51) == pytest.approx(recipe.min_lr) and long(46) < recipe.lr


def test_trunk_then_branch_equals_one_run_straight_through(branch_plan, trained, tmp_path):
    trunk, _, cfg = branch_plan
    runs, branch, summary = trained
    # the trunk kept both branch steps, atomically, and they are ready for their branches
    trunk_dir = runs / trunk.run_id
    assert all(branch_ready(trunk_dir, s, "embedded") for s in (25, 41))
    assert sorted(p.name for p in (trunk_dir / CHECKPOINTS_DIR).iterdir()) == [
        "iter_0000025.pt", "iter_0000041.pt", "latest.pt"]
    # the same schedule as an ordinary WSD run: warmup 3/51, decay 10/51 of the iterations
    straight = dict(cfg, training=dict(cfg["training"], warmup_fraction=3 / 51,
                                       decay_fraction=10 / 51))
    row = PlanRow.from_csv(branch.to_csv())
    independent = PlanRow(**{**vars(row), "run_id": "0123456789ab", "role": "", "parent": "",
                             "branch_step": 0, "warmup_iters": 0})
    ref = train_run(independent.to_csv(), straight, tmp_path / "straight")
    assert summary["final_val_loss"] == ref["final_val_loss"]  # bit for bit
    ref_train, ref_eval = _records(tmp_path / "straight", "train"), _records(
        tmp_path / "straight", "eval")
    trunk_train = _records(trunk_dir, "train")
    assert trunk_train == {i: ref_train[i] for i in range(1, 42)}
    assert _records(runs / branch.run_id, "train") == {i: ref_train[i] for i in range(42, 52)}
    assert _records(runs / branch.run_id, "eval") == {i: ref_eval[i] for i in (45, 50, 51)}
    log = (runs / branch.run_id / "train.log").read_text().splitlines()
    assert log[0] == f" branching from trunk {trunk.run_id} at iteration 41"
    assert summary["resumed_from"] is None and summary["iterations"] == 51


def test_requeued_branch_resumes_from_its_own_checkpoint(branch_plan, trained, tmp_path,
                                                           monkeypatch):
    from trainers.embedded.train import _Loop  # torch: here, not at collection

    trunk, _, cfg = branch_plan
    runs, branch, whole = trained
    run_dir = runs.parent / "again" / branch.run_id
    (runs.parent / "again").mkdir()
    (runs.parent / "again" / trunk.run_id).symlink_to(runs / trunk.run_id)
    step = _Loop._train_step

    def preempted_after_47(loop):  # as SLURM's signal would arrive
        step(loop)
        if loop.step == 47:
            signals.pending = signal.SIGUSR2

    monkeypatch.setattr(_Loop, "_train_step", preempted_after_47)
    with DeferredSignals() as signals, pytest.raises(Preempted):
        embedded.train(branch.to_csv(), cfg, run_dir, signals)
    monkeypatch.undo()
    resumed = train_run(branch.to_csv(), cfg, run_dir)
    assert resumed["resumed_from"] == 47 and resumed["final_val_loss"] == whole["final_val_loss"]
    assert _records(run_dir, "train") == _records(runs / branch.run_id, "train")
    assert _records(run_dir, "eval") == _records(runs / branch.run_id, "eval")


def test_a_branch_without_its_trunk_checkpoint_refuses(branch_plan, tmp_path):
    _, branches, cfg = branch_plan
    short = min(branches, key=lambda b: b.train_iters)
    assert not branch_ready(tmp_path / "runs" / short.parent, 25, "embedded")
    with pytest.raises(RuntimeError, match=f"trunk {short.parent} has no checkpoint at "
                                           "iteration 25"):
        train_run(short.to_csv(), cfg, tmp_path / "runs" / short.run_id)
    assert branch_checkpoint(tmp_path, 24, "simulated").name == "iter_0000024.json"


def test_sample_i_is_the_same_whatever_length_is_asked(cache_dir):
    cfg = DataConfig()
    corpus = prepare_corpus(cfg, str(cache_dir))
    short, _ = build_datasets(corpus, cfg, 128, 96, 8)
    long, _ = build_datasets(corpus, cfg, 128, 60_000, 8)  # ~7.7M tokens: the demo's longest run
    for i in (0, 1, 57, 95):
        assert torch.equal(short[i]["tokens"], long[i]["tokens"])
    assert len(long) == len(short) >= 60_000  # both one epoch: the same shuffle


@pytest.mark.slow  # a second interpreter (~5 s); the requeue test above covers the default suite
def test_sigkilled_branch_resumes_bit_exact(branch_plan, trained, tmp_path):
    import subprocess
    import sys
    import time
    trunk, _, cfg = branch_plan
    runs, branch, whole = trained
    sweep = tmp_path / "runs"
    sweep.mkdir()
    (sweep / trunk.run_id).symlink_to(runs / trunk.run_id)
    run_dir = sweep / branch.run_id
    (tmp_path / "job.json").write_text(json.dumps({"row": branch.to_csv(), "cfg": cfg}))
    code = ("import json, sys; from trainers.run import train_run; "
            "job = json.load(open(sys.argv[1])); "
            "train_run(job['row'], job['cfg'], sys.argv[2])")
    # slow each step down so that the kill lands between the branch's own checkpoints
    env = {**os.environ, "FLAME_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "import time, trainers.embedded.train as t; "
                             "step = t._Loop._train_step; "
                             "t._Loop._train_step = lambda self: (step(self), time.sleep(0.2)); "
                             + code, str(tmp_path / "job.json"), str(run_dir)], env=env)
    latest = run_dir / CHECKPOINTS_DIR / "latest.pt"
    deadline = time.time() + 120
    while not latest.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    assert latest.exists() and not (run_dir / "summary.json").exists()
    resumed = train_run(branch.to_csv(), cfg, run_dir)
    assert resumed["resumed_from"] and resumed["final_val_loss"] == whole["final_val_loss"]
    assert _records(run_dir, "train") == _records(runs / branch.run_id, "train")
    assert _records(run_dir, "eval") == _records(runs / branch.run_id, "eval")

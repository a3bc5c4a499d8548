"""Golden numbers: one small embedded run's evaluation losses, pinned in
tests/trainers/data/golden_embedded.json beside the environment that computed them.

A run_id pins what a run is, not the numbers it gives; this test pins the numbers of one. What
may differ, measured (docs/numerics.md): on the same torch version, CPU capability
(``torch.backends.cpu.get_cpu_capability()``) and one thread, every loss is equal to the last
digit, run after run and commit after commit. Another capability picks other vectorised kernels
(ATEN_CPU_CAPABILITY=default against AVX2 here: the first two evaluations equal, the last two
1.1e-4 and 1.4e-4 apart, relatively), and two threads instead of one split reductions
differently (7.3e-4 at the last evaluation): then the losses must agree to ``TOLERANCE``. The
corpus is the Python standard library's sources, so another Python version trains on other
text: skipped. A deliberate change of the embedded trainer's numbers bumps
``EmbeddedTrainer.numerics_version`` (and its conf/trainer/embedded.yaml value) and rewrites the
file: ``python -m tests.trainers.test_golden_embedded``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import pytest

from trainers.embedded.trainer import EmbeddedTrainer

GOLDEN = Path(__file__).with_name("data") / "golden_embedded.json"
OVERRIDES = ["family.members=[{hidden_size:32}]", "budgets.flops=[3e10]", "planner.min_iters=10",
             "trainer.eval_iters=4"]
TOLERANCE = 2e-3
"""Relative, for another CPU capability or torch version (3x the largest difference measured)."""


def environment() -> dict:
    """What the numbers depend on besides the code."""
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo()
                if line.startswith("model name")), platform.processor())
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(), "threads": torch.get_num_threads(), "cpu": cpu,
            "machine": platform.machine()}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def golden_run(where: Path) -> dict:
    """Plan and train the golden run into ``where``; its record (as the file holds it)."""
    from tests.trainers.conftest import make_plan
    from trainers.embedded.data import prepare_corpus
    from trainers.run import train_run
    from trainers.settings import trainer_config

    rows, cfg = make_plan(where / "plan", *OVERRIDES, f"trainer.cache_dir={where / 'cache'}")
    summary = train_run(rows[0], cfg, where / "run")
    corpus = prepare_corpus(trainer_config(cfg["trainer"]).data, str(where / "cache"))
    evals = [(r["iteration"], r["val_loss"]) for r in map(json.loads, open(where / "run" /
             "metrics.jsonl")) if r["kind"] == "eval"]
    return {"run_id": rows[0]["run_id"], "overrides": OVERRIDES,
            "numerics_version": summary["numerics_version"],
            "corpus": {"key": Path(corpus.prefix).parent.name, "tokens": corpus.tokens},
            "evals": evals, "environment": environment()}


def test_the_golden_runs_losses(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAME_THREADS", "1")
    golden = json.loads(GOLDEN.read_text())
    got = golden_run(tmp_path)
    assert got["run_id"] == golden["run_id"], "the plan changed: another run (see run_id)"
    assert got["numerics_version"] == golden["numerics_version"] == \
        EmbeddedTrainer.numerics_version, "numerics_version bumped: rewrite the golden file"
    if got["environment"]["python"] != golden["environment"]["python"]:
        pytest.skip(f"Python {got['environment']['python']}: another standard library, "
                    f"another corpus than the golden run's (Python "
                    f"{golden['environment']['python']})")
    assert got["corpus"] == golden["corpus"]
    iterations = [it for it, _ in golden["evals"]]
    assert [it for it, _ in got["evals"]] == iterations
    same = all(got["environment"][k] == golden["environment"][k]
               for k in ("torch", "cpu_capability", "threads"))
    for (it, loss), (_, want) in zip(got["evals"], golden["evals"]):
        if same:  # the same kernels: every digit (a change here is a change of numerics)
            assert loss == want, (f"iteration {it}: {loss!r} != {want!r}; if on purpose, bump "
                                  "EmbeddedTrainer.numerics_version and rewrite the file")
        else:
            assert loss == pytest.approx(want, rel=TOLERANCE), f"iteration {it}"


if __name__ == "__main__":  # rewrite the golden file (after a deliberate numerics change)
    os.environ["FLAME_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        record = golden_run(Path(tmp))
    GOLDEN.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1), file=sys.stderr)

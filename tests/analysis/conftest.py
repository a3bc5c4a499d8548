"""Fixtures for analysis tests: the reference data sets and real sweep directories.

Sweeps are planned by the real `flame plan` (Hydra composition) and their run artefacts are
written by the trainers' own writer (trainers.artifacts.RunLog), the same code a training job
runs, with losses drawn from a known law instead of a training run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.design.synthetic import Law
from jobs.cli import main
from sweep.io import atomic_write_text, run_dir
from trainers.artifacts import RunLog

DATA = Path(__file__).parent.parent / "data"
# The demo family's losses: a law whose optimum falls inside the demo family's sizes.
DEMO_LAW = Law(E=1.5, A=20.0, B=60.0, alpha=0.35, beta=0.35)


@pytest.fixture(scope="session")
def chinchilla() -> pd.DataFrame:
    """Besiroglu et al.'s 240 points: the 245 digitised ones less the 5 highest losses."""
    raw = pd.read_csv(DATA / "chinchilla_epoch_svg_extracted_data.csv")
    kept = raw.sort_values("loss").iloc[:-5]
    n, c = kept["Model Size"].to_numpy(), kept["Training FLOP"].to_numpy()
    return pd.DataFrame({"budget": c, "n": n, "tokens": c / (6 * n),
                         "loss": kept["loss"].to_numpy()})


@pytest.fixture(scope="session")
def flame48() -> pd.DataFrame:
    """FLAME-MoE's 48 runs with N = active parameters and tokens = C / (6 N)."""
    raw = pd.read_csv(DATA / "flame_moe_sweep_round1_48runs.csv")
    n, c = raw["active_params"].to_numpy(float), raw["flops"].to_numpy(float)
    return pd.DataFrame({"budget": c, "n": n, "tokens": c / (6 * n),
                         "loss": raw["val_loss"].to_numpy()})


def plan_sweep(path: Path) -> pd.DataFrame:
    """A real demo plan (15 runs) in ``path``."""
    assert main(["plan", f"sweep_dir={path}"]) == 0
    return pd.read_csv(path / "plan.csv", dtype={"run_id": str})


def write_run(sweep: Path, row: dict, *, state: str = "completed", upto: float = 1.0,
              losses=None, evals: int = 5) -> Path:
    """Write a run's train.log, metrics.jsonl and state.json as a trainer would."""
    rd = run_dir(sweep, row["run_id"])
    log = RunLog(rd)
    total, batch, seq = int(row["train_iters"]), int(row["global_batch_size"]), \
        int(row["seq_length"])
    last = int(round(total * upto))
    if losses is None:
        losses = lambda it: float(DEMO_LAW.loss(row["n_active_flame"],  # noqa: E731
                                                max(it, 1) * batch * seq))
    marks = sorted({max(1, round(total * k / evals)) for k in range(1, evals + 1)})
    for it in range(1, last + 1):
        if it % max(1, total // 20) == 0 or it == last:
            log.train(iteration=it, train_iters=total, global_batch_size=batch, seq_length=seq,
                      lr=1e-3, train_loss=losses(it) + 0.01, aux_loss=0.01, z_loss=1e-3,
                      grad_norm=1.0, tokens_per_s=1e5, elapsed_ms=10.0)
        if it in marks:
            log.eval(iteration=it, consumed_tokens=it * batch * seq, val_loss=losses(it),
                     final=it == total)
    atomic_write_text(rd / "state.json", json.dumps({
        "run_id": row["run_id"], "state": state, "job_ids": ["1"], "attempts": 1,
        "submitted_at": None, "started_at": None, "ended_at": None, "updated_at": None,
        "error_tail": None}))
    return rd


@pytest.fixture()
def demo_sweep(tmp_path) -> tuple[Path, pd.DataFrame]:
    """A planned demo sweep whose 15 runs all completed."""
    sweep = tmp_path / "sweep"
    plan = plan_sweep(sweep)
    for row in plan.to_dict(orient="records"):
        write_run(sweep, row)
    return sweep, plan


def final_loss(row: dict) -> float:
    return float(DEMO_LAW.loss(row["n_active_flame"], float(row["tokens"])))



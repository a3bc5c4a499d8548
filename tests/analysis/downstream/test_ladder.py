"""Loss to accuracy: the sigmoid recovers a known curve, its bootstrap interval covers what a
new model scores, Spearman reads as FLAME's figure; downstream.json predicts a release's
accuracy from the sweep alone and compares it with the score."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.downstream.ladder import fit_sigmoid, sigmoid, spearman
from analysis.downstream.results import eval_dir
from analysis.downstream.summary import DOWNSTREAM_JSON, write_downstream

TRUE = {"a": 0.5, "k": 6.0, "L0": 1.7, "b": 0.25}  # from chance 0.25 up to 0.75
DOCS = 200


def _scores(loss: np.ndarray, seed: int) -> np.ndarray:
    """Accuracies as a task of DOCS documents scores them: binomial around the curve."""
    rng = np.random.default_rng(seed)
    return rng.binomial(DOCS, sigmoid(loss, *TRUE.values())) / DOCS


def test_the_sigmoid_recovers_the_curve_and_its_interval_covers_new_scores():
    loss = np.linspace(1.3, 2.2, 30)
    fit = fit_sigmoid(loss, _scores(loss, 0), n_boot=60, samples=DOCS)
    assert fit.params is not None and fit.reason == ""
    grid = np.linspace(1.35, 2.15, 9)
    assert np.abs(fit.predict(grid) - sigmoid(grid, *TRUE.values())).max() < 0.04
    assert fit.rmse < 0.05
    inside = 0
    for seed, at in enumerate(np.linspace(1.4, 2.0, 20)):
        low, high = fit.interval(float(at), seed=seed)
        inside += low <= _scores(np.array([at]), 100 + seed)[0] <= high
    assert inside >= 17  # a 95% interval for scores: most new scores fall inside


def test_a_loss_range_short_of_the_ceiling_says_the_curve_past_it_is_a_guess():
    # accuracy falling in a straight line over the runs: no floor or ceiling in sight
    loss = np.linspace(1.9, 2.3, 12)
    fit = fit_sigmoid(loss, np.linspace(0.34, 0.26, 12), n_boot=10)  # a straight line
    assert fit.params is not None and "at the edge of its range" in fit.reason
    assert "a guess" in fit.reason


def test_too_few_runs_give_no_curve_and_say_why():
    fit = fit_sigmoid(np.array([1.5, 1.6, 1.7]), np.array([0.5, 0.45, 0.4]))
    assert fit.params is None and "needs 5" in fit.reason


def test_spearman_is_one_when_lower_loss_always_scores_higher():
    loss = np.array([2.0, 1.8, 1.6, 1.4])
    assert spearman(loss, np.array([0.3, 0.4, 0.5, 0.6])) == pytest.approx(1.0)
    assert spearman(loss, np.array([0.6, 0.5, 0.4, 0.3])) == pytest.approx(-1.0)
    assert math.isnan(spearman(loss, np.full(4, 0.5)))


def _results_json(folder: Path, task: str, acc: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(
        {"results": {task: {"acc,none": acc, "acc_stderr,none": 0.03}},
         "n-samples": {task: {"original": DOCS, "effective": DOCS}}}))


def test_downstream_json_predicts_the_release_from_the_sweep_alone(tmp_path):
    task, source = "toy", tmp_path / "sweep"
    release = source / "release"
    loss = np.linspace(1.3, 2.2, 24)
    acc = _scores(loss, 1)
    ids = [f"run{i:02d}" for i in range(len(loss))]
    source.mkdir()
    pd.DataFrame({"run_id": ids, "budget": np.repeat([1e10, 1e11, 1e12], 8),
                  "flag": "ok", "final_val_loss": loss, f"acc_{task}": acc,
                  f"acc_{task}_stderr": 0.03}).to_csv(source / "results.csv", index=False)
    for run_id, a in zip(ids, acc):
        _results_json(eval_dir(source, run_id), task, a)
    release.mkdir()
    (release / "release.json").write_text(json.dumps({"source": str(source)}))
    pd.DataFrame({"run_id": ["big"], "predicted_approach3": [1.25],
                  "predicted_approach2": [1.3]}).to_csv(release / "prediction.csv", index=False)
    pd.DataFrame({"run_id": ["big"], "flag": ["ok"], "final_val_loss": [1.27]}).to_csv(
        release / "results.csv", index=False)
    _results_json(eval_dir(release, "big"), task, 0.70)
    _results_json(eval_dir(release, "big", "iter_0000100"), task, 0.55)

    document = write_downstream(source, n_boot=40)
    assert json.loads((source / DOWNSTREAM_JSON).read_text())["version"] == 1
    row = document["tasks"][0]
    assert row["task"] == task and row["runs"] == 24 and row["spearman_val_loss"] > 0.8
    assert row["samples"] == DOCS and row["spearman_law_loss"] is None  # no fit.json here
    (pick,) = document["release"]
    assert pick["approach"] == "approach3" and pick["predicted_loss"] == 1.25
    expected = float(sigmoid(1.25, *TRUE.values()))
    assert pick["predicted_low"] < pick["predicted_acc"] < pick["predicted_high"]
    assert abs(pick["predicted_acc"] - expected) < 0.06
    assert pick["scored_acc"] == 0.70 and pick["inside"] is True
    dynamics = [r for r in document["checkpoints"] if r["run_id"] == "big"]
    assert [(r["checkpoint"], r["acc"]) for r in dynamics] == [("iter_0000100", 0.55),
                                                               ("final", 0.70)]
    assert all((source / f).is_file() for f in document["figures"])
    assert write_downstream(release, n_boot=40)["release"] == document["release"]

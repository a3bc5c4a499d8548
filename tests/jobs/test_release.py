"""`flame release`: a fitted sweep's picks trained through the real machinery (simulated
trainer, cluster=local workers, the real CLI in-process), the law's prediction registered
before they train and checked after; a rerun trains nothing that finished; bad input stops
before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis.fit.release_check import PREDICTION_CSV, RELEASE_JSON, file_sha256
from conf.study import load_sweep_config, plan_from_cfg
from jobs.release import choose_picks, prediction_table, release_study, tenths, with_checkpoints
from tests.jobs.conftest import flame

LAW = "trainer.law={E: 0.5, A: 19.74, B: 92.75, alpha: 0.34, beta: 0.348}"
# The demo's design (4 budgets x 3-4 sizes, one seed) with losses drawn from the demo's law;
# one local worker (simulated runs take milliseconds: a second worker costs only its start).
SOURCE = ("experiment=demo", "planner.seeds=1", "trainer=simulated", LAW, "trainer.noise=0.01",
          "fit.bootstrap=50", "fit.figures=false", "cluster.poll_s=0.1", "cluster.parallelism=1")
# The pick at 3e12 and, by hand, its two neighbours in the family at the same budget.
RELEASE = ("--target", "3e12", "--member", "3e12:L2-h40", "--member", "3e12:L2-h80")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("release") / "demo"
    flame("run", f"sweep_dir={sweep}", *SOURCE)
    return sweep


@pytest.fixture(scope="module")
def released(source: Path) -> dict:
    out = flame("release", f"sweep_dir={source}", *RELEASE)
    return {"release": source / "release", "stdout": out.stdout}


def test_release_trains_the_pick_and_checks_the_prediction(source, released):
    release = released["release"]
    link = json.loads((release / RELEASE_JSON).read_text())
    assert link["source"] == str(source.resolve())
    assert link["fit_sha256"] == file_sha256(source / "fit.json")
    selection = pd.read_csv(source / "selection.csv")
    pick = selection.loc[selection["budget"] == 3e12, "member"].item()
    assert [(p["member"], p["how"]) for p in link["picks"]] == \
        [(pick, "selection"), ("L2-h40", "by hand"), ("L2-h80", "by hand")]
    # The pick's plan row is the selection's member, iterations and tokens.
    plan = pd.read_csv(release / "plan.csv", dtype={"run_id": str})
    row = plan[plan["member"] == pick].iloc[0]
    chosen = selection[selection["budget"] == 3e12].iloc[0]
    assert row["train_iters"] == chosen["member_iterations"]
    assert row["tokens"] == chosen["member_tokens"]
    # A checkpoint kept at each tenth of training.
    steps = [int(s) for s in str(row["save_steps"]).split()]
    assert steps == list(tenths(int(row["train_iters"]))) and len(steps) == 10
    kept = sorted((release / "runs" / row["run_id"] / "checkpoints").glob("iter_*"))
    assert len(kept) == 10
    # The check, in the release's results: each verdict is the interval's.
    results = pd.read_csv(release / "results.csv", dtype={"run_id": str})
    assert (results["flag"] == "ok").all()
    assert (results["achieved"] == results["final_val_loss"]).all()
    low, high = results["predicted_approach3_low"], results["predicted_approach3_high"]
    assert (low < results["predicted_approach3"]).all()
    assert (results["predicted_approach3"] < high).all()
    inside = (low <= results["achieved"]) & (results["achieved"] <= high)
    assert (results["inside_approach3"] == inside).all()
    # 3e12 is past the sweep: Approach 2 predicts the loss, with no interval and why
    assert results["predicted_approach2"].notna().all()
    assert results["predicted_approach2_low"].isna().all()
    assert results["predicted_approach2_reason"].str.contains("beyond the sweep").all()
    # Neighbours: each of the three has the others as its neighbours at 3e12.
    mine = results.set_index("member")
    best = mine.loc[pick, "achieved"] <= mine.drop(index=pick)["achieved"].min()
    assert bool(mine.loc[pick, "best_of_neighbours"]) == best
    assert "prediction check" in released["stdout"] and "approach3: predicted" in \
        released["stdout"]


def test_reports_lead_with_the_answer(source, released):
    page = (source / "report.html").read_text()
    ids = [page.index(f'<section id="{s}">') for s in ("answer", "prediction", "study", "fit")]
    assert ids == sorted(ids)
    assert "(Approach 3)" in page.split("<main>")[0]  # the headline names the approach
    release_page = (released["release"] / "report.html").read_text()
    assert '<section id="prediction">' in release_page
    assert '<section id="approach3">' not in release_page  # a release has no fit of its own


def test_a_rerun_trains_nothing_that_finished(source, released):
    release = released["release"]
    plan = pd.read_csv(release / "plan.csv", dtype={"run_id": str})
    lost, kept = plan["run_id"].iloc[0], plan["run_id"].iloc[1]
    summary = release / "runs" / kept / "summary.json"
    before = summary.stat().st_mtime_ns, (release / PREDICTION_CSV).read_bytes()
    shutil.rmtree(release / "runs" / lost)  # as if killed before this run finished
    results = pd.read_csv(release / "results.csv", dtype={"run_id": str})
    results.assign(acc_demo=0.25).to_csv(release / "results.csv", index=False)  # flame eval's
    out = flame("release", f"sweep_dir={source}", *RELEASE)
    assert "launch: 1 runs submitted, 2 already done" in out.stdout
    assert (summary.stat().st_mtime_ns, (release / PREDICTION_CSV).read_bytes()) == before
    assert (release / "runs" / lost / "summary.json").is_file()
    results = pd.read_csv(release / "results.csv", dtype={"run_id": str}).set_index("run_id")
    assert results.loc[kept, "acc_demo"] == 0.25 and results["inside_approach3"].notna().all()


def test_a_replanned_release_keeps_what_it_registered(source, released):
    release = released["release"]
    registered = pd.read_csv(release / PREDICTION_CSV, dtype={"run_id": str})
    registered["predicted_approach3"] = 9.99  # as an earlier fit predicted, before training
    config = load_sweep_config(source)
    picks = choose_picks(source, config, [3e12], ["1e12:L2-h40"])
    study = release_study(source, config, picks, config["cluster"], release)
    the_plan = with_checkpoints(plan_from_cfg(study)[0])
    table = prediction_table(source, the_plan, picks, "n_active_flame", registered)
    kept = table["run_id"].isin(registered["run_id"])
    assert kept.sum() == 1 and (table.loc[kept, "predicted_approach3"] == 9.99).all()
    new = table[~kept].iloc[0]
    assert new["member"] == "L2-h40" and new["how"] == "by hand"
    assert new["predicted_approach3_low"] < new["predicted_approach3"] < 2.0
    assert new["fit_sha256"] == file_sha256(source / "fit.json")


def _one_line_nothing_written(out, sweep: Path, before: set[Path]) -> None:
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert set(sweep.rglob("*")) == before


def test_a_sweep_without_a_fit_is_refused(source, tmp_path):
    sweep = tmp_path / "unfitted"
    sweep.mkdir()
    for name in ("config.yaml", "plan.csv", "results.csv"):
        (sweep / name).write_bytes((source / name).read_bytes())
    before = set(sweep.rglob("*"))
    out = flame("release", f"sweep_dir={sweep}", check=False)
    _one_line_nothing_written(out, sweep, before)
    assert "no fit.json" in out.stderr


def test_a_selection_without_a_member_is_refused(source, tmp_path):
    sweep = tmp_path / "nofamily"
    sweep.mkdir()
    for name in ("config.yaml", "plan.csv", "results.csv", "fit.json"):
        (sweep / name).write_bytes((source / name).read_bytes())
    selection = pd.read_csv(source / "selection.csv").assign(member="")
    selection.to_csv(sweep / "selection.csv", index=False)
    before = set(sweep.rglob("*"))
    out = flame("release", f"sweep_dir={sweep}", check=False)
    _one_line_nothing_written(out, sweep, before)
    assert "no member selected at 3e+12" in out.stderr and "--member" in out.stderr
    for bad in (("--target", "5e12"), ("--member", "3e12:L9-h1"), ("--member", "x:L2-h40")):
        out = flame("release", f"sweep_dir={sweep}", *bad, check=False)
        _one_line_nothing_written(out, sweep, before)


def test_eval_of_a_trainer_without_a_model_is_refused_before_anything_runs(source, tmp_path):
    sweep = tmp_path / "simulated"
    sweep.mkdir()
    for name in ("config.yaml", "plan.csv", "results.csv", "fit.json", "selection.csv"):
        (sweep / name).write_bytes((source / name).read_bytes())
    before = set(sweep.rglob("*"))
    out = flame("release", f"sweep_dir={sweep}", "--target", "3e12", "--eval", check=False)
    _one_line_nothing_written(out, sweep, before)
    assert "trainer=simulated" in out.stderr and "flame eval" in out.stderr


def test_tenths_land_on_megatrons_save_interval():
    # Megatron saves at multiples of train_iters // 10 (and at the end): every kept step is one.
    for iters in (10, 57, 524, 2874):
        steps = tenths(iters)
        assert len(steps) == 10 and steps[-1] == iters
        assert all(s % (iters // 10) == 0 for s in steps[:-1])

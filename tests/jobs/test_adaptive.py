"""Adaptive budgets (issue 13, part 3): `flame run` with planner.adaptive=true on the simulated
trainer and cluster=local, with a prior that puts the optimum 3x too large in N.

experiment=demo_adaptive at three of its five budgets. One study is run as a user would after a
crash: a real `flame run` SIGKILLed between two waves (right after it logged decision 3), then
`flame run` again. On it: every budget is bracketed where a static plan brackets none; every
decision is what the finished runs before it imply (recomputed here from results.csv), so a
rerun cannot decide otherwise; nothing completed before the kill is trained again.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.collect import collect_sweep
from analysis.fit import fit_isoflop, load_sweep_results, used_points
from analysis.settings import FitSettings
from conf.study import study_config
from jobs.adaptive import ADAPTIVE_DIR, decide, fit_points, load_study, read_decisions, replay
from jobs.cli import compose, main
from jobs.launch import launch_sweep
from jobs.status import wait_until_terminal
from jobs.study import run
from sweep.commands import plan as plan_command
from sweep.errors import ConfigError
from sweep.records import RunRecord, scan_records
from tests.jobs.conftest import REPO

STUDY = ("experiment=demo_adaptive", "budgets.flops=[1.0e18,3.0e18,1.0e19]", "fit.bootstrap=0",
         "fit.figures=false", "cluster.poll_s=0.3", "fit.target_budgets=[3.0e19]")
TRUE_LAW = (0.5987, 0.4516)  # the simulated law's optimum, N_opt = k.C^a (demo_adaptive.yaml)
KILLED_AT = "decision_003.json"  # waves 1 and 2 have ended, wave 3 is decided, not planned
# Runs `flame` and SIGKILLs it the moment the file named first lands (atomic rename), as
# kill -9 would: tests/jobs/kill_after.py's device, keyed on a decision instead of a ledger.
KILL_ON_WRITE = """
import os, signal, sys
from jobs.cli import main
real = os.replace
def replace(src, dst, *args, **kwargs):
    real(src, dst, *args, **kwargs)
    if os.fspath(dst).endswith(os.sep + sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
sys.exit(main(sys.argv[2:]))
"""


def decisions(sweep_dir: Path) -> list[str]:
    return [p.read_text() for p in sorted((sweep_dir / ADAPTIVE_DIR).glob("decision_*.json"))]


def ledger(sweep_dir: Path) -> dict[str, RunRecord]:
    return scan_records(sweep_dir)[0]


def run_in_process(sweep_dir: Path, *overrides: str) -> None:
    """`flame run` in this process (the CLI's own function)."""
    cfg = compose([f"sweep_dir={sweep_dir}", *STUDY, *overrides])
    assert run(cfg, argparse.Namespace(no_wait=False, replan=False)) == 0


@pytest.fixture(scope="module")
def crashed(tmp_path_factory) -> tuple[Path, dict]:
    """The study, killed between waves and run again; with what it had done when killed."""
    sweep_dir = tmp_path_factory.mktemp("adaptive")
    killed = subprocess.run([sys.executable, "-c", KILL_ON_WRITE, KILLED_AT, "run",
                             f"sweep_dir={sweep_dir}", *STUDY],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    runs = ledger(sweep_dir)
    before = {"ledger": runs, "decisions": decisions(sweep_dir),
              "logs": {rid: (sweep_dir / "runs" / rid / "train.log").stat().st_mtime_ns
                       for rid in runs}}
    run_in_process(sweep_dir)
    return sweep_dir, before


def test_static_plan_leaves_budgets_unbracketed_adaptive_brackets_all(crashed, tmp_path):
    adaptive, _ = crashed
    cfg = compose([f"sweep_dir={tmp_path}", *STUDY, "planner.adaptive=false"])
    plan_command(study_config(cfg))
    launch_sweep(tmp_path, cfg)
    assert wait_until_terminal(tmp_path, cfg, progress=False).all_terminal
    collect_sweep(tmp_path, cfg)
    settings = FitSettings.from_mapping({"bootstrap": 0})
    static = fit_isoflop(used_points(load_sweep_results(tmp_path / "results.csv", settings)),
                         settings)
    # every budget's sizes start at or above the true optimum: the fit rejects each, saying so
    assert [b.reason for b in static.budgets] == \
        ["not bracketed: the lowest loss is at the smallest size"] * 3
    assert static.n_law is None

    fit = json.loads((adaptive / "fit.json").read_text())
    assert [b["used"] for b in fit["approach2"]["budgets"]] == [True] * 3
    for b in fit["approach2"]["budgets"]:  # within 0.15 decades of the true optimum
        truth = TRUE_LAW[0] * b["budget"] ** TRUE_LAW[1]
        assert abs(math.log10(b["n_opt"] / truth)) < 0.15
    log = read_decisions(adaptive)
    # the cheapest budget first, then again (re-centred below its smallest size), then the others
    assert [d.budget for d in log] == [1e18, 1e18, 3e18, 1e19, None]
    assert log[0].fit is None and "prior" in log[0].law["source"]
    assert log[1].fit["evidence"][0]["edge"] == "low"
    assert log[1].n_centre < log[0].n_centre / 2  # moved towards the true optimum
    assert "every budget is bracketed" in log[-1].reason
    # the plan only grew: every run of every wave is in plan.csv and results.csv, none unplanned
    planned = set(pd.read_csv(adaptive / "plan.csv")["run_id"])
    assert planned == {rid for d in log for rid in d.run_ids}
    results = pd.read_csv(adaptive / "results.csv")
    assert set(results["flag"]) == {"ok"} and len(results) == len(planned)
    assert len(list((adaptive / "history").iterdir())) == len(log) - 2  # one per grown plan


def test_rerun_after_sigkill_between_waves_decides_the_same_and_retrains_nothing(crashed):
    sweep_dir, before = crashed
    assert len(before["decisions"]) == 3 and before["ledger"]
    assert all(r.state == "completed" for r in before["ledger"].values())  # waves 1 and 2
    log = read_decisions(sweep_dir)
    assert decisions(sweep_dir)[:3] == before["decisions"]  # read back, not decided again
    assert {rid for d in log[:2] for rid in d.run_ids} == set(before["ledger"])
    after = ledger(sweep_dir)
    for rid in before["ledger"]:  # nothing completed was trained again
        assert after[rid].attempts == 1
        assert (sweep_dir / "runs" / rid / "train.log").stat().st_mtime_ns == \
            before["logs"][rid]
    # Every decision is a function of the finished runs before it: recomputed from
    # results.csv (those runs only), each is the logged file byte for byte, so a rerun at any
    # point makes the same decisions.
    study = load_study(compose([f"sweep_dir={sweep_dir}", *STUDY]))
    points = used_points(load_sweep_results(sweep_dir / "results.csv", study.fit))
    for i, logged in enumerate(log[1:], start=2):
        earlier = replay(sweep_dir, log[:i - 1], study)
        fitted = fit_points(points[points["run_id"].isin(earlier)].reset_index(drop=True),
                            study)
        assert decide(i, earlier, study, fitted).to_json() == logged.to_json()


@pytest.mark.slow  # 20 s: a second whole study; the default suite checks the same property
def test_rerun_decides_as_an_uninterrupted_run(crashed, tmp_path):  # by recomputation above
    run_in_process(tmp_path)
    assert decisions(tmp_path) == decisions(crashed[0])
    assert set(ledger(tmp_path)) == set(ledger(crashed[0]))


@pytest.mark.slow  # 25 s: killed inside a wave's submission, a half-submitted wave; the rerun
def test_rerun_after_sigkill_inside_a_wave(crashed, tmp_path):  # finishes it and goes on
    # wave 1 queues 8 runs (8 state.json writes by the launcher); the 10th is wave 2's second
    killed = subprocess.run([sys.executable, "-m", "tests.jobs.kill_after", "10", "run",
                             f"sweep_dir={tmp_path}", *STUDY],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    states = [r.state for r in ledger(tmp_path).values()]
    assert states.count("submitted") == 2 and len(states) == 10
    run_in_process(tmp_path)
    assert decisions(tmp_path) == decisions(crashed[0])
    assert all(r.attempts == 1 for r in ledger(tmp_path).values())


def test_adaptive_needs_a_prior_and_unpinned_members(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"planner.adaptive=true: family member .* lists "
                                          r"`budgets`"):
        load_study(compose([f"sweep_dir={tmp_path}", "experiment=demo_adaptive",
                            "family.grid.hidden_size=[]", "family.grid.num_layers=[]",
                            "family.members=[{hidden_size:512,num_layers:12,budgets:[1e18]}]"]))
    assert main(["run", f"sweep_dir={tmp_path / 'new'}", "experiment=demo_adaptive",
                 "planner.prior=null"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "planner.adaptive=true needs planner.prior" in err
    assert not (tmp_path / "new").exists()  # refused before anything is written


def test_no_decision_without_every_run_of_the_wave(tmp_path, capsys):
    """--no-wait returns with wave 1 running; its runs cancelled, `flame run` decides nothing
    (exit 1, the way on named) until they are resubmitted."""
    cli = [f"sweep_dir={tmp_path}", *STUDY, "trainer.seconds_per_run=30"]
    assert main(["run", "--no-wait", *cli]) == 0
    assert "wave 1 is still queued or running" in capsys.readouterr().out
    assert main(["cancel", "--all", *cli]) == 0
    assert main(["run", *cli]) == 1
    assert "did not complete" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / ADAPTIVE_DIR).iterdir()] == ["decision_001.json"]
    with pytest.raises(ConfigError, match=r"budgets.flops=.*the waves logged in .* chose "
                                          r"among \[1e\+18, 3e\+18, 1e\+19\]"):
        run(compose(cli + ["budgets.flops=[1.0e18,3.0e18]"]), argparse.Namespace())
    # the rules the logged decision was made under: the prior and the fit settings it used
    logged = json.loads((tmp_path / ADAPTIVE_DIR / "decision_001.json").read_text())
    assert logged["format"] == 2 and logged["rules"]["fit.min_points"] == 3
    k = logged["rules"]["planner.prior.k"]
    assert main(["run", *cli, f"planner.prior.k={2 * k}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"planner.prior.k={2 * k!r}: the waves logged in " in err \
        and f"were decided with planner.prior.k={k!r}" in err
    with pytest.raises(ConfigError, match=r"^fit.min_points=4: .* decided with "
                                          r"fit.min_points=3; set it back"):
        run(compose(cli + ["fit.min_points=4"]), argparse.Namespace())
    # a format-1 decision (no rules) still reads, unchecked
    logged.pop("rules")
    (tmp_path / ADAPTIVE_DIR / "decision_001.json").write_text(json.dumps(logged | {"format": 1}))
    assert read_decisions(tmp_path)[0].rules == {}



def test_flame_plan_refuses_to_replace_the_waves_plan(crashed):
    sweep_dir, _ = crashed
    plan_before = (sweep_dir / "plan.csv").read_bytes()
    for replan in (False, True):
        with pytest.raises(ConfigError, match=r"is an adaptive study: .* continue it with "
                                              r"`flame run"):
            plan_command(study_config(compose([f"sweep_dir={sweep_dir}", *STUDY])),
                         argparse.Namespace(replan=replan))
    assert (sweep_dir / "plan.csv").read_bytes() == plan_before

"""Megatron-LM trunks and branches (planner.strategy=branches), rendered and run on the
stand-in of core_v0.16.1's pretrain_gpt.py under the real torchrun: a trunk trains at constant
lr after its warmup and keeps checkpoints at exactly its branch steps; a branch loads the
trunk's checkpoint in place (--load + --ckpt-step), overrides the scheduler and decays over its
own iterations, ending exactly where one uninterrupted run with the branch's schedule ends; a
requeued branch resumes from its own checkpoint, not the trunk's again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.errors import ConfigError
from sweep.planrow import PlanRow
from tests.trainers.conftest import STANDIN, standin_overrides, usr2_once_logged
from trainers.logformat import parse_lines
from trainers.megatron import argv_of, render_launch, tracker_iteration
from trainers.megatron_argspec import check_argv
from trainers.run import Preempted, train_run
from trainers.schedule import WSD
from trainers.settings import Recipe

TRUNK, SHORT, LONG = "trunk0000001", "branch000025", "branch000050"
FORBIDDEN = ("--finetune", "--no-load-optim", "--no-load-rng", "--pretrained-checkpoint",
             "--use-checkpoint-opt_param-scheduler", "--lr-warmup-fraction")


@pytest.fixture
def study(tmp_path, planner):
    """The 290M release row as a trunk of 40 iterations (warmup 4, saves at 20 and 40) and two
    branches: 20 -> 25 and 40 -> 50 (runs/<id>/ side by side, as in a sweep)."""
    rows, cfg = planner(tmp_path / "plan", "experiment=flame_release", "trainer=megatron",
                        "trainer.data_path=/data/dclm_text_document",
                        *standin_overrides(tmp_path / "megatron"))
    base = dict(next(r for r in rows if r["member"] == "L9-h1024"), warmup_iters="4")
    cfg["trainer"]["log_interval"] = 5
    return cfg, {
        TRUNK: dict(base, run_id=TRUNK, role="trunk", train_iters="40", save_steps="20 40"),
        SHORT: dict(base, run_id=SHORT, role="branch", parent=TRUNK, branch_step="20",
                    train_iters="25"),
        LONG: dict(base, run_id=LONG, role="branch", parent=TRUNK, branch_step="40",
                   train_iters="50")}


def _flags(argv: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for i, word in enumerate(argv):
        if word.startswith("--"):
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            out[word] = None if nxt is None or nxt.startswith("--") else nxt
    return out


def test_trunk_and_branch_flags(study, tmp_path):
    cfg, rows = study
    runs = tmp_path / "runs"
    trunk = _flags(argv_of(rows[TRUNK], cfg, runs / TRUNK))
    assert trunk["--lr-decay-style"] == "constant" and trunk["--lr-warmup-iters"] == "4"
    assert trunk["--save-interval"] == "20" and trunk["--train-iters"] == "40"
    assert trunk["--load"] == trunk["--save"] == str(runs / TRUNK / "checkpoints")
    argv = argv_of(rows[LONG], cfg, runs / LONG)
    assert check_argv(argv) == []  # valid under the recorded core_v0.16.1 spec
    branch = _flags(argv)
    assert branch["--lr-decay-style"] == "WSD" and branch["--lr-wsd-decay-iters"] == "10"
    assert branch["--lr-warmup-iters"] == "4" and "--override-opt_param-scheduler" in branch
    assert branch["--load"] == str(runs / TRUNK / "checkpoints")
    assert branch["--ckpt-step"] == "40" and branch["--save"] == str(runs / LONG / "checkpoints")
    assert not set(FORBIDDEN) & (set(trunk) | set(branch))
    # Once the branch has a checkpoint of its own, launch.sh loads that one instead.
    (runs / LONG / "checkpoints").mkdir(parents=True)
    (runs / LONG / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("45")
    resumed = _flags(argv_of(rows[LONG], cfg, runs / LONG))
    assert resumed["--load"] == str(runs / LONG / "checkpoints") and "--ckpt-step" not in resumed
    text = render_launch(rows[LONG], cfg, runs / LONG)
    assert '"${ARGS[@]}" "${LOAD[@]}"' in text and "--ckpt-step 40" in text


def test_save_steps_one_interval_cannot_keep_are_reached_by_stopping_launches(study,
                                                                             tmp_path):
    cfg, rows = study
    cfg["trainer"]["max_trunk_checkpoints"] = 10
    run = tmp_path / "runs" / TRUNK
    kept = _flags(argv_of(dict(rows[TRUNK], save_steps="10 20 40"), cfg, run))
    assert kept["--save-interval"] == "10" and "--exit-interval" not in kept  # gcd: 4 kept
    odd = dict(rows[TRUNK], save_steps="7 13 40")  # gcd 1: 40 checkpoints, more than 10
    stops = []
    for done in (None, "7", "13"):  # each launch stops at the next branch step not reached
        if done:
            (run / "checkpoints").mkdir(parents=True, exist_ok=True)
            (run / "checkpoints" / "latest_checkpointed_iteration.txt").write_text(done)
        flags = _flags(argv_of(odd, cfg, run))
        stops.append(flags.get("--exit-interval"))
        assert flags["--save-interval"] == "4"  # the regular one (train_iters // 10)
    assert stops == ["7", "13", None]  # the last launch trains to 40 and validates
    text = render_launch(odd, cfg, run)
    assert "for STEP in 7 13; do" in text and '${STOP[@]+"${STOP[@]}"}' in text
    with pytest.raises(ConfigError, match="branch_step=0"):
        argv_of(dict(rows[SHORT], branch_step="0"), cfg, tmp_path / "b")
    with pytest.raises(ConfigError, match="save_steps=\\[7, 50\\]"):
        argv_of(dict(rows[TRUNK], save_steps="7 50"), cfg, run)


def _reference(cfg: dict, row: dict, tmp_path: Path, *extra: str) -> float:
    """The branch's own flags from iteration 0 in one uninterrupted stand-in process (no
    trunk): what the trunk + branch must reproduce exactly."""
    argv = argv_of(row, cfg, tmp_path / "ref" / row["run_id"])
    i = argv.index("--load")
    argv = argv[:i] + argv[i + 4:]  # --load DIR --ckpt-step N
    out = subprocess.run([sys.executable, str(STANDIN), *argv, *extra], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, FLAME_STANDIN_STEP_S="0"))
    assert out.returncode == 0, out.stderr
    return parse_lines(out.stdout.splitlines()).last_val_loss


def _schedule_followed(cfg: dict, row: dict, run_dir: Path) -> bool:
    """Every logged learning rate is WSD.for_row's (trainers/schedule.py, the one schedule
    every trainer follows) at that iteration, to the log's 7 digits; and some line shows it."""
    wsd = WSD.for_row(Recipe.from_cfg(cfg["training"]), PlanRow.of(row))
    lines = parse_lines((run_dir / "train.log").read_text().splitlines()).train
    return bool(lines) and all(r["learning rate"] == pytest.approx(wsd(r["iteration"]), rel=1e-6)
                               for r in lines)


def _standin(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(STANDIN), *argv], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, FLAME_STANDIN_STEP_S="0"))


def test_trunk_then_branches_end_as_one_uninterrupted_run(study, tmp_path, monkeypatch):
    cfg, rows = study
    runs = tmp_path / "runs"
    monkeypatch.setenv("FLAME_STANDIN_STEP_S", "0")
    cfg["trainer"]["max_trunk_checkpoints"] = 1  # one interval (20) would keep 2: two launches
    assert train_run(rows[TRUNK], cfg, runs / TRUNK)["iterations"] == 40
    ckpts = runs / TRUNK / "checkpoints"
    assert {"iter_0000020", "iter_0000040"} <= {p.name for p in ckpts.glob("iter_*")}
    trunk_log = (runs / TRUNK / "train.log").read_text()
    assert trunk_log.count("[exiting program at iteration 20]") == 1  # --exit-interval 20
    assert f"loading distributed checkpoint from {ckpts} at iteration 20" in trunk_log
    assert _schedule_followed(cfg, rows[TRUNK], runs / TRUNK)  # warmup, then constant
    # The branch stops in its cooldown (at 22, as after a preemption: --exit-interval saves and
    # exits 0); the rerun resumes from its OWN checkpoint at 22, not from the trunk's again.
    cfg["trainer"]["extra_args"] = ["--exit-interval 22"]
    with pytest.raises(RuntimeError, match="exited 0 at iteration 22 of 25"):
        train_run(rows[SHORT], cfg, runs / SHORT)
    cfg["trainer"]["extra_args"] = []
    summary = train_run(rows[SHORT], cfg, runs / SHORT)
    first, second = (runs / SHORT / "train.log").read_text().split(
        "[exiting program at iteration 22]")
    assert f"loading distributed checkpoint from {ckpts} at iteration 20" in first
    assert "overriding total number of iterations" in first
    assert f"loading distributed checkpoint from {runs / SHORT / 'checkpoints'} at iteration " \
           "22" in second and str(ckpts) not in second
    assert summary["iterations"] == 25 and tracker_iteration(runs / SHORT) == 25
    assert _schedule_followed(cfg, rows[SHORT], runs / SHORT)  # decays from 21 to min_lr
    # ... and ends exactly where the branch's flags from iteration 0 in one process end.
    assert summary["final_val_loss"] == _reference(cfg, rows[SHORT], tmp_path)
    # The trunk is read in place: nothing copied into the branch's directory, tracker unmoved.
    assert not (runs / SHORT / "checkpoints" / "iter_0000020").exists()
    assert (ckpts / "latest_checkpointed_iteration.txt").read_text() == "40"
    # Controls: dropping the RNG (--no-load-rng) ends elsewhere; without the override Megatron
    # refuses the trunk's scheduler (optimizer_param_scheduler.py:326-330's assertion).
    argv = argv_of(dict(rows[SHORT], run_id="control00001"), cfg, runs / "control00001")
    dropped = parse_lines(_standin([*argv, "--no-load-rng"]).stdout.splitlines())
    assert dropped.last_val_loss != summary["final_val_loss"]
    refused = _standin([w for w in argv if w != "--override-opt_param-scheduler"])
    assert refused.returncode == 1
    assert "OptimizerParamScheduler: class input value" in refused.stderr


@pytest.mark.slow
def test_a_branch_preempted_in_its_cooldown_resumes_from_its_own_checkpoint(study, tmp_path,
                                                                             monkeypatch):
    cfg, rows = study
    runs = tmp_path / "runs"
    monkeypatch.setenv("FLAME_STANDIN_STEP_S", "0")
    train_run(rows[TRUNK], cfg, runs / TRUNK)
    monkeypatch.setenv("FLAME_STANDIN_STEP_S", "0.05")
    log = runs / LONG / "train.log"
    usr2_once_logged(log, "iteration       45/", 0.05)  # preempted in the cooldown
    with pytest.raises(Preempted) as info:
        train_run(rows[LONG], cfg, runs / LONG)
    assert 45 <= info.value.iteration < 50
    monkeypatch.setenv("FLAME_STANDIN_STEP_S", "0")
    resumed = train_run(rows[LONG], cfg, runs / LONG)
    second = log.read_text().split("exiting program after receiving SIGTERM")[-1]
    assert f"loading distributed checkpoint from {runs / LONG / 'checkpoints'} at iteration " \
           f"{info.value.iteration}" in second
    assert str(runs / TRUNK) not in second  # not the trunk's again
    assert resumed["iterations"] == 50
    assert resumed["final_val_loss"] == _reference(cfg, rows[LONG], tmp_path)

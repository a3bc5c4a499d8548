"""launch.sh in a job (trainers.megatron_job) and what collect reads of it (trainers.readers),
fast: the outcome of every end a run can have (a signal never ends in ``failed``), one log per
node, the stand-in of core_v0.16.1's pretrain_gpt.py run directly (no torchrun) for its late
signal handler and its exit at the last iteration, its TensorBoard files with the test split's
point beside the final validation's, and the first throughput interval of each process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.trainers.conftest import STANDIN, standin_overrides
from trainers import megatron_job
from trainers.logformat import train_line
from trainers.megatron import argv_of, tracker_iteration
from trainers.megatron_job import COMPLETED, FAILED, PREEMPTED, Launch, node_log, outcome
from trainers.readers import LAUNCH_MARK, read_tensorboard, read_throughput
from trainers.signals import DeferredSignals, Preempted


@pytest.mark.parametrize("code, signalled, done, has_final, expected", [
    (0, False, 23, True, COMPLETED),
    (0, False, 23, False, COMPLETED),   # no validation split: completed, the summary says why
    (1, False, 23, True, FAILED),       # a crash without a signal
    (0, False, 7, False, FAILED),       # exit 0 short of train_iters without a signal
    (0, True, 12, False, PREEMPTED),    # Megatron's handler saved and exited 0
    (1, True, 0, False, PREEMPTED),     # a rank killed in start-up, before its handler
    (-15, True, 12, False, PREEMPTED),  # torchrun stopped by SLURM's SIGTERM to the step
    (0, True, 23, False, PREEMPTED),    # signalled at the last iteration: no final validation
    (1, True, 23, True, COMPLETED),     # the signal came after the final validation
])
def test_a_signal_never_ends_in_failed(code, signalled, done, has_final, expected):
    assert outcome(code, signalled, done, 23, has_final) == expected


def test_one_log_per_node_train_log_on_the_node_of_the_last_rank(tmp_path):
    assert node_log(tmp_path, 0, 1).name == "train.log"
    assert [node_log(tmp_path, k, 3).name for k in range(3)] == \
        ["train.node0.log", "train.node1.log", "train.log"]


# --- the stand-in run directly (no torchrun: ~1 s a run) ------------------------------------

@pytest.fixture
def smoke(tmp_path, planner):
    rows, cfg = planner(tmp_path / "plan", "experiment=megatron_smoke",
                        *standin_overrides(tmp_path / "megatron"))
    return rows[0], cfg


def _standin(argv: list[str], log: Path, env: dict[str, str],
             signal_when: str | None = None, delay_s: float = 0.0) -> int:
    """The stand-in with ``argv``, its output appended to ``log``; SIGTERM to it ``delay_s``
    after a line of its output contains ``signal_when``."""
    with open(log, "ab") as out:
        out.write(f"{LAUNCH_MARK} (test)\n".encode())
    proc = subprocess.Popen([sys.executable, str(STANDIN), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, **env})
    with open(log, "ab") as out:
        for line in proc.stdout:
            out.write(line)
            out.flush()
            if signal_when is not None and signal_when.encode() in line:
                time.sleep(delay_s)
                proc.send_signal(signal.SIGTERM)
                signal_when = None
    return proc.wait()


def test_sigterm_before_the_handler_kills_the_rank_after_it_saves(tmp_path, smoke):
    """Megatron installs its handler after building the tokenizer (global_vars.py:96-114):
    SIGTERM before then is Python's default action; after, a flag: save, exit 0."""
    row, cfg = smoke
    argv, log = argv_of(row, cfg, tmp_path / "run"), tmp_path / "run.log"
    env = {"FLAME_STANDIN_STARTUP_S": "30", "FLAME_STANDIN_STEP_S": "0"}
    began = time.monotonic()
    assert _standin(argv, log, env, signal_when="> building") == -signal.SIGTERM
    assert time.monotonic() - began < 20  # killed at once, not after the start-up
    assert "iteration" not in log.read_text() and tracker_iteration(tmp_path / "run") == 0
    env = {"FLAME_STANDIN_STARTUP_S": "0", "FLAME_STANDIN_STEP_S": "0.05"}
    assert _standin(argv, log, env, signal_when="iteration        1/") == 0
    assert "[exiting program after receiving SIGTERM.]" in log.read_text()
    assert tracker_iteration(tmp_path / "run") >= 1


def _direct(env: dict[str, str], signal_when: str | None, delay_s: float = 0.0):
    """``run_segments`` for megatron_job.train: the stand-in on launch.sh's argv."""
    def run(row, cfg, run_dir, signals, log):
        code = _standin(argv_of(row, cfg, run_dir), log, env, signal_when, delay_s)
        return Launch(code, signal.SIGTERM if signal_when else None)
    return run


def test_a_signal_at_the_last_iteration_requeues_and_the_next_start_only_evaluates(
        tmp_path, smoke, monkeypatch):
    """Megatron saves at the last iteration and exits without the final validation
    (training.py:2322-2337, 3021-3030): preempted, not completed with an empty loss; the next
    start loads iteration train_iters, trains nothing and evaluates."""
    row, cfg = smoke
    iters, run_dir = 12, tmp_path / "run"
    row = dict(row, train_iters=str(iters))
    run_dir.mkdir()
    cfg["trainer"]["extra_args"] = ["--log-interval 1"]
    env = {"FLAME_STANDIN_STEP_S": "0.3"}  # the signal lands inside the last iteration
    monkeypatch.setattr(megatron_job, "run_segments",
                        _direct(env, f"iteration {iters - 1:8d}/", delay_s=0.1))
    with pytest.raises(Preempted) as info:
        megatron_job.train(row, cfg, run_dir, DeferredSignals())
    assert info.value.iteration == iters == tracker_iteration(run_dir)
    assert "validation loss at iteration" not in \
        (run_dir / "train.log").read_text().split("exiting program")[-1]
    monkeypatch.setattr(megatron_job, "run_segments", _direct({}, None))
    summary = megatron_job.train(row, cfg, run_dir, DeferredSignals())
    assert summary["iterations"] == iters and summary["final_val_loss"] > 2.0
    assert "no_final_validation" not in summary


def test_no_final_validation_without_a_signal_completes_and_says_why(tmp_path, smoke,
                                                                     monkeypatch):
    row, cfg = smoke
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg["trainer"]["extra_args"] = ["--eval-iters 0"]  # no evaluation at all (T:3401-3403)
    monkeypatch.setattr(megatron_job, "run_segments",
                        _direct({"FLAME_STANDIN_STEP_S": "0"}, None))
    summary = megatron_job.train(row, cfg, run_dir, DeferredSignals())
    assert summary["final_val_loss"] is None
    assert "training.py:1068" in summary["no_final_validation"]


# --- TensorBoard: the test split's point is not the final validation -------------------------

@pytest.mark.parametrize("eval_interval", [7, 10])  # 10 divides 20: an evaluation in the loop
def test_tensorboard_final_validation_is_not_the_test_sets_point(tmp_path, eval_interval):
    tb = tmp_path / "tensorboard"
    argv = ["--train-iters", "20", "--log-interval", "5", "--eval-interval", str(eval_interval),
            "--eval-iters", "2", "--global-batch-size", "4", "--seq-length", "64",
            "--num-layers", "2", "--hidden-size", "64", "--lr", "3e-4",
            "--data-path", "/data/x", "--split", "90,5,5", "--tensorboard-dir", str(tb)]
    out = subprocess.run([sys.executable, str(STANDIN), *argv], capture_output=True, text=True,
                         env={**os.environ, "FLAME_STANDIN_STEP_S": "0"}, check=True).stdout

    def printed(where: str) -> float:
        line = next(x for x in out.splitlines() if f"at iteration 20 on {where} set" in x)
        return float(line.split("lm loss value:")[1].split("|")[0])
    ev = read_tensorboard(tmp_path, 20)
    finals = [x for _, x, final in ev.evals if final]
    assert finals[-1] == pytest.approx(printed("validation"), rel=1e-6)
    assert all(x != pytest.approx(printed("test"), rel=1e-6) for _, x, _ in ev.evals)
    assert [it for it, _, _ in ev.evals] == \
        [it for it in range(eval_interval, 21, eval_interval)] + [20]


# --- throughput: the first interval of each process -----------------------------------------

def _line(it: int, ms: float, tflops: float = 10.0) -> str:
    return train_line(it, 20, it * 4, ms, 1e-4, 4, {"lm loss": 3.0}).replace(
        " learning rate:", f" throughput per GPU (TFLOP/s/GPU): {tflops:.1f} | learning rate:")


def test_a_processs_first_line_is_counted_inside_the_next_one(tmp_path):
    """core_v0.16.1 training.py:1797, 2008-2017: the first line of a process resets nothing,
    so the next averages every iteration since the start; a resume starts a new process."""
    (tmp_path / "train.log").write_text("\n".join([
        f"{LAUNCH_MARK} on node 0", _line(1, 900.0), _line(5, 260.0), _line(10, 100.0),
        f"{LAUNCH_MARK} on node 0", _line(13, 700.0), _line(15, 300.0), _line(20, 100.0),
        f"{LAUNCH_MARK} on node 0", _line(21, 800.0)]) + "\n")
    speed = read_throughput(tmp_path)
    # 1..5 at 260 ms, 6..10 at 100; 13..15 at 300, 16..20 at 100; 21 alone at 800
    assert speed.iterations == 5 + 5 + 3 + 5 + 1
    assert speed.step_seconds == pytest.approx(5 * 0.26 + 5 * 0.1 + 3 * 0.3 + 5 * 0.1 + 0.8)
    assert speed.tflops_per_gpu == pytest.approx(10.0)


def test_without_flames_marks_a_restart_is_a_line_not_above_the_one_before(tmp_path):
    (tmp_path / "train.log").write_text("\n".join(
        [_line(1, 900.0), _line(5, 200.0), _line(3, 500.0), _line(5, 300.0)]) + "\n")
    speed = read_throughput(tmp_path)
    assert speed.iterations == 5 + 3
    assert speed.step_seconds == pytest.approx(5 * 0.2 + 3 * 0.3)


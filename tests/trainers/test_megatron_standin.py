"""The Megatron-LM stand-in follows core_v0.16.1's print, checkpoint and exit rules, flame's parser
reads what it prints, and ``check_argv`` judges argv against the recorded core_v0.16.1 spec."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainers import megatron_standin as standin
from trainers.logformat import parse_lines
from trainers.megatron_argspec import check_argv, load

STANDIN = Path(__file__).with_name("megatron_standin.py")

# FLAME-MoE's 290M release model as their scripts launch it (configs/model/flame-moe.sh,
# configs/train/flame-moe.sh, scripts/training/modules/flame-moe_step2.sh,
# scripts/release/flame-moe-290m.sh), plus flame's --exit-signal-handler.
FLAME_290M = [
    "--hidden-size", "1024", "--ffn-hidden-size", "5472", "--num-layers", "9",
    "--num-attention-heads", "16", "--swiglu", "--max-position-embeddings", "2048",
    "--normalization", "RMSNorm", "--norm-epsilon", "1e-6",
    "--untie-embeddings-and-output-weights", "--position-embedding-type", "rope",
    "--disable-bias-linear", "--moe-ffn-hidden-size", "704", "--num-experts", "64",
    "--moe-router-topk", "6", "--moe-shared-expert-intermediate-size", "1408",
    "--moe-layer-freq", "[0]*1+[1]*8", "--moe-router-dtype", "fp32", "--moe-router-pre-softmax",
    "--moe-router-score-function", "softmax", "--moe-aux-loss-coeff", "0.01",
    "--moe-z-loss-coeff", "0.001", "--hidden-dropout", "0.0", "--attention-dropout", "0.0",
    "--init-method-std", "0.02", "--tokenizer-type", "HuggingFaceTokenizer",
    "--tokenizer-model", "EleutherAI/pythia-12b",
    "--pipeline-model-parallel-size", "1", "--expert-model-parallel-size", "8",
    "--use-distributed-optimizer", "--overlap-grad-reduce", "--overlap-param-gather",
    "--moe-token-dispatcher-type", "alltoall", "--distributed-timeout-minutes", "30", "--bf16",
    "--micro-batch-size", "8", "--global-batch-size", "1024", "--lr", "3e-4", "--min-lr", "3e-5",
    "--lr-decay-style", "WSD", "--lr-warmup-fraction", "0.01", "--lr-wsd-decay-iters", "547",
    "--train-iters", "5473", "--seq-length", "2048",
    "--data-path", "1.0", "/data/shard_00", "1.0", "/data/shard_01", "--split", "90,5,5",
    "--log-interval", "5", "--log-throughput", "--save", "/ckpt", "--save-interval", "540",
    "--load", "/ckpt", "--eval-interval", "540", "--tensorboard-dir", "/ckpt",
    "--exit-signal-handler",
]


def _run(tmp_path: Path, iters: int, *extra: str, step_s: float = 0.0,
         ckpt: str = "ckpt") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(STANDIN), *_argv(tmp_path, iters, ckpt), *extra],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, FLAME_STANDIN_STEP_S=str(step_s)))


def _argv(tmp_path: Path, iters: int, ckpt: str = "ckpt") -> list[str]:
    return ["--train-iters", str(iters), "--log-interval", "10", "--eval-iters", "10",
            "--global-batch-size", "16", "--seq-length", "64", "--num-layers", "2",
            "--hidden-size", "64", "--num-experts", "8", "--moe-router-topk", "2",
            "--moe-ffn-hidden-size", "32", "--moe-aux-loss-coeff", "0.01",
            "--moe-z-loss-coeff", "0.001", "--lr", "3e-4", "--min-lr", "3e-5",
            "--lr-decay-style", "WSD", "--lr-wsd-decay-iters", str(iters // 10),
            "--lr-warmup-fraction", "0.01", "--data-path", "/data/x", "--split", "99,1,0",
            "--save", str(tmp_path / ckpt), "--load", str(tmp_path / ckpt),
            "--save-interval", "20", "--exit-signal-handler", "--log-throughput"]


def test_training_line_at_log_interval_multiples_and_the_first_iteration(tmp_path):
    out = _run(tmp_path, 35)
    assert out.returncode == 0, out.stderr
    parsed = parse_lines(out.stdout.splitlines())
    # training.py:2008: `iteration % log_interval == 0 or is_first_iteration`
    assert [r["iteration"] for r in parsed.train] == [1, 10, 20, 30]
    assert all(r["train_iters"] == 35 for r in parsed.train)
    first = parsed.train[0]
    for name in ("lm loss", "load_balancing_loss", "z_loss", "throughput per GPU (TFLOP/s/GPU)",
                 "learning rate", "consumed samples", "grad norm"):
        assert name in first, name
    assert parsed.train[1]["consumed samples"] == 10 * 16
    losses = [r["lm loss"] for r in parsed.train]
    assert losses == sorted(losses, reverse=True) and len(set(losses)) == 4


def test_final_validation_at_a_non_multiple_is_read_by_flames_parser(tmp_path):
    out = _run(tmp_path, 25, "--eval-interval", "10")
    assert out.returncode == 0, out.stderr
    parsed = parse_lines(out.stdout.splitlines())
    assert parsed.train[-1]["iteration"] == 20  # no training line at 25
    assert [(v["iteration"], v["final"]) for v in parsed.validation] == [
        (10, False), (20, False), (25, True)]
    assert parsed.last_val_loss == parsed.validation[-1]["lm loss value"]
    assert parsed.test == []  # split 99,1,0: no test set, so no "on test set" line
    # the last checkpoint is the final save at 25 (training.py:1047), with its tracker file
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text() == "25"
    assert re.search(r"^  \[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\] successfully saved checkpoint "
                     r"from iteration      25 to \S+ \[ t 1/1, p 1/1 \]$", out.stdout, re.M)


def test_test_set_evaluated_too_when_the_split_has_one(tmp_path):
    out = _run(tmp_path, 12, "--split", "90,5,5")
    parsed = parse_lines(out.stdout.splitlines())
    assert [v["iteration"] for v in parsed.validation] == [12]
    assert [t["iteration"] for t in parsed.test] == [12]


def test_mock_data_has_all_three_splits_whatever_split_says(tmp_path):
    # megatron/core/datasets/blended_megatron_dataset_config.py:137-149: no blend -> mock with
    # split "1,1,1", so the final evaluation also prints "on test set".
    out = _run(tmp_path, 12, "--mock-data")
    parsed = parse_lines(out.stdout.splitlines())
    assert [v["iteration"] for v in parsed.validation] == [12]
    assert [t["iteration"] for t in parsed.test] == [12]


def test_sigterm_saves_exits_zero_and_the_rerun_resumes_to_the_same_loss(tmp_path):
    whole = parse_lines(_run(tmp_path, 60, ckpt="whole").stdout.splitlines())
    proc = subprocess.Popen([sys.executable, str(STANDIN), *_argv(tmp_path, 60)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, FLAME_STANDIN_STEP_S="0.02"))
    lines = []
    for line in proc.stdout:  # signal once iteration 20's checkpoint is written
        lines.append(line)
        if "successfully saved checkpoint from iteration      20" in line:
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=30) == 0  # training.py:3030 sys.exit(exit_code), exit_code 0
    text = "".join(lines)
    assert re.search(r"^\[exiting program after receiving SIGTERM\.\] datetime: ", text, re.M)
    stopped = int((tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text())
    assert 20 < stopped < 60 and (tmp_path / "ckpt" / f"iter_{stopped:07d}").is_dir()
    assert "validation loss" not in text  # no final evaluation after a signal exit

    rerun = _run(tmp_path, 60)
    assert rerun.returncode == 0, rerun.stderr
    assert f"successfully loaded checkpoint from {tmp_path / 'ckpt'} [ t 1/1, p 1/1 ] " \
           f"at iteration {stopped}" in rerun.stdout
    resumed = parse_lines(rerun.stdout.splitlines())
    # is_first_iteration is per process: the first iteration after the checkpoint is printed
    assert resumed.train[0]["iteration"] == stopped + 1
    assert resumed.train[0]["consumed samples"] == (stopped + 1) * 16
    assert resumed.validation[-1]["iteration"] == 60 and resumed.validation[-1]["final"]
    assert resumed.last_val_loss == whole.last_val_loss
    assert resumed.train[-1]["lm loss"] == whole.train[-1]["lm loss"]


def test_rerun_of_a_finished_run_trains_nothing_and_evaluates_again(tmp_path):
    first = parse_lines(_run(tmp_path, 25).stdout.splitlines())
    again = _run(tmp_path, 25)
    parsed = parse_lines(again.stdout.splitlines())
    assert parsed.train == []  # while iteration < train_iters (training.py:2684) never runs
    # training.py:1047 saves again (25 % 20 != 0), then the final evaluation (1068) is repeated
    assert "saving checkpoint at iteration      25" in again.stdout
    assert [(v["iteration"], v["final"]) for v in parsed.validation] == [(25, True)]
    assert parsed.last_val_loss == first.last_val_loss


def test_skip_train_evaluates_the_loaded_checkpoint(tmp_path):
    _run(tmp_path, 25)
    out = _run(tmp_path, 25, "--skip-train")
    assert "skipping training (--skip-train is on) ..." in out.stdout  # training.py:1064
    parsed = parse_lines(out.stdout.splitlines())
    assert parsed.train == [] and [v["iteration"] for v in parsed.validation] == [25]


def test_without_the_handler_sigterm_kills(tmp_path):
    argv = [a for a in _argv(tmp_path, 500) if a != "--exit-signal-handler"]
    proc = subprocess.Popen([sys.executable, str(STANDIN), *argv], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, FLAME_STANDIN_STEP_S="0.01"))
    proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM


def test_exit_interval_saves_and_exits(tmp_path):
    out = _run(tmp_path, 60, "--exit-interval", "15")
    assert out.returncode == 0
    assert re.search(r"^\[exiting program at iteration 15\] datetime: ", out.stdout, re.M)
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text() == "15"


def test_check_argv_accepts_flames_release_command_line():
    assert check_argv(FLAME_290M) == []
    assert check_argv(["--moe-layer-freq", "([0]*1+[1]*8)", "--moe-layer-freq", "2"]) == []
    assert check_argv(["--lr=3e-4", "--adam-eps=-1e-8", "--exit-signal", "SIGUSR2"]) == []
    assert check_argv(["--rotary-base", "-3", "--clip-grad", "-.5"]) == []  # argparse: values
    # ... but argparse reads "-1e-8" as an option (its negative-number pattern has no exponent)
    assert check_argv(["--adam-eps", "-1e-8"]) == ["--adam-eps: expected a value, got none",
                                                   "unknown flag -1e-8"]


@pytest.mark.parametrize("argv, problem", [
    (["--moe-router-topK", "6"], "unknown flag --moe-router-topK"),
    (["--lr-wsd-decay-style", "exp"], "is not one of"),
    (["--moe-router-dtype", "bf16"], "is not one of"),
    (["--train-iters", "5473.0"], "does not parse as int"),
    (["--lr", "three"], "does not parse as float"),
    (["--moe-layer-freq", "[0]*1+[1]*x"], "does not parse as moe_freq_type"),
    (["--bf16", "true"], "is a switch"),
    (["--bf16=1"], "is a switch"),
    (["--train-iters"], "expected a value"),
    (["--train-iters", "--bf16"], "expected a value"),
    (["--data-path"], None),  # nargs='*': no words is valid
    (["--attention-backend", "flashattn"], "is not one of"),
    (["--exit-signal", "TERM"], "is not one of"),
    (["9"], "unexpected word"),
])
def test_check_argv_names_each_problem(argv, problem):
    problems = check_argv(argv)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_recorded_spec_names_its_source():
    spec = load()
    assert spec["source"]["commit"] == "55ac7082517c3878ae653c07c09c534b8aed49f6"
    assert spec["source"]["describe"] == "core_v0.16.1"
    flags = {s: o for o in spec["options"] for s in o["option_strings"]}
    assert flags["--data-path"]["nargs"] == "*"
    assert flags["--moe-layer-freq"]["type"] == "custom:megatron.training.arguments.moe_freq_type"
    assert flags["--lr-wsd-decay-style"]["default"] == "exponential"
    assert flags["--exit-signal"]["default"] == "SIGTERM"


def test_flame_moe_recipe_table_is_valid_under_core_v0_16_1():
    """Every flag of trainers/data/flame_moe_recipe.csv exists in core_v0.16.1 and every literal
    value parses there (FLAME-MoE ran a 0.12 fork; none of its flags is gone)."""
    import csv
    from importlib import resources
    table = resources.files("trainers").joinpath("data", "flame_moe_recipe.csv").read_text()
    rows = list(csv.DictReader(table.splitlines()))
    assert len(rows) > 60 and all(r["source"].startswith(("cmu-flame/FLAME-MoE:",
                                                          "yuzc19/Megatron-LM:")) for r in rows)
    known = {s for o in load()["options"] for s in o["option_strings"]}
    for row in rows:
        flag, value = row["flag"], row["value"]
        assert flag in known, flag
        if value == "(switch)":
            assert check_argv([flag]) == [], flag
        elif not value.startswith(("(", "$")) and "<" not in value:  # a literal value
            assert check_argv([flag, value]) == [], (flag, value)


AGREEMENT_CASES = [
    FLAME_290M, ["--moe-router-topK", "6"], ["--lr-wsd-decay-style", "exp"],
    ["--train-iters", "5473.0"], ["--moe-layer-freq", "[0]*1+[1]*x"], ["--moe-layer-freq", "1.5"],
    ["--bf16", "true"], ["--bf16=1"], ["--train-iters"], ["--adam-eps", "-1e-8"],
    ["--adam-eps=-1e-8"], ["--rotary-base", "-3"], ["--data-path"], ["9"],
    ["--num-layers", "1", "2"], ["--recompute-modules", "core_attn", "mlp"],
    ["--exit-signal", "SIGUSR2"], ["--no-rope-freq", "[1]+[0]*3"],
]
_REAL_PARSER = """
import argparse, contextlib, io, json, sys
from pathlib import Path
from trainers.megatron_argspec import _import_arguments
arguments, _ = _import_arguments(Path(sys.argv[1]))
out = []
for argv in json.loads(sys.argv[2]):
    parser = argparse.ArgumentParser(allow_abbrev=False)
    arguments.add_megatron_arguments(parser)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            parser.parse_args(argv)
        out.append(True)
    except (SystemExit, Exception):  # argparse's error, or a type function's own exception
        out.append(False)
print(json.dumps(out))
"""


@pytest.mark.skipif(not (Path(os.environ.get("MEGATRON_LM", "/nonexistent")) / "megatron" /
                         "training" / "arguments.py").is_file(),
                    reason="needs a Megatron-LM checkout in $MEGATRON_LM")
def test_check_argv_agrees_with_megatrons_own_parser():
    import json
    out = subprocess.run([sys.executable, "-c", _REAL_PARSER, os.environ["MEGATRON_LM"],
                          json.dumps(AGREEMENT_CASES)], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2], check=True)
    accepted = json.loads(out.stdout.strip().splitlines()[-1])
    assert accepted == [check_argv(argv) == [] for argv in AGREEMENT_CASES]


@pytest.mark.parametrize("types,coeffs,tracked,computed", [
    (["aux_loss"], ["0.01"], ["load_balancing_loss"], ["load_balancing_loss"]),
    # one type: a str (arguments.py:1031-1032), and training.py:1960 tests "aux_loss" in it as
    # a substring, so load_balancing_loss is tracked too (zeros); the router compares exactly
    (["seq_aux_loss"], ["0.01"], ["load_balancing_loss", "seq_load_balancing_loss"],
     ["seq_load_balancing_loss"]),
    (["global_aux_loss"], ["0.01"], ["load_balancing_loss", "global_load_balancing_loss"],
     ["global_load_balancing_loss"]),
    # several: a list, so membership is exact; each type takes its own coefficient
    (["seq_aux_loss", "global_aux_loss"], ["0.01", "0"],
     ["seq_load_balancing_loss", "global_load_balancing_loss"], ["seq_load_balancing_loss"]),
    (["aux_loss"], ["0"], ["load_balancing_loss"], []),
])
def test_load_balancing_types_tracked_as_megatron_reads_them(types, coeffs, tracked, computed):
    args = standin.parse(["--train-iters", "1", "--num-layers", "2", "--num-experts", "4",
                          "--moe-router-load-balancing-type", *types,
                          "--moe-aux-loss-coeff", *coeffs])
    assert args.moe_router_load_balancing_type == (types[0] if len(types) == 1 else types)
    losses = standin.layer_moe_losses(args, 1.0)
    assert sorted(losses) == sorted(tracked)  # no --moe-z-loss-coeff: no z_loss
    assert sorted(name for name, values in losses.items() if any(values)) == sorted(computed)

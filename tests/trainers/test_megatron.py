"""The Megatron-LM launcher: launch.sh hands pretrain_gpt.py exactly the rendered flags, and a
run's outcome follows Megatron's own semantics, shown with the stand-in of core_v0.16.1's
pretrain_gpt.py (tests/trainers/megatron_standin.py) under the real torchrun: complete whatever
the log interval, a forwarded signal saves and exits 0 (preempted, resumable), exit 0 short of
train_iters without a signal and nonzero exits are failures."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.errors import ConfigError
from tests.trainers.conftest import standin_overrides, usr2_once_logged
from trainers.megatron import argv_of, render_launch, tracker_iteration, write_launch
from trainers.run import Preempted, train_run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def release(tmp_path, planner):
    rows, cfg = planner(tmp_path, "experiment=flame_release", "trainer=megatron",
                        "trainer.data_path=/data/dclm_text_document")
    return next(r for r in rows if r["member"] == "L9-h1024"), cfg


def test_launch_sh_hands_pretrain_gpt_exactly_the_rendered_flags(release, tmp_path):
    row, cfg = release
    run_dir = tmp_path / "runs" / row["run_id"]
    recorder = tmp_path / "record.py"
    recorder.write_text("import json, sys\njson.dump(sys.argv[1:], open(sys.argv[0] + '.json', "
                        "'w'))\n")
    cfg["trainer"]["python"] = f"{sys.executable} {recorder}"  # quoted: one word in launch.sh
    script = write_launch(row, cfg, run_dir)
    text = script.read_text().replace('exec "$PYTHON"', "exec $PYTHON")
    script.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    subprocess.run(["bash", str(script)], check=True, env=env)
    argv = json.loads(Path(str(recorder) + ".json").read_text())
    launcher, args = argv[:argv.index("/opt/Megatron-LM/pretrain_gpt.py")], \
        argv[argv.index("/opt/Megatron-LM/pretrain_gpt.py") + 1:]
    assert launcher == ["-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                        "--nproc_per_node", "8"]
    assert args == argv_of(row, cfg, run_dir)
    assert "srun" not in text  # submitit's step is the one srun (one launcher per node)


def test_mock_data_uses_null_tokenizer(release, tmp_path):
    row, cfg = release
    cfg["trainer"].update(mock_data=True, data_path=None)
    text = render_launch(row, cfg, tmp_path)
    assert "--mock-data" in text and "--tokenizer-type NullTokenizer" in text
    assert "--vocab-size 50303" in text and "--data-path" not in text


def test_missing_data_path_is_a_config_error(release, tmp_path):
    row, cfg = release
    cfg["trainer"]["data_path"] = None
    with pytest.raises(ConfigError, match="trainer.data_path"):
        render_launch(row, cfg, tmp_path)


@pytest.fixture
def standin_run(tmp_path, planner):
    """The 290M release row on the stand-in: one rank (EP 1), log interval 5, a few iterations."""
    rows, cfg = planner(tmp_path / "plan", "experiment=flame_release", "trainer=megatron",
                        "trainer.data_path=/data/dclm_text_document",
                        *standin_overrides(tmp_path / "megatron"))
    row = next(r for r in rows if r["member"] == "L9-h1024")

    def run(iters: int, name: str = "run", *extra: str) -> dict:
        cfg["trainer"]["extra_args"] = list(extra)
        return train_run(dict(row, train_iters=str(iters)), cfg, tmp_path / name)
    return run


def test_completes_when_train_iters_is_not_a_multiple_of_the_log_interval(standin_run, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("FLAME_STANDIN_STEP_S", "0")
    summary = standin_run(23)
    assert summary["iterations"] == 23 and summary["final_val_loss"] > 2.0
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["iteration"] for r in records if r["kind"] == "train"] == [1, 5, 10, 15, 20]
    assert [(r["iteration"], r["final"]) for r in records if r["kind"] == "eval"] == \
        [(2, False), (4, False), (6, False), (8, False), (10, False), (12, False), (14, False),
         (16, False), (18, False), (20, False), (22, False), (23, True)]
    train = [r for r in records if r["kind"] == "train"]
    assert all(r["tflops_per_gpu"] > 0 for r in train)  # --log-throughput: what MFU reads
    assert tracker_iteration(tmp_path / "run") == 23


def test_signal_reaches_the_ranks_as_sigterm_then_the_rerun_resumes_to_the_same_loss(
        standin_run, tmp_path, monkeypatch):
    monkeypatch.setenv("FLAME_STANDIN_STEP_S", "0.05")
    log = tmp_path / "run" / "train.log"
    usr2_once_logged(log, "iteration        5/", 0.1)  # preempted while training
    with pytest.raises(Preempted) as info:
        standin_run(103)
    text = log.read_text()
    assert "[exiting program after receiving SIGTERM.]" in text  # Megatron's own handler ran
    assert 5 <= info.value.iteration < 103
    assert info.value.iteration == tracker_iteration(tmp_path / "run")
    assert "validation loss at iteration" not in text.split("exiting program")[-1]
    monkeypatch.setenv("FLAME_STANDIN_STEP_S", "0")
    resumed = standin_run(103)
    assert "loading distributed checkpoint from" in log.read_text()
    assert resumed["iterations"] == 103
    assert resumed["final_val_loss"] == standin_run(103, "uninterrupted")["final_val_loss"]


def test_exit_zero_short_of_train_iters_without_a_signal_is_a_failure(standin_run):
    with pytest.raises(RuntimeError, match="exited 0 at iteration 7 of 23 without a signal"):
        standin_run(23, "run", "--exit-interval 7")


def test_nonzero_exit_is_a_failure_with_the_log_tail(standin_run):
    with pytest.raises(RuntimeError, match="(?s)exited with 1.*unknown flag --no-such-flag"):
        standin_run(23, "run", "--no-such-flag")


def test_extra_args_reach_megatron_as_words_never_as_shell(tmp_path, planner):
    """Issue 11 item 8: ``trainer.extra_args`` is quoted word by word in launch.sh: a command
    substitution stays text, a ';' stays inside its word, and the script parses."""
    rows, cfg = planner(tmp_path / "plan", "experiment=flame_release", "trainer=megatron",
                        "trainer.data_path=/data/dclm_text_document")
    cfg["trainer"]["extra_args"] = [f"--foo $(touch {tmp_path}/pwned)", "--bar a;b"]
    script = write_launch(rows[0], cfg, tmp_path / "run")
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    body = text[text.index("ARGS=(\n") + 7:text.index("\n)\n")]
    words = [w for line in body.splitlines() if not line.strip().startswith("#")
             for w in shlex.split(line)]
    assert words[-5:] == ["--foo", "$(touch", f"{tmp_path}/pwned)", "--bar", "a;b"]
    bash = f"{text[:text.index(chr(10) + ')' + chr(10)) + 3]}\nprintf '%s\\n' \"${{ARGS[@]}}\"\n"
    out = subprocess.run(["bash", "-c", bash.split("\n", 1)[1]], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["--bar", "a;b"]
    assert not (tmp_path / "pwned").exists()

"""The Megatron-LM launcher: launch.sh for FLAME's release model carries the recipe's flags,
parses as the argv Megatron will see, and a job's signal reaches the ranks as SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from sweep.arch import ConfigError
from trainers.logformat import parse_lines
from trainers.megatron import render_launch, write_launch
from trainers.run import Preempted, train_run


def _argv_of(script: Path, tmp_path: Path) -> list[str]:
    """Run launch.sh outside SLURM with a stand-in interpreter that records its argv."""
    recorder = tmp_path / "record.py"
    recorder.write_text(f"import json, sys\njson.dump(sys.argv[1:], open({str(tmp_path / 'argv.json')!r}, 'w'))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    text = script.read_text().replace("PYTHON=python", f"PYTHON='{sys.executable} {recorder}'")
    text = text.replace('exec "$PYTHON"', "exec $PYTHON")
    script.write_text(text)
    subprocess.run(["bash", str(script)], check=True, env=env)
    return json.loads((tmp_path / "argv.json").read_text())


def _flags(argv: list[str]) -> dict[str, str | None]:
    args = argv[argv.index(next(a for a in argv if a.endswith("pretrain_gpt.py"))) + 1:]
    out: dict[str, str | None] = {}
    for i, a in enumerate(args):
        if a.startswith("--"):
            nxt = args[i + 1] if i + 1 < len(args) else None
            out[a] = None if nxt is None or nxt.startswith("--") else nxt
    return out


@pytest.fixture
def release(tmp_path, planner):
    rows, cfg = planner(tmp_path, "experiment=flame_release", "trainer=megatron",
                        "trainer.data_path=/data/dclm_text_document")
    return next(r for r in rows if r["member"] == "L9-h1024"), cfg


def test_release_290m_carries_the_flame_recipe(release, tmp_path):
    row, cfg = release
    run_dir = tmp_path / "runs" / row["run_id"]
    flags = _flags(_argv_of(write_launch(row, cfg, run_dir), tmp_path))
    expected = {"--num-layers": "9", "--hidden-size": "1024", "--num-attention-heads": "16",
                "--ffn-hidden-size": "5472", "--num-experts": "64", "--moe-router-topk": "6",
                "--moe-ffn-hidden-size": "704", "--moe-shared-expert-intermediate-size": "1408",
                "--moe-layer-freq": "([0]*1+[1]*8)", "--expert-model-parallel-size": "8",
                "--moe-router-load-balancing-type": "aux_loss", "--moe-aux-loss-coeff": "0.01",
                "--moe-z-loss-coeff": "0.001", "--moe-token-dispatcher-type": "alltoall",
                "--global-batch-size": "1024", "--seq-length": "2048",
                "--lr": "0.0003", "--min-lr": "3e-05", "--lr-decay-style": "WSD",
                "--lr-wsd-decay-style": "linear", "--lr-warmup-fraction": "0.01",
                "--train-iters": "5473",  # FLAME's own count (the planner rounds to nearest)
                "--save": str(run_dir.resolve() / "checkpoints"),
                "--load": str(run_dir.resolve() / "checkpoints"),
                "--tensorboard-dir": str(run_dir.resolve() / "tensorboard"),
                "--data-path": "/data/dclm_text_document"}
    assert {k: flags.get(k) for k in expected} == expected
    for switch in ("--moe-router-pre-softmax", "--bf16", "--exit-signal-handler", "--swiglu",
                   "--disable-bias-linear", "--untie-embeddings-and-output-weights"):
        assert switch in flags and flags[switch] is None
    iters = int(row["train_iters"])
    assert int(flags["--lr-wsd-decay-iters"]) == round(0.1 * iters)  # decay over the last 10%
    assert int(flags["--save-interval"]) * 10 >= iters > int(flags["--save-interval"]) * 9
    assert int(flags["--eval-interval"]) > 0  # core_v0.16's default (None) would never evaluate


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


STAND_IN = textwrap.dedent('''
    # Stands in for the ranks of pretrain_gpt.py (no GPU here): Megatron's log lines, and its
    # --exit-signal-handler behaviour on SIGTERM (checkpoint, exit 0).
    import signal, sys, time
    from trainers.logformat import train_line, validation_lines
    argv = sys.argv
    iters = int(argv[argv.index("--train-iters") + 1])
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    for it in range(1, iters + 1):
        time.sleep(DELAY)
        print(train_line(it, iters, it * 1024, 1.0, 3e-4, 1024, {"lm loss": 5.0 - it / iters}), flush=True)
        if stop:
            print(" successfully saved checkpoint from iteration %d" % it, flush=True)
            sys.exit(0)
    print(validation_lines(iters, {"lm loss": 4.0}, final=True), flush=True)
''')


def _with_stand_in(cfg: dict, tmp_path: Path, delay: float) -> None:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN.replace("DELAY", str(delay)))
    # launch.sh runs "$PYTHON" -m torch.distributed.run ... pretrain_gpt.py ARGS outside SLURM;
    # a wrapper drops the launcher's own words and runs the stand-in with the Megatron args.
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/bash\nwhile [[ $1 != *pretrain_gpt.py ]]; do shift; done\nshift\n"
                       f"exec {sys.executable} {script} \"$@\"\n")
    wrapper.chmod(0o755)
    cfg["trainer"]["python"] = str(wrapper)


def test_train_run_megatron_collects_its_log(release, tmp_path, monkeypatch):
    row, cfg = release
    row = dict(row, train_iters="6")
    _with_stand_in(cfg, tmp_path, 0.0)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    summary = train_run(row, cfg, tmp_path / "run")
    assert summary["final_val_loss"] == 4.0 and summary["iterations"] == 6
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["kind"] for r in records] == ["train"] * 6 + ["eval"]
    assert records[0]["consumed_tokens"] == 1024 * 2048


def test_job_signal_reaches_megatron_as_sigterm(release, tmp_path, monkeypatch):
    row, cfg = release
    row = dict(row, train_iters="200")
    _with_stand_in(cfg, tmp_path, 0.02)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGUSR2))
    timer.start()
    with pytest.raises(Preempted) as info:
        train_run(row, cfg, tmp_path / "run")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "successfully saved checkpoint" in log
    assert 0 < info.value.iteration < 200
    assert parse_lines(log.splitlines()).train[-1]["iteration"] == info.value.iteration

"""The Megatron eval job (eval.sh): checked against the lm-eval and Megatron-LM versions it
names, and run through a stand-in of lm-eval's megatron_lm whose results flame eval collects."""

from __future__ import annotations

import inspect
import json
import re
import shlex
import sys
from pathlib import Path

import lm_eval
import pandas as pd
from lm_eval._cli import HarnessCLI

from jobs.eval import EvalTarget, targets
from sweep.config import read_config
from tests.jobs.conftest import flame
from tests.lazy import LazyModule
from tests.trainers.eval_fixtures import megatron_sweep
from trainers.lm_eval_tasks import FLAME_FEWSHOT, check_tasks
from trainers.megatron_argspec import load, options_by_flag
from trainers.megatron_eval import LM_EVAL_VERSION, eval_script

STANDIN = Path(__file__).with_name("lm_eval_standin.py")
# lm-eval's megatron_lm imports torch: only where it runs (tests/lazy.py)
megatron_lm = LazyModule("lm_eval.models.megatron_lm")
FLAME_TASKS = [t for group in FLAME_FEWSHOT.values() for t in group]


def _commands(script: str) -> list[list[str]]:
    return [shlex.split(line) for line in script.splitlines() if " -m lm_eval " in line]


def _target(sweep: Path) -> EvalTarget:
    found, _ = targets(sweep, "megatron", "final", None)
    return found[0]


def test_eval_sh_is_what_lm_eval_and_megatron_core_v0_16_1_accept(tmp_path):
    sweep = tmp_path / "sweep"
    megatron_sweep(sweep)
    target = _target(sweep)
    script = eval_script(target, FLAME_TASKS, read_config(sweep)["trainer"])
    assert lm_eval.__version__ == LM_EVAL_VERSION and f"lm-evaluation-harness {LM_EVAL_VERSION}" \
        in script and "core_v0.16.1" in script
    commands = _commands(script)
    assert len(commands) == 2  # FLAME's zero-shot and ten-shot groups
    accepted = set(inspect.signature(megatron_lm.MegatronLMEval.__init__).parameters)
    seen = {}
    for command in commands:
        harness = command[command.index("lm_eval") + 1:]
        args = HarnessCLI()._parser.parse_args(["run", *harness])  # lm-eval's own parser
        assert args.model == "megatron_lm"
        margs = dict(args.model_args)
        assert set(margs) <= accepted, set(margs) - accepted
        assert margs["ckpt_step"] == 10 and Path(margs["load"]) == Path(target.checkpoint)
        seen.update({t: args.num_fewshot for t in args.tasks})
    assert seen == {t: k for k, group in FLAME_FEWSHOT.items() for t in group}
    check_tasks(FLAME_TASKS)  # lm-eval's index knows all six (raises otherwise)
    # Every Megatron flag lm-eval's backend passes exists in core_v0.16.1's parser.
    source = inspect.getsource(megatron_lm.MegatronLMEval._initialize_megatron)
    flags = set(re.findall(r'"(--[a-z][a-z0-9-]+)"', source))
    assert {"--load", "--ckpt-step", "--use-checkpoint-args", "--no-load-optim"} <= flags
    known = options_by_flag(load())
    assert not flags - set(known), flags - set(known)


def test_flame_eval_runs_eval_sh_and_collects_lm_evals_results(tmp_path):
    sweep, python = tmp_path / "sweep", tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} {STANDIN} "$@"\n')  # trainer.python
    python.chmod(0o755)
    done = megatron_sweep(sweep, 1, (5, 10), f"trainer.python={python}")
    tasks = "hellaswag,arc_easy"  # one few-shot group: one lm_eval process per checkpoint
    out = flame("eval", f"sweep_dir={sweep}", "--tasks", tasks, "--checkpoints", "all",
                "--n-boot", "5")
    assert "2 to evaluate" in out.stdout, out.stdout
    results = pd.read_csv(sweep / "results.csv")
    row = results.set_index("run_id").loc[done[0]]
    assert row["acc_hellaswag"] == 0.25 + 10 / 1000 and row["acc_arc_easy_stderr"] == 0.01
    downstream = json.loads((sweep / "downstream.json").read_text())
    by_checkpoint = {(r["checkpoint"], r["task"]): r["acc"] for r in downstream["checkpoints"]}
    assert by_checkpoint[("iter_0000005", "arc_easy")] == 0.25 + 5 / 1000
    assert by_checkpoint[("final", "arc_easy")] == 0.25 + 10 / 1000
    again = flame("eval", f"sweep_dir={sweep}", "--tasks", tasks, "--checkpoints", "all",
                  "--n-boot", "5")
    assert "2 already evaluated, 0 to evaluate" in again.stdout

"""`flame launch` with trainer=megatron: the dry run on a machine without SLURM, bad input
refused before anything is written, trainer keys overridden at launch applied or refused, and
the GPU smoke study run end to end on CPU with the core_v0.16.1 stand-in."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import pytest

from tests.jobs.conftest import flame
from tests.trainers.conftest import standin_checkout
from trainers.megatron_argspec import check_argv

RELEASE = ("experiment=flame_release", "trainer=megatron")


def _no_slurm_env(tmp_path: Path) -> dict[str, str | None]:
    """PATH without sbatch/srun/scontrol and no SLURM_* variables: a laptop."""
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    return {**{k: None for k in os.environ if k.startswith("SLURM")}, "PATH": str(empty)}


def _run_flame(env: dict[str, str | None], *argv: str):
    """The CLI in this process with ``env`` changed (``tests.jobs.conftest.flame``)."""
    return flame(*argv, env=env, check=False)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _args_of(launch_sh: Path) -> list[str]:
    text = launch_sh.read_text()
    body = text[text.index("ARGS=(\n") + 7:text.index("\n)\n")]
    return [w for line in body.splitlines() if not line.strip().startswith("#")
            for w in shlex.split(line)]


def test_dry_run_without_slurm_writes_seven_launch_scripts_and_the_sbatch_file(tmp_path):
    sweep = tmp_path / "sweep"
    env = _no_slurm_env(tmp_path)
    assert _run_flame(env, "plan", *RELEASE, f"sweep_dir={sweep}").returncode == 0
    out = _run_flame(env, "launch", "--dry-run", *RELEASE, "cluster=slurm_h100",
                     "trainer.data_path=/data/x", f"sweep_dir={sweep}")
    assert out.returncode == 0, out.stderr
    scripts = sorted(sweep.glob("runs/*/launch.sh"))
    assert len(scripts) == 7 and "would submit 7 runs" in out.stdout
    for script in scripts:
        args = _args_of(script)
        assert check_argv(args) == [] and args[args.index("--data-path") + 1] == "/data/x"
        assert "srun" not in script.read_text()
    sbatch = (sweep / "jobs" / "dry-run" / "array-0.sbatch").read_text()
    # 64 CPUs (8 a GPU), all the node's memory, the signal's lead for a 144 GB checkpoint
    for line in ("--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8", "--array=0-6%7",
                 "--signal=USR2@348", "--exclusive", "--cpus-per-task=64", "--mem=0"):
        assert f"#SBATCH {line}" in sbatch
    assert "export SRUN_CPUS_PER_TASK=64\n" in sbatch
    assert json.loads((sweep / "jobs" / "dry-run" / "array-0.json").read_text())["run_ids"]
    assert not (sweep / "runs" / sweep.joinpath("plan.csv").read_text().split()[1][:12]
                / "state.json").exists()  # nothing submitted, no ledger entry


@pytest.mark.parametrize("overrides, message", [
    ((), r"trainer\.data_path: not set; give the tokenised dataset prefix"),
    (("trainer.data_path=/d", "trainer.megatron_path=EMPTY"),
     r"trainer\.megatron_path=.*: no pretrain_gpt\.py there; point it"),
    (("trainer.data_path=/d", "trainer.expert_model_parallel_size=3"),
     r"trainer\.expert_model_parallel_size=3 does not divide the 32 GPUs"),
    (("trainer.data_path=/d", "trainer.nodes=3"),
     r"planner\.global_batch_size=1024 is not a multiple of micro_batch_size=\d+ x "
     r"data-parallel size 24"),
    (("trainer.data_path=/d", "trainer.eval_iters=10"),
     r"trainer\.eval_iters=10 differs from the plan's 100 .* re-plan with `flame plan"),
    (("trainer.data_path=/d", "cluster.gpus_per_node=4"),
     r"cluster\.gpus_per_node=4 disagrees with trainer\.gpus_per_node=8"),
])
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "launch"])
def test_bad_input_exits_2_naming_the_key_before_anything_is_written(tmp_path, overrides,
                                                                   message, dry_run):
    sweep = tmp_path / "sweep"
    # a real launch also needs the checkout to exist: the stand-in's (through MEGATRON_LM)
    env = _no_slurm_env(tmp_path) if dry_run else \
        {"MEGATRON_LM": str(standin_checkout(tmp_path / "standin"))}
    assert _run_flame(env, "plan", *RELEASE, f"sweep_dir={sweep}").returncode == 0
    empty = tmp_path / "megatron"
    empty.mkdir()
    overrides = tuple(o.replace("EMPTY", str(empty)) for o in overrides)
    before = _snapshot(sweep)
    python = [] if dry_run else [f"trainer.python={sys.executable}"]
    out = _run_flame(env, "launch", *(["--dry-run"] if dry_run else []), *RELEASE,
                     "cluster=slurm_h100", *python, *overrides, f"sweep_dir={sweep}")
    assert out.returncode == 2, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("flame launch: error")]
    assert len(errors) == 1 and re.search(message, errors[0]), out.stderr
    assert _snapshot(sweep) == before


def test_operational_override_at_launch_is_applied_to_config_yaml_and_printed(tmp_path):
    sweep, megatron = tmp_path / "sweep", standin_checkout(tmp_path / "megatron")
    smoke = ("experiment=megatron_smoke", f"sweep_dir={sweep}")
    flame("plan", *smoke)
    before = (sweep / "config.yaml").read_text()
    out = flame("launch", *smoke, f"trainer.megatron_path={megatron}",
                f"trainer.python={sys.executable}", "trainer.log_interval=10")
    assert "trainer.log_interval: 5 -> 10 (operational: applied at launch, config.yaml updated)" \
        in out.stderr
    after = (sweep / "config.yaml").read_text()
    assert f"megatron_path: {megatron}" in after and "log_interval: 10" in after
    assert "log_interval: 5" in before and "/opt/Megatron-LM" in before
    state = next(sweep.glob("runs/*")) / "state.json"  # the job ran with the applied checkout
    deadline = time.monotonic() + 90
    while json.loads(state.read_text())["state"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, state.read_text()
        time.sleep(0.5)
    assert json.loads(state.read_text())["state"] == "completed"
    plan_ids = (sweep / "plan.csv").read_text()
    flame("plan", *smoke, f"trainer.megatron_path={megatron}", f"trainer.python={sys.executable}",
          "trainer.log_interval=10")
    assert (sweep / "plan.csv").read_text() == plan_ids  # operational: same run ids


def test_smoke_study_runs_end_to_end_on_the_stand_in(tmp_path):
    """conf/experiment/megatron_smoke.yaml as docs/megatron_smoke.md runs it on a GPU, with the
    stand-in as $MEGATRON_LM/pretrain_gpt.py and this venv's python: 103 iterations (not a
    multiple of the log interval 5) complete, collect reads the final validation loss, MFU and
    GPU-hours."""
    sweep, megatron = tmp_path / "sweep", standin_checkout(tmp_path / "megatron")
    out = flame("run", "experiment=megatron_smoke", f"sweep_dir={sweep}",
                f"trainer.python={sys.executable}", env={"MEGATRON_LM": str(megatron)},
                timeout=300)
    assert "runs finished 1/1  1 completed" in out.stdout or "1 completed" in out.stdout
    import csv
    (row,) = list(csv.DictReader(open(sweep / "results.csv")))
    assert row["train_iters"] == "103" and row["flag"] == "ok" and row["iterations_done"] == "103"
    assert float(row["final_val_loss"]) > 2.0
    assert float(row["mfu"]) > 0 and float(row["gpu_hours_spent"]) > 0
    # routing: Megatron's layer-mean MoE losses from TensorBoard (analysis/routing.py)
    assert row["routing_status"] == "ok" and "tensorboard" in row["routing_reason"]
    assert 1.0 < float(row["routing_aux_loss"]) < 1.5 and row["routing_load_max_mean"] == ""
    log = next(sweep.glob("runs/*/train.log")).read_text()
    assert "validation loss at iteration 103 on validation set" in log
    assert "iteration      103/" not in log  # Megatron prints no training line at 103


def test_a_launch_that_does_not_repeat_the_plans_overrides_changes_nothing(tmp_path):
    """Only the trainer keys a launch's command line names count as overrides: planning with
    `trainer.noise=0.01` and launching with just `sweep_dir=` keeps the plan's noise."""
    sweep = tmp_path / "sweep"
    plan = [f"sweep_dir={sweep}", "trainer=simulated", "trainer.noise=0.01",
            "budgets.flops=[3e10]", "cluster=local"]
    env: dict[str, str | None] = {}
    assert _run_flame(env, "plan", *plan).returncode == 0
    before = (sweep / "config.yaml").read_text()
    out = _run_flame(env, "launch", "--dry-run", f"sweep_dir={sweep}", "trainer=simulated",
                     "cluster=local")
    assert out.returncode == 0, out.stderr
    assert (sweep / "config.yaml").read_text() == before and "noise" not in out.stderr
    named = _run_flame(env, "launch", "--dry-run", f"sweep_dir={sweep}", "trainer=simulated",
                       "trainer.noise=0.02", "cluster=local")
    assert named.returncode == 2 and "trainer.noise=0.02" in named.stderr  # a result field

"""`flame check`: its job is the sweep's own job (the dry runs agree but for one node, a short
time limit and the probe line), and on the local SLURM with the Megatron stand-in it trains a
few iterations, is signalled, requeues, resumes and reports what would fail."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from tests.jobs.conftest import flame
from tests.trainers.conftest import standin_overrides

RELEASE = ("experiment=flame_release", "trainer=megatron", "cluster=slurm",
           "trainer.data_path=/data/dclm")
PER_RUN = {"--train-iters", "--lr-wsd-decay-iters", "--eval-interval", "--save-interval",
           "--eval-iters", "--log-interval", "--save", "--load", "--tensorboard-dir"}


def _options(sbatch: str) -> dict[str, str]:
    return dict(line[len("#SBATCH --"):].partition("=")[::2] for line in sbatch.splitlines()
                if line.startswith("#SBATCH --"))


def _args(launch_sh: Path) -> dict[str, list[str]]:
    text = launch_sh.read_text()
    words = shlex.split(text[text.index("ARGS=(\n") + 7:text.index("\n)\n")], comments=True)
    flags: dict[str, list[str]] = {}
    for word in words:
        if word.startswith("--"):
            key = word
            flags[key] = []
        else:
            flags[key].append(word)
    return flags


def test_the_check_job_is_the_sweeps_job_on_one_node(tmp_path):
    sweep = tmp_path / "sweep"
    flame("plan", *RELEASE, f"sweep_dir={sweep}")
    flame("launch", "--dry-run", *RELEASE, f"sweep_dir={sweep}")
    out = flame("check", "--dry-run", *RELEASE, f"sweep_dir={sweep}", "--iters", "6")
    assert "would submit 1 job training" in out.stdout
    run = re.search(r"training (\w+) ", out.stdout).group(1)
    mine = _options((sweep / "check/jobs/dry-run/array-0.sbatch").read_text())
    theirs = _options((sweep / "jobs/dry-run/array-0.sbatch").read_text())
    differ = {k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)}
    assert differ == {"array", "nodes", "time", "error", "output"}  # one run, one node
    assert (mine["nodes"], theirs["nodes"], mine["time"]) == ("1", "4", "30")
    assert mine["cpus-per-task"] == "64" and mine["mem"] == "0"  # the sweep's resources
    probe = (sweep / "check/jobs/dry-run/array-0.sbatch").read_text()
    assert "export SRUN_CPUS_PER_TASK=64" in probe and "jobs/check_probe.py --out" in probe
    check, real = _args(sweep / "check/runs" / run / "launch.sh"), _args(sweep / "runs" / run /
                                                                         "launch.sh")
    assert check["--train-iters"] == ["6"]
    assert {k: v for k, v in check.items() if k not in PER_RUN} == \
        {k: v for k, v in real.items() if k not in PER_RUN}  # the recipe, data and caches


def test_check_refuses_a_sweep_whose_trainer_runs_no_job_in_one_line(tmp_path):
    args = (f"sweep_dir={tmp_path / 's'}", "experiment=demo", "trainer=simulated")
    flame("plan", *args)
    out = flame("check", *args, check=False)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "flame check: error: trainer.name='simulated': the sweep's trainer runs no job to check "
        "(flame check checks trainer=megatron sweeps)"]
    assert not (tmp_path / "s" / "check").exists()


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_check_on_the_local_slurm_trains_is_signalled_requeues_and_reports(
        slurm_cluster, tmp_path, monkeypatch):
    """The one real-system test of `flame check` (about 65 s, mostly SLURM's requeue)."""
    monkeypatch.setenv("FLAME_STANDIN_STEP_S", "0.3")
    args = (f"sweep_dir={tmp_path / 'sweep'}", "experiment=megatron_smoke", "cluster=slurm_local",
            *standin_overrides(tmp_path / "megatron"))
    flame("plan", *args)
    out = flame("check", *args, "--write-mb", "4", "--wait-s", "240", check=False)
    report = out.stdout
    assert out.returncode == 1, out.stdout + out.stderr  # the stand-in is not Megatron-LM
    assert "ok   node " in report and sys.executable in report
    assert "FAIL imports: ModuleNotFoundError: No module named 'megatron.training'" in report
    assert "ok   GPUs: not requested (cluster.request_gpus=false)" in report
    assert "ok   checkpoint write: " in report and "GB/s" in report
    assert "ok   Megatron: trained 10 iterations and validated" in report
    assert "ok   checkpoint: saved and loaded" in report
    assert ("ok   signal: USR2 sent at iteration >= 4; Megatron saved and exited; requeued and "
            "resumed") in report

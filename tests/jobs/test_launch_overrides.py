"""`flame launch` takes every setting from the sweep's config.yaml (jobs/overrides.py): the
cluster the sweep was planned for, the sweep's own trainer for `trainer.*` keys, operational
keys named at launch applied and printed, and paths the environment gives (MEGATRON_LM,
FLAME_DATA_PATH) read at launch. The refusals (another trainer or experiment, a result key, a
key launch does not read, a re-plan naming what changed) are rows of test_bad_inputs.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from jobs.cli import compose
from jobs.overrides import launch_settings
from jobs.status import wait_until_terminal
from tests.jobs.conftest import flame, make_sweep, plan_ids
from tests.jobs.fake_slurm import fake_slurm
from tests.trainers.conftest import standin_checkout

SMOKE = "experiment=megatron_smoke"


def _sums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _recorded_cluster(sweep: Path) -> dict:
    return yaml.safe_load((sweep / "jobs" / "cluster.yaml").read_text())


def test_a_launch_naming_no_cluster_goes_to_the_planned_one(tmp_path: Path,
                                                            monkeypatch) -> None:
    """Planned with cluster=slurm_h100, launched with only sweep_dir=: SLURM, not local."""
    make_sweep(tmp_path, "cluster=slurm_h100", "budgets.flops=[3e11]")
    out = flame("launch", "--dry-run", f"sweep_dir={tmp_path}")
    assert "would submit 5 runs (slurm_h100)" in out.stdout
    assert "(using cluster=slurm_h100, which this sweep was planned with" in out.stderr
    assert (tmp_path / "jobs" / "dry-run" / "array-0.sbatch").is_file()
    assert not (tmp_path / "jobs" / "dry-run" / "local.json").exists()
    with fake_slurm(monkeypatch) as slurm:
        out = flame("launch", f"sweep_dir={tmp_path}")
    assert "submitted 5 runs (slurm_h100)" in out.stdout and len(slurm.jobs) == 1
    assert "#SBATCH --gpus-per-node=8" in slurm.jobs[0].sbatch  # slurm_h100's own shape
    assert _recorded_cluster(tmp_path)["name"] == "slurm_h100"


@pytest.mark.slurm
def test_the_planned_slurm_cluster_gets_the_jobs(slurm_sweep, tmp_path: Path) -> None:
    """The real-system case: planned for the local SLURM, launched with only sweep_dir=."""
    slurm_sweep("budgets.flops=[3e11]")
    out = flame("launch", f"sweep_dir={tmp_path / 'sweep'}")
    assert "submitted 5 runs (slurm_local)" in out.stdout, out.stdout + out.stderr
    shown = out.stdout.split("job ids: ")[1].split()[0].rstrip(",")
    assert shown.split("_")[0].isdigit()  # a SLURM array task, not local-<pid>


def test_operational_keys_are_applied_printed_and_kept(tmp_path: Path) -> None:
    """A trainer key and a cluster key that change no result: applied and printed; the dry
    run writes nothing of the sweep's, the launch writes config.yaml and the cluster record;
    the run ids stay."""
    cfg = make_sweep(tmp_path, "cluster=local", "budgets.flops=[3e11]")
    config, ids = (tmp_path / "config.yaml").read_text(), plan_ids(tmp_path)
    named = ("trainer.log_points=7", "cluster.parallelism=3")
    out = flame("launch", "--dry-run", f"sweep_dir={tmp_path}", *named)
    assert "trainer.log_points: 20 -> 7 (operational: applied at launch)\n" in out.stderr
    assert "cluster.parallelism: None -> 3 (operational: applied at launch)\n" in out.stderr
    assert json.loads((tmp_path / "jobs" / "dry-run" / "local.json").read_text())["workers"] == 3
    assert (tmp_path / "config.yaml").read_text() == config
    out = flame("launch", f"sweep_dir={tmp_path}", *named)
    assert "trainer.log_points: 20 -> 7 (operational: applied at launch, config.yaml " \
           "updated)" in out.stderr
    status = wait_until_terminal(tmp_path, cfg, poll_s=0.2, progress=False)
    assert status.counts["completed"] == 5
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["trainer"]["log_points"] == 7
    assert _recorded_cluster(tmp_path)["parallelism"] == 3 and plan_ids(tmp_path) == ids
    log = (tmp_path / "runs" / ids[0] / "train.log").read_text()
    assert log.count("] iteration ") == 7  # training lines: the runs took the applied value


def test_repeating_the_sweeps_own_choices_changes_nothing(tmp_path: Path) -> None:
    """trainer=, cluster= naming the sweep's own: its plan-time settings stay."""
    make_sweep(tmp_path, "cluster=local", "cluster.parallelism=2", "trainer.noise=0.01",
               "budgets.flops=[3e11]")
    before = (tmp_path / "config.yaml").read_text()
    out = flame("launch", "--dry-run", f"sweep_dir={tmp_path}", "trainer=simulated",
                "cluster=local")
    assert out.stderr == "" and "would submit 5 runs (local)" in out.stdout
    assert json.loads((tmp_path / "jobs" / "dry-run" / "local.json").read_text())["workers"] == 2
    assert (tmp_path / "config.yaml").read_text() == before


def test_megatron_paths_from_the_environment_are_read_at_launch(tmp_path: Path,
                                                                monkeypatch) -> None:
    """MEGATRON_LM exported before `flame launch` is used (and said so), not the value frozen
    into config.yaml at plan time; the command line beats it; FLAME_DATA_PATH likewise."""
    sweep, empty = tmp_path / "sweep", tmp_path / "empty"
    empty.mkdir()
    flame("plan", SMOKE, f"sweep_dir={sweep}", env={"MEGATRON_LM": None,
                                                     "FLAME_DATA_PATH": None})
    assert "megatron_path: /opt/Megatron-LM" in (sweep / "config.yaml").read_text()
    before = _sums(sweep)
    out = flame("launch", "--dry-run", f"sweep_dir={sweep}", env={"MEGATRON_LM": str(empty)},
                check=False)  # the exported checkout is the one checked: refused, one line
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert f"trainer.megatron_path={empty}: no pretrain_gpt.py there" in out.stderr
    assert _sums(sweep) == before
    standin, other = standin_checkout(tmp_path / "megatron"), standin_checkout(tmp_path / "b")
    out = flame("launch", "--dry-run", f"sweep_dir={sweep}",
                env={"MEGATRON_LM": str(standin), "FLAME_DATA_PATH": "/data/x"})
    assert (f"trainer.megatron_path: '/opt/Megatron-LM' -> '{standin}' (from $MEGATRON_LM) "
            "(operational: applied at launch)") in out.stderr
    assert "trainer.data_path: None -> ['/data/x'] (from $FLAME_DATA_PATH)" in out.stderr
    (script,) = sweep.glob("runs/*/launch.sh")
    assert f"MEGATRON={standin}\n" in script.read_text()
    out = flame("launch", "--dry-run", f"sweep_dir={sweep}", f"trainer.megatron_path={other}",
                env={"MEGATRON_LM": str(standin)})
    assert f"MEGATRON={other}\n" in script.read_text() and "$MEGATRON_LM" not in out.stderr
    # what a real launch writes to config.yaml (and the jobs then read)
    monkeypatch.setenv("MEGATRON_LM", str(standin))
    settings = launch_settings(sweep, compose([SMOKE, f"sweep_dir={sweep}"]), [])
    assert settings.config["trainer"]["megatron_path"] == str(standin)
    monkeypatch.delenv("MEGATRON_LM")
    settings = launch_settings(sweep, compose([SMOKE, f"sweep_dir={sweep}"]), [])
    assert settings.config["trainer"]["megatron_path"] == "/opt/Megatron-LM"  # config.yaml's

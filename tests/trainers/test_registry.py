"""The trainer registry and protocol: built-ins found lazily by name, plugins by
``package.module:attr``, each config's numerics version, and no trainer name compared as a
string outside the trainers' own modules."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.errors import ConfigError
from tests.trainers.conftest import make_plan
from trainers.base import BaseTrainer, Trainer
from trainers.registry import BUILTINS, register, trainer_for
from trainers.run import train_run
from trainers.settings import TRAINER_CONFIGS, SimulatedConfig

REPO = Path(__file__).resolve().parents[2]


def test_builtins_by_name_and_by_config():
    for name in BUILTINS:
        trainer = trainer_for(name)
        assert isinstance(trainer, Trainer) and trainer.name == name
        assert trainer_for({"name": name}) is trainer is trainer_for(trainer)
        assert TRAINER_CONFIGS[name] is trainer.config
    assert trainer_for(SimulatedConfig(law={"E": 1, "A": 1, "alpha": 0.3, "B": 1, "beta": 0.3})) \
        is trainer_for("simulated")
    with pytest.raises(ConfigError, match="trainer.name='nope'"):
        trainer_for("nope")
    with pytest.raises(ConfigError, match="trainer.name=None"):
        trainer_for({})


def test_the_simulated_trainer_never_imports_torch(tmp_path):
    code = ("import sys; from trainers.registry import trainer_for; "
            "from trainers.settings import trainer_config; t = trainer_for('simulated'); "
            "t.branch_ready('.', 1); t.routing('.'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_register_a_trainer_in_this_process():
    class Other(BaseTrainer):
        name = "other-in-process"
        config = SimulatedConfig
    registered = register(Other)
    assert trainer_for("other-in-process") is registered


def test_the_layers_helpers_check_branchable_call(tmp_path):
    """sweep/config.py (through conf) calls trainer_for(study.trainer).check_branchable(
    study.training, study.trainer) on the typed config."""
    from conf.study import study_config
    from jobs.cli import compose

    study = study_config(compose([f"sweep_dir={tmp_path}", "trainer=megatron",
                                  "trainer.extra_args=[--lr-decay-style cosine]"]))
    with pytest.raises(ConfigError, match="--lr-decay-style cosine is not WSD"):
        trainer_for(study.trainer).check_branchable(study.training, study.trainer)
    study.training.min_lr = study.training.lr
    with pytest.raises(ConfigError, match="training.min_lr"):
        trainer_for("embedded").check_branchable(study.training, None)


def test_numerics_version_is_one_for_every_builtin_and_keeps_the_run_ids(tmp_path):
    """The field is hashed only when not 1 (sweep.schema.result(since=2)): the demo's pinned
    ids stay (tests/sweep); a plan made for another version gets other ids."""
    rows, cfg = make_plan(tmp_path / "a", "trainer=simulated")
    assert cfg["trainer"]["numerics_version"] == 1 == trainer_for("simulated").numerics_version
    assert all(trainer_for(n).numerics_version == 1 for n in BUILTINS)
    bumped, _ = make_plan(tmp_path / "b", "trainer=simulated", "trainer.numerics_version=2")
    assert {r["run_id"] for r in rows}.isdisjoint(r["run_id"] for r in bumped)


def test_a_plan_for_other_numerics_is_refused(sim_plan, tmp_path):
    rows, cfg = sim_plan
    assert train_run(rows[0], cfg, tmp_path / "ok")["numerics_version"] == 1
    cfg["trainer"]["numerics_version"] = 2
    with pytest.raises(ConfigError, match="trainer.numerics_version=2 .* computes version 1"):
        train_run(rows[0], cfg, tmp_path / "refused")


def test_no_trainer_name_compared_outside_the_trainers_modules():
    """jobs/, analysis/ and trainers/ ask a trainer, never its name (the registry and the
    trainers' own modules and configs name themselves)."""
    own = {"trainers/registry.py", "trainers/settings.py", "trainers/simulated.py",
           "trainers/megatron.py", "trainers/megatron_trainer.py", "trainers/megatron_readers.py",
           "trainers/megatron_argspec.py", "trainers/megatron_job.py"}
    names = "|".join(BUILTINS)
    pattern = re.compile(rf"""[=!]=\s*["']({names})["']|["']({names})["']\s*[:,]\s*""")
    found = []
    for package in ("jobs", "analysis", "trainers"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in own or rel.startswith("trainers/embedded/"):
                continue
            found += [f"{rel}: {line.strip()}" for line in path.read_text().splitlines()
                      if pattern.search(line)]
    assert found == []


def test_completed_and_artefacts(sim_plan, tmp_path):
    rows, cfg = sim_plan
    trainer, iters = trainer_for("simulated"), int(rows[0]["train_iters"])
    assert not trainer.completed(tmp_path / "run", iters)
    train_run(rows[0], cfg, tmp_path / "run")
    assert trainer.completed(tmp_path / "run", iters)
    assert not trainer.completed(tmp_path / "run", iters + 1)
    assert all((tmp_path / "run" / name).is_file() for name in trainer.artefacts)
    assert trainer.job_shape(cfg["trainer"]) is None and trainer.throughput(tmp_path) is None

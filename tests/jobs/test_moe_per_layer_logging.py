"""``trainer.moe_per_layer_logging``: Megatron's ``--moe-per-layer-logging`` as an operational
trainer field. Turning it on (at plan or at launch) renders the flag into launch.sh and changes
no run_id (the demo's pinned ids: tests/sweep/test_schema.py)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.jobs.conftest import flame

RELEASE = ("experiment=flame_release", "trainer=megatron",
           "trainer.data_path=/data/dclm_text_document")
FLAG = "--moe-per-layer-logging"


def _no_slurm_env(tmp_path: Path) -> dict[str, str | None]:
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    return {**{k: None for k in os.environ if k.startswith("SLURM")}, "PATH": str(empty)}


def _launch_scripts(sweep: Path) -> list[str]:
    return [p.read_text() for p in sorted(sweep.glob("runs/*/launch.sh"))]


def test_per_layer_logging_renders_the_flag_and_keeps_every_run_id(tmp_path):
    env = _no_slurm_env(tmp_path)
    off, on = tmp_path / "off", tmp_path / "on"
    flame("plan", *RELEASE, f"sweep_dir={off}")
    flame("plan", *RELEASE, "trainer.moe_per_layer_logging=true", f"sweep_dir={on}")
    assert (on / "plan.csv").read_bytes() == (off / "plan.csv").read_bytes()
    assert "moe_per_layer_logging: true" in (on / "config.yaml").read_text()

    flame("launch", "--dry-run", f"sweep_dir={on}", env=env)
    flame("launch", "--dry-run", f"sweep_dir={off}", env=env)
    with_flag, without = _launch_scripts(on), _launch_scripts(off)
    assert len(with_flag) == len(without) == 7
    assert all(f"  {FLAG}\n" in text for text in with_flag)
    assert not any(FLAG in text for text in without)


def test_turned_on_at_launch_it_is_applied_as_operational(tmp_path):
    env, sweep = _no_slurm_env(tmp_path), tmp_path / "sweep"
    flame("plan", *RELEASE, f"sweep_dir={sweep}")
    plan = (sweep / "plan.csv").read_bytes()
    out = flame("launch", "--dry-run", *RELEASE, f"sweep_dir={sweep}",
                "trainer.moe_per_layer_logging=true", env=env)
    assert "trainer.moe_per_layer_logging: False -> True (operational" in out.stderr
    assert all(f"  {FLAG}\n" in text for text in _launch_scripts(sweep))
    assert (sweep / "plan.csv").read_bytes() == plan


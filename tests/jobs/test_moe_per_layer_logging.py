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
    from sweep.config import read_config, read_plan
    from trainers.megatron import argv_of

    env = _no_slurm_env(tmp_path)
    off, on = tmp_path / "off", tmp_path / "on"
    flame("plan", *RELEASE, f"sweep_dir={off}")
    flame("plan", *RELEASE, "trainer.moe_per_layer_logging=true", f"sweep_dir={on}")
    assert (on / "plan.csv").read_bytes() == (off / "plan.csv").read_bytes()  # same run_ids
    assert "moe_per_layer_logging: true" in (on / "config.yaml").read_text()
    rows, config = read_plan(off), read_config(off)
    assert not any(FLAG in argv_of(row, config, tmp_path / "x") for row in rows)

    flame("launch", "--dry-run", f"sweep_dir={on}", env=env)
    assert [FLAG in text for text in _launch_scripts(on)] == [True] * 7

    # turned on at launch: operational, applied and said so; the plan stays
    out = flame("launch", "--dry-run", *RELEASE, f"sweep_dir={off}",
                "trainer.moe_per_layer_logging=true", env=env)
    assert "trainer.moe_per_layer_logging: False -> True (operational" in out.stderr
    assert [f"  {FLAG}\n" in text for text in _launch_scripts(off)] == [True] * 7
    assert (off / "plan.csv").read_bytes() == (on / "plan.csv").read_bytes()

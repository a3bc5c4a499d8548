"""Shared fixtures: a real plan made by the real planner from the real Hydra configs."""

from __future__ import annotations

import csv
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conf.study import plan_from_cfg, write_plan
from jobs.cli import compose


def make_plan(tmp_path: Path, *overrides: str) -> tuple[list[dict], dict]:
    """Compose the config, write plan.csv/config.yaml, and read them back as a job would."""
    cfg = compose([f"sweep_dir={tmp_path}", *overrides])
    the_plan, settings = plan_from_cfg(cfg)
    write_plan(tmp_path, the_plan, settings, cfg)
    rows = list(csv.DictReader(open(tmp_path / "plan.csv")))
    return rows, OmegaConf.to_container(OmegaConf.load(tmp_path / "config.yaml"))


@pytest.fixture
def planner():
    """``make_plan`` as a fixture (test modules here are not a package)."""
    return make_plan


@pytest.fixture
def sim_plan(tmp_path: Path) -> tuple[list[dict], dict]:
    return make_plan(tmp_path, "trainer=simulated")


STANDIN = Path(__file__).with_name("megatron_standin.py")


def standin_checkout(path: Path) -> Path:
    """A "Megatron-LM checkout" whose pretrain_gpt.py is the stand-in (a symlink, as the
    stand-in supports): launch.sh runs it under the real torchrun, with this interpreter."""
    path.mkdir(parents=True, exist_ok=True)
    link = path / "pretrain_gpt.py"
    if not link.exists():
        link.symlink_to(STANDIN)
    return path


def standin_overrides(path: Path) -> list[str]:
    """trainer=megatron on this machine: the stand-in, one rank, expert parallelism 1."""
    import sys
    return [f"trainer.megatron_path={standin_checkout(path)}", f"trainer.python={sys.executable}",
            "trainer.gpus_per_node=1", "trainer.nodes=1", "trainer.expert_model_parallel_size=1"]


def usr2_once_logged(log: Path, marker: str, poll_s: float) -> threading.Thread:
    """Preempt as SLURM does (USR2 to the job's task) once ``marker`` appears in ``log``;
    the watching thread, started (gives up after 60 s)."""
    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if log.is_file() and marker in log.read_text():
                os.kill(os.getpid(), signal.SIGUSR2)
                return
            time.sleep(poll_s)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread

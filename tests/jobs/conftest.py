"""Fixtures for jobs/: real plans from the real planner and Hydra configs, and the real local
SLURM of `flame cluster up` (tests marked `slurm` skip, saying so, when it is not up)."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from conf.study import plan_from_cfg, write_plan
from jobs.cli import compose
from jobs.cluster import LocalCluster, default_state_dir, is_up

REPO = Path(__file__).resolve().parents[2]
FLAME = [sys.executable, "-m", "jobs.cli"]
# 20 and 50 runs of a demo-shaped grid family (5 sizes per budget); min_iters=1 keeps every size
GRID_FAMILY = ("family.members=null",
               "family.grid={hidden_size:[32,48,64,96,128],num_layers:[2]}")
BUDGETS_15 = "budgets.flops=[3e11,1e12,3e12]"
BUDGETS_20 = "budgets.flops=[3e11,1e12,3e12,1e13]"


def make_sweep(sweep_dir: Path, *overrides: str, trainer: str = "simulated") -> DictConfig:
    """Plan a sweep with the real planner; returns the composed config (as `flame` would)."""
    budgets = () if any(o.startswith("budgets.flops=") for o in overrides) else (BUDGETS_15,)
    cfg = compose([f"sweep_dir={sweep_dir}", f"trainer={trainer}", "planner.min_iters=1",
                   *GRID_FAMILY, *budgets, *overrides])
    the_plan, settings = plan_from_cfg(cfg)
    write_plan(sweep_dir, the_plan, settings, cfg)
    return cfg


def plan_ids(sweep_dir: Path) -> list[str]:
    with open(sweep_dir / "plan.csv", newline="") as handle:
        return [row["run_id"] for row in csv.DictReader(handle)]


def flame(*argv: str, env: dict | None = None, check: bool = True, timeout: float = 120,
          subprocess_: bool = False, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """The real `flame` CLI (``jobs.cli.main``), in this process: an interpreter's start and
    imports (about a second of CPU a call) add nothing to what these tests check, so only a
    test that needs a process of its own (to kill it, or to race another) asks for one with
    ``subprocess_=True``. Either way: the exit code, stdout and stderr, from ``cwd`` (the
    repository); ``env`` is added to the environment (a None value removes the variable)."""
    if subprocess_:
        full = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
        out = subprocess.run([*FLAME, *argv], cwd=cwd, capture_output=True, text=True,
                             env=full, timeout=timeout)
    else:
        out = _in_process(list(argv), env or {}, cwd)
    if check and out.returncode != 0:
        raise AssertionError(f"flame {' '.join(argv)} -> {out.returncode}\n{out.stdout}\n"
                             f"{out.stderr}")
    return out


def _in_process(argv: list[str], env: dict[str, str | None],
                cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``jobs.cli.main(argv)`` with the environment ``env`` added (None: removed), from
    ``cwd``, its output captured; an uncaught exception exits 1 with its traceback on stderr,
    as the interpreter would."""
    from jobs.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env}
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except Exception:  # a traceback and exit 1, like `python -m`
                traceback.print_exc()
                code = 1
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(["flame", *argv], int(code or 0), out.getvalue(),
                                       err.getvalue())


@pytest.fixture(scope="session")
def slurm_cluster() -> LocalCluster:
    """The local SLURM (`flame cluster up`), with SLURM_CONF exported for this process."""
    cluster = LocalCluster(default_state_dir())
    if not is_up(cluster):
        pytest.skip(f"the local SLURM is not up (state dir {cluster.state_dir}): run "
                    "`flame cluster up` (tests/run.sh does)")
    os.environ.setdefault("SLURM_CONF", str(cluster.slurm_conf))
    return cluster


@pytest.fixture
def slurm_sweep(tmp_path: Path, slurm_cluster: LocalCluster) -> Callable[..., DictConfig]:
    """Plan sweeps for cluster=slurm_local; every job they submitted is cancelled at teardown."""
    made: list[Path] = []

    def make(*overrides: str, name: str = "sweep", trainer: str = "simulated") -> DictConfig:
        made.append(tmp_path / name)
        return make_sweep(tmp_path / name, "cluster=slurm_local", *overrides, trainer=trainer)

    yield make
    for sweep_dir in made:
        if (sweep_dir / "runs").is_dir():
            flame("cancel", "--all", f"sweep_dir={sweep_dir}", "cluster=slurm_local", check=False)

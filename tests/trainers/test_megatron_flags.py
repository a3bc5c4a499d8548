"""Every flag flame renders for FLAME-MoE's seven released models and a sweep run exists in
Megatron-LM core_v0.16.1 and parses there (the recorded argument spec), and every value equals
FLAME-MoE's (trainers/data/flame_moe_recipe.csv), except the deliberate differences listed in
docs/flame_recipe.md and run-dependent values, which are checked against their formulas."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import pytest

from sweep.planrow import PlanRow
from trainers.megatron import argv_of
from trainers.megatron_argspec import check_argv

TABLE = list(csv.DictReader(resources.files("trainers").joinpath(
    "data", "flame_moe_recipe.csv").read_text().splitlines()))
# scripts/release/flame-moe-<size>.sh:8 (micro-batch) and their hand-set --eval-interval and
# --save-interval (flame-moe_step2.sh:24,26), by train_iters.
RELEASE_MBS = {"L9-h256": 32, "L9-h512": 32, "L12-h512": 16, "L9-h1024": 8, "L15-h1024": 8,
               "L12-h1536": 8, "L18-h2048": 4}
RELEASE_INTERVAL = {2121: 212, 2424: 242, 4165: 416, 5473: 540, 5685: 568, 8815: 880,
                    11029: 1100}
# flame's deliberate differences (docs/flame_recipe.md): what flame renders instead.
NOT_RENDERED = {"--wandb-save-dir", "--wandb-project", "--wandb-exp-name"}
DATA = "1.0 /data/shard_00 1.0 /data/shard_01"


def _flags(argv: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for i, word in enumerate(argv):
        if word.startswith("--"):
            values = []
            for nxt in argv[i + 1:]:
                if nxt.startswith("--"):
                    break
                values.append(nxt)
            out[word] = " ".join(values) if values else None
    return out


def _same(ours: str | None, theirs: str) -> bool:
    try:
        return float(ours) == float(theirs)
    except (TypeError, ValueError):
        return ours == theirs


def _expected(flag: str, spec: PlanRow, run_dir: Path, release: bool) -> str | None:
    """A run-dependent value by its formula (the CSV's note column)."""
    a, iters = spec.arch, spec.train_iters
    formulas = {
        "--hidden-size": a.hidden_size, "--ffn-hidden-size": a.ffn_hidden_size,
        "--num-layers": a.num_layers, "--moe-ffn-hidden-size": a.moe_ffn_hidden_size,
        "--moe-shared-expert-intermediate-size": 2 * a.moe_ffn_hidden_size,
        "--moe-layer-freq": f"[0]*1+[1]*{a.num_layers - 1}",
        "--pipeline-model-parallel-size": 1, "--expert-model-parallel-size": 8,
        "--micro-batch-size": RELEASE_MBS[spec.member] if release else spec.micro_batch_size,
        "--lr-wsd-decay-iters": iters // 10, "--train-iters": iters,
        "--save": run_dir / "checkpoints", "--load": run_dir / "checkpoints",
        "--tensorboard-dir": run_dir / "tensorboard", "--data-path": DATA,
        "--data-cache-path": run_dir.parent.parent / "cache" / "megatron_data",
        # sweep: train_iters (search.sh:118-119); release: train_iters // 10, deliberately
        # instead of their hand-set values (checked against them below)
        "--save-interval": iters // 10 if release else iters,
        "--eval-interval": iters // 10 if release else iters,
    }
    return None if flag not in formulas else str(formulas[flag])


def _check_run(row: dict, cfg: dict, tmp_path: Path, release: bool) -> None:
    spec, run_dir = PlanRow.of(row), (tmp_path / "runs" / row["run_id"]).resolve()
    argv = argv_of(row, cfg, run_dir)
    assert check_argv(argv) == [], spec.member
    flags, table = _flags(argv), {r["flag"]: r for r in TABLE}
    assert set(flags) <= set(table), set(flags) - set(table)  # nothing FLAME did not have
    for flag, rec in table.items():
        value = rec["value"]
        if flag in NOT_RENDERED:
            assert flag not in flags
        elif flag == "--exit-signal-handler":  # deliberate: requeue saves on SIGTERM
            assert flags[flag] is None and flag in flags
        elif value == "(switch)":
            assert flag in flags and flags[flag] is None, flag
        elif value.startswith("(off)") or value.startswith("(unset"):
            assert flag not in flags, flag
        elif "$" in value or "<" in value:
            assert flags.get(flag) == _expected(flag, spec, run_dir, release), (flag, spec.member)
        else:
            assert _same(flags.get(flag), value), (flag, flags.get(flag), value)
    if release:  # the deliberate interval rule stays within 1.3 % of their hand-set values
        theirs = RELEASE_INTERVAL[spec.train_iters]
        assert abs(int(flags["--save-interval"]) - theirs) <= 0.013 * theirs


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    from tests.trainers.conftest import make_plan
    path = tmp_path_factory.mktemp("release")
    return path, *make_plan(path, "experiment=flame_release", "trainer=megatron",
                            f"trainer.data_path={DATA}")


def test_seven_release_command_lines_parse_under_core_v0_16_1_and_equal_flames(release):
    path, rows, cfg = release
    assert len(rows) == 7 and {int(r["train_iters"]) for r in rows} == set(RELEASE_INTERVAL)
    assert cfg["trainer"]["nodes"] * cfg["trainer"]["gpus_per_node"] == 32  # 4 x 8
    for row in rows:
        _check_run(row, cfg, path, release=True)


def test_a_sweep_command_line_parses_and_equals_flames(tmp_path):
    from tests.trainers.conftest import make_plan
    rows, cfg = make_plan(tmp_path, "experiment=flame_sweep", "trainer=megatron",
                          f"trainer.data_path={DATA}")
    assert len(rows) == 80 and cfg["trainer"]["nodes"] == 1  # search.sh: 1 node x 8 GPUs
    for row in (rows[0], rows[-1]):
        _check_run(row, cfg, tmp_path, release=False)


def test_replicates_pass_seed_plus_replicate(tmp_path):
    from tests.trainers.conftest import make_plan
    rows, cfg = make_plan(tmp_path, "experiment=flame_sweep", "trainer=megatron",
                          f"trainer.data_path={DATA}", "planner.seeds=2")
    seeds = []
    for row in rows[:2]:
        argv = [str(a) for a in argv_of(row, cfg, tmp_path / row["run_id"])]
        seeds.append(int(argv[argv.index("--seed") + 1]))
    assert seeds == [cfg["training"]["seed"], cfg["training"]["seed"] + 1]

"""FLAME-MoE's release decision from its own 48 runs: selection from a results CSV uses the
experiment's family, and selection.csv puts the released models beside the chosen members."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.fit.release import released_models
from conf.study import settings_from_cfg
from jobs.cli import compose, main
from sweep.accounting import train_iters
from sweep.family import build_family

EXAMPLE = Path(__file__).parents[3] / "examples" / "flame_moe_48runs.csv"


def test_released_models_agree_with_the_release_family_and_planner():
    """One source of truth: the data file matches conf/family/flame_release.yaml shape for
    shape, and the planner's iterations for each are the released ones (2121 ... 11029)."""
    cfg = compose(["experiment=flame_release"])
    members = {m.budgets[0]: m for m in build_family(cfg.family)}
    settings = settings_from_cfg(cfg)
    models = released_models()
    assert [m.iterations for m in models] == [2121, 2424, 4165, 5473, 5685, 8815, 11029]
    for model in models:
        assert members[model.budget].arch == model.arch, model.name
        assert train_iters(model.budget, model.arch, settings.global_batch_size,
                           settings.accounting, settings.flops_formula,
                           settings.iters_rounding) == model.iterations
        assert model.tokens == model.iterations * 1024 * 2048


def test_flame_fit_selects_a_member_beside_each_released_model(tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["fit", f"results={EXAMPLE}", "experiment=flame_release", f"sweep_dir={out}",
                 "fit.bootstrap=0"]) == 0
    printed = capsys.readouterr().out
    assert "Beside FLAME-MoE's released models" in printed
    table = pd.read_csv(out / "selection.csv")
    assert len(table) == 7 and table["member"].notna().all()
    assert list(table["released_iterations"]) == [m.iterations for m in released_models()]
    same = table["released_same"]
    # Where the choice is the released shape, it is trained for the released iterations.
    assert (table.loc[same, "member_iterations"] == table.loc[same, "released_iterations"]).all()
    # Measured: the law fitted on the 48 runs puts N_opt(2e19) = 3.6e8 nearer the 419M shape
    # than the released 290M one; the other six are the released shapes.
    differ = table.loc[~same]
    assert list(differ["budget"]) == [2e19] and list(differ["member"]) == ["L15-h1024"]
    assert differ["released_note"].iloc[0].startswith("differs: chose L15-h1024")
    assert table["released_note"].str.len().gt(0).all()
    for fig in ("release.png", "release.svg"):
        assert (out / "figures" / fig).stat().st_size > 10_000
    # The rows beside each other are the same model where they agree.
    row = table[table["budget"] == 3e19].iloc[0]
    assert math.isclose(row["member_n"], row["released_n"])

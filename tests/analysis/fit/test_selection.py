"""Selection: member sizes counted like the plan, nearest member in log N, planner iterations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from analysis.fit.selection import family_from_config, member_n, select
from analysis.settings import N_COLUMNS, FitSettings
from sweep.errors import ConfigError
from tests.analysis.conftest import plan_sweep


def test_member_n_matches_every_plan_column(tmp_path):
    plan = plan_sweep(tmp_path / "s")
    config = OmegaConf.to_container(OmegaConf.load(tmp_path / "s" / "config.yaml"))
    members = {m.name: m for m in family_from_config(config)}
    for row in plan.drop_duplicates("member").to_dict(orient="records"):
        for column in N_COLUMNS:
            assert member_n(members[row["member"]].arch, column) == row[column], column


def test_nearest_member_and_iterations(tmp_path):
    plan = plan_sweep(tmp_path / "s")
    config = OmegaConf.to_container(OmegaConf.load(tmp_path / "s" / "config.yaml"))
    members = family_from_config(config)
    at_budget = plan[np.isclose(plan["budget"], 1e12)].sort_values("n_active_flame")
    (lo, n_lo), (hi, n_hi) = at_budget[["member", "n_active_flame"]].tail(2).values.tolist()
    # A predictor putting N_opt exactly halfway (in log) between two members, nudged up.
    target = math.sqrt(n_lo * n_hi) * 1.01
    table = select((1e12,), lambda c: (np.array([target]), c / (6 * target), np.array([2.0])),
                   "test", members, config, "n_active_flame")
    row = table.iloc[0]
    assert row["member"] == hi != lo
    planned = at_budget[at_budget["member"] == hi].iloc[0]
    assert row["member_iterations"] == planned["train_iters"]
    assert row["member_tokens"] == planned["tokens"]


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match="fit.n_column"):
        FitSettings.from_mapping({"n_column": "n_active_sheet"})
    with pytest.raises(ConfigError, match="unknown config key 'fit.bootstraps'"):
        FitSettings.from_mapping({"bootstraps": 10})
    with pytest.raises(ConfigError, match="include_flags"):
        FitSettings.from_mapping({"include_flags": ["fine"]})
    assert FitSettings.from_mapping({"window_decades": None}).window_decades is None

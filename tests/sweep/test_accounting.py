"""Accounting against FLAME-MoE's published grid (tests/sweep/data/sweep_grid_80.csv)."""

import csv
import math
from pathlib import Path

import pytest

from sweep.accounting import attention_flops_per_token, flops_per_token, param_counts, train_iters
from sweep.arch import MoEArch
from sweep.errors import ConfigError

GRID = Path(__file__).parent / "data" / "sweep_grid_80.csv"


def grid_rows():
    with open(GRID, newline="") as handle:
        return list(csv.DictReader(handle))


def arch_of(row):
    return MoEArch(int(row["num_layers"]), int(row["hidden_size"]), 16,
                   int(row["ffn_hidden_size"]), int(row["moe_ffn_hidden_size"]), 64, 6,
                   2 * int(row["moe_ffn_hidden_size"]))


def test_all_80_reference_rows_reproduced():
    rows = grid_rows()
    assert len(rows) == 80
    for row in rows:
        arch = arch_of(row)
        flame, exact = param_counts(arch, "flame"), param_counts(arch, "exact")
        assert (flame.active, flame.total) == (int(row["active_params_sheet"]),
                                               int(row["total_params_sheet"]))
        assert (exact.active, exact.total) == (int(row["active_params_exact"]),
                                               int(row["total_params_exact"]))
        iters = train_iters(float(row["flops"]), arch, 1024, "flame", "6n", "ceil")
        assert iters == int(row["train_iters"])


def test_embedding_split_and_tied_embeddings():
    arch = arch_of(grid_rows()[0])
    counts = param_counts(arch, "exact")
    assert counts.embedding == 2 * 50304 * 256
    tied = param_counts(MoEArch(**{**arch.to_dict(), "tie_embeddings": True}), "exact")
    assert counts.total - tied.total == 50304 * 256
    assert tied.active_non_embedding == counts.active_non_embedding


def test_flops_formulas():
    arch = arch_of(grid_rows()[0])
    n = param_counts(arch, "flame").active
    assert flops_per_token(arch, "flame", "6n") == 6 * n
    assert attention_flops_per_token(arch) == 12 * 6 * 256 * 2048
    assert flops_per_token(arch, "flame", "6n_attn") == 6 * n + 12 * 6 * 256 * 2048
    expected = math.ceil(1e18 / (6 * n * 1024 * 2048))
    assert expected == train_iters(1e18, arch, 1024, "flame", "6n", "ceil")


def test_unknown_convention_and_formula_are_config_errors():
    arch = arch_of(grid_rows()[0])
    with pytest.raises(ConfigError, match="accounting"):
        param_counts(arch, "chinchilla")
    with pytest.raises(ConfigError, match="flops_formula"):
        flops_per_token(arch, "flame", "2n")

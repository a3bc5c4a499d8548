"""`flame compare A B`: known compute multipliers (constant, and changing with C) are covered
by their per-budget intervals at the nominal rate; bad input is one line and exit 2, with
nothing written.

The comparison is checked on the Approach 3 laws of synthetic studies, then the whole path:
`flame fit` (without figures: drawing is most of a small fit's time) then `flame compare`, for
a known multiplier and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.compare.multiplier import Study, check_pair, compare, multipliers, study_of
from analysis.design.synthetic import Law, isoflop_sweep
from analysis.settings import FitSettings
from jobs.cli import main
from sweep.errors import ConfigError

BUDGETS = np.array([1e18, 3e18, 1e19, 3e19, 1e20])
MULTIPLIER = 2.0
# Epoch AI's replication of Chinchilla's law (Besiroglu et al. 2024), the example.
EPOCH = Law(E=1.82, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)


def _fit(tmp: Path, name: str, points: pd.DataFrame) -> Path:
    """A real `flame fit` (no bootstrap: compare draws its own resamples)."""
    csv = tmp / f"{name}.csv"
    points.to_csv(csv, index=False)
    assert main(["fit", f"results={csv}", f"sweep_dir={tmp / name}", "fit.bootstrap=0",
                 "fit.target_budgets=[1e20]", "fit.figures=false"]) == 0
    return tmp / name


def _slower(law: Law, budgets: np.ndarray, multiplier: float, seed: int) -> pd.DataFrame:
    """A study that needs ``multiplier`` x the compute for the same loss: L_B(N, D) =
    L(N, D / m), so B's optimum at C is the law's optimum at C / m."""
    points = isoflop_sweep(law, budgets / multiplier, seed=seed)
    return points.assign(budget=points["budget"] * multiplier,
                         tokens=points["tokens"] * multiplier)


def _half_compute(law: Law, m: float) -> Law:
    """L_B(N, D) = L(N/sqrt(m), D/sqrt(m)): B needs m x A's compute at every budget."""
    return Law(E=law.E, A=law.A * m ** (law.alpha / 2), B=law.B * m ** (law.beta / 2),
               alpha=law.alpha, beta=law.beta)


def _study(name: str, points: pd.DataFrame, bootstrap: int = 200, seed: int = 0) -> Study:
    return study_of(Path(name), points, FitSettings(bootstrap=bootstrap, seed=seed), name)


def test_known_multiplier_is_recovered_from_the_fits():
    a = _study("moe", isoflop_sweep(Law(), BUDGETS, seed=0))
    b = _study("dense", _slower(Law(), BUDGETS, MULTIPLIER, seed=1))
    result = compare(a, b)
    lo, hi = result["multiplier_ci"]
    assert lo <= MULTIPLIER <= hi and hi / lo < 1.3
    assert result["multiplier"] == pytest.approx(MULTIPLIER, rel=0.1)
    # Compared with itself, a study's multiplier is 1 and its frontiers coincide.
    same = compare(a, a)
    assert same["multiplier"] == pytest.approx(1.0)
    assert same["crossover"]["budget"] is None


# Pairs per case: 10 x 5 budgets = 50 intervals; each misses with probability 0.05 when
# calibrated, so >= 43 (85%) cover with probability 0.99 (binomial), and a budget's 10 fall
# under 7 with probability 0.001. Measured at 100 pairs: benchmarks/bench_fit_coverage.py
# --compare (docs/benchmarks.md).
PAIRS = 10


@pytest.mark.parametrize("case", ["constant", "changing with C"])
def test_per_budget_intervals_cover_the_true_multiplier(case):
    # The pair: Epoch's law, 5 budgets 1e18-1e20, 7 sizes +-0.6 decades, 0.5% noise;
    # B at half A's effective compute (truth 2 everywhere), or B with a smaller parameter
    # exponent and term (truth 1.92 at 1e18 rising to 2.26 at 1e20).
    law_b = _half_compute(EPOCH, MULTIPLIER) if case == "constant" else \
        Law(E=1.82, A=482.01 * 0.8, B=2085.43, alpha=0.33, beta=0.36)
    truth = multipliers(EPOCH.theta[None], law_b.theta[None], BUDGETS)[0]
    if case == "constant":
        assert truth == pytest.approx(np.full(5, MULTIPLIER))
    else:
        assert truth[-1] / truth[0] > 1.15
    covered = np.zeros(BUDGETS.size, int)
    for pair in range(PAIRS):
        sweep = dict(per_budget=7, span_decades=0.6, noise=0.005)
        a = _study("a", isoflop_sweep(EPOCH, BUDGETS, seed=2 * pair, **sweep), 100, pair)
        b = _study("b", isoflop_sweep(law_b, BUDGETS, seed=2 * pair + 1, **sweep), 100, pair)
        rows = compare(a, b)["budgets"]
        lo, hi = (np.array([r[k] for r in rows]) for k in ("multiplier_lo", "multiplier_hi"))
        covered += (lo <= truth) & (truth <= hi)
    assert covered.sum() >= 0.85 * PAIRS * BUDGETS.size, covered
    assert covered.min() >= 0.75 * PAIRS, covered


def test_bad_pairs_are_named():
    a = _study("moe", isoflop_sweep(Law(), BUDGETS, seed=0), 0)
    for b, message in ((_study("x", isoflop_sweep(Law(), BUDGETS * 2, seed=2), 0),
                        "budgets differ"),
                       (_study("y", isoflop_sweep(Law(E=4.5), BUDGETS, seed=3), 0),
                        "no overlap in loss")):
        with pytest.raises(ConfigError, match=message):
            check_pair(a, b)


def test_unfitted_study_is_one_line(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not fitted" in err and "flame fit" in err
    assert not (tmp_path / "a" / "compare").exists()


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("compare")
    a = _fit(tmp, "moe", isoflop_sweep(Law(), BUDGETS, seed=0))
    b = _fit(tmp, "dense", _slower(Law(), BUDGETS, MULTIPLIER, seed=1))
    return a, b


def test_known_multiplier_is_recovered_within_its_interval(pair, capsys):
    a, b = pair
    assert main(["compare", str(a), str(b), "--bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    assert "Compute multiplier of A" in printed
    out = a / "compare" / "dense"
    for name in ("compare.json", "compare.csv", "compare.png", "compare.svg"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "compare.json").read_text())
    lo, hi = result["multiplier_ci"]
    assert lo <= MULTIPLIER <= hi
    assert result["multiplier"] == pytest.approx(MULTIPLIER, rel=0.1)
    assert hi / lo < 1.3  # an interval, not "anything goes"
    table = pd.read_csv(out / "compare.csv")
    assert list(table["budget"]) == list(BUDGETS)
    # A's loss at the largest budget is below anything B measured: flagged, not averaged.
    assert table["extrapolated"].iloc[-1]
    # Same law, shifted compute: the frontiers are near-parallel and do not cross in range.
    assert not result["crossover"]["within_fitted"]


def test_bad_input_is_one_line_and_writes_nothing(pair, tmp_path, capsys):
    a, _ = pair
    unfitted = tmp_path / "unfitted"
    unfitted.mkdir()
    other = _fit(tmp_path, "other_budgets", isoflop_sweep(Law(), BUDGETS * 2, seed=2))
    worse = _fit(tmp_path, "worse", isoflop_sweep(Law(E=4.5), BUDGETS, seed=3))
    cases = [(unfitted, "not fitted"), (other, "budgets differ"), (worse, "no overlap in loss")]
    for b, message in cases:
        assert main(["compare", str(a), str(b)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not (a / "compare" / b.name).exists()

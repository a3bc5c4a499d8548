"""`flame compare A B`: a known compute multiplier is recovered within its interval; bad
input is one line and exit 2, with nothing written.

The comparison is checked on Approach 2 fits of synthetic studies, then the whole path:
`flame fit` (without figures: drawing is most of a small fit's time) then `flame compare`, for
a known multiplier and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.compare.multiplier import Study, check_pair, compare
from analysis.design.synthetic import Law, isoflop_sweep
from analysis.fit.isoflop import fit_isoflop
from analysis.settings import FitSettings
from jobs.cli import main
from sweep.errors import ConfigError

BUDGETS = np.array([1e18, 3e18, 1e19, 3e19, 1e20])
MULTIPLIER = 2.0


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


def _study(name: str, points: pd.DataFrame, bootstrap: int = 200) -> Study:
    settings = FitSettings(bootstrap=bootstrap)
    return Study(Path(name), settings, fit_isoflop(points.assign(used=True), settings))


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

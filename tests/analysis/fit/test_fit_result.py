"""fit.json as a typed, versioned record: read and written in one place, older files read,
newer refused with the file named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.fit.result import FIT_VERSION, FitResult, read_fit, write_fit
from jobs.cli import main
from sweep.errors import ConfigError

SHIPPED = Path(__file__).parents[3] / "analysis" / "data" / "flame_moe_prior" / "fit.json"


def test_a_written_fit_reads_back_to_the_same_bytes(tmp_path, flame48):
    csv = tmp_path / "flame48.csv"
    flame48[["budget", "n", "loss"]].to_csv(csv, index=False)
    out = tmp_path / "out"
    assert main(["fit", "experiment=flame_sweep", f"results={csv}", f"sweep_dir={out}",
                 "fit.bootstrap=50", "fit.figures=false"]) == 0
    text = (out / "fit.json").read_text()
    assert next(iter(json.loads(text))) == "version"  # first key, then the keys as ever
    fit = read_fit(out)
    assert fit.version == FIT_VERSION and fit.input.kind == "csv"
    assert fit.approach3.fitted and fit.law().a == pytest.approx(fit.approach3.a)
    write_fit(tmp_path, fit)
    assert (tmp_path / "fit.json").read_text() == text


def test_a_file_from_before_the_version_key_reads():
    fit = read_fit(SHIPPED)  # written before fit.json had a version (and branches, estimator)
    assert fit.version == 0 and fit.approach3.n_points == 48
    assert fit.approach2.estimator == "parabola" and fit.branches == {}
    assert fit.fit_settings().n_column == fit.settings["n_column"]


def test_a_version_1_file_reads_without_variance_components(tmp_path):
    data = {**json.loads(SHIPPED.read_text()), "version": 1}
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(data))
    fit = read_fit(path)
    assert fit.version == 1 and fit.variance_components is None
    assert FIT_VERSION == 2 and "variance_components" in fit.to_json()


def test_a_newer_or_broken_file_is_one_clear_error(tmp_path):
    data = json.loads(SHIPPED.read_text())
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**data, "version": FIT_VERSION + 1}))
    with pytest.raises(ConfigError, match=f"{newer}: fit.json version {FIT_VERSION + 1}"):
        read_fit(newer)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not a readable fit.json"):
        read_fit(broken)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"approach3": {}}))
    with pytest.raises(ConfigError, match="not a fit.json"):
        read_fit(partial)
    with pytest.raises(ConfigError, match="does not exist"):
        read_fit(tmp_path / "none")


def test_a_fit_without_approach3_keeps_its_shorter_entry():
    a3 = {"E": None, "A": None, "B": None, "alpha": None, "beta": None, "a": None, "b": None,
          "objective": None, "n_points": 0, "ci": {}, "se": {}, "reason": "2 budgets"}
    data = json.loads(SHIPPED.read_text()) | {"approach3": a3}
    fit = FitResult.from_json(data)
    assert not fit.approach3.fitted and fit.law() is None
    assert fit.to_json()["approach3"] == a3

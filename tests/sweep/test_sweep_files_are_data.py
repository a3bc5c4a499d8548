"""A sweep's files are data: an OmegaConf interpolation written into a config.yaml or a
launch's cluster.yaml (a sweep someone sent) stays the text it is through every reader, the
typed config and the report, and no resolver ever runs on it (``${oc.env:...}`` would put the
reader's environment into report.html)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conf.study import load_study
from jobs.sweepdir import CLUSTER_YAML, data_config, jobs_dir, recorded_cluster
from sweep.config import read_config
from sweep.schema import literal
from tests.jobs.conftest import flame, make_sweep

SECRET = "${oc.env:FLAME_TEST_SECRET}"
PROBE = "${flame_test_probe:}"


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A resolver that records each call, and a secret in the environment."""
    calls: list[str] = []
    OmegaConf.register_new_resolver("flame_test_probe", lambda: calls.append("x") or "BAD")
    monkeypatch.setenv("FLAME_TEST_SECRET", "hunter2")
    yield calls
    OmegaConf.clear_resolver("flame_test_probe")


def poisoned_sweep(sweep: Path) -> None:
    """A planned sweep whose config.yaml and cluster.yaml carry interpolations in strings."""
    make_sweep(sweep, "cluster=local")
    data = yaml.safe_load((sweep / "config.yaml").read_text())
    data["experiment_name"] = f"study {SECRET} {PROBE}"
    data["cluster"]["name"] = f"local{PROBE}"
    (sweep / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    jobs_dir(sweep).mkdir(parents=True, exist_ok=True)
    (jobs_dir(sweep) / CLUSTER_YAML).write_text(yaml.safe_dump(data["cluster"]))


def test_readers_keep_the_text(tmp_path: Path, probe: list[str]) -> None:
    sweep = tmp_path / "s"
    poisoned_sweep(sweep)
    assert read_config(sweep)["experiment_name"] == f"study {SECRET} {PROBE}"
    study = load_study(sweep)  # typed through OmegaConf: still the text
    assert study.root.experiment_name == f"study {SECRET} {PROBE}"
    assert study.cluster.name == f"local{PROBE}"
    cluster = OmegaConf.to_container(recorded_cluster(sweep), resolve=True)
    assert cluster["name"] == f"local{PROBE}"
    made = data_config(load_study(sweep).to_yaml())  # a config made from it (flame release)
    assert OmegaConf.to_container(made, resolve=True)["experiment_name"] == \
        f"study {SECRET} {PROBE}"
    assert probe == []


def test_report_shows_the_literal(tmp_path: Path, probe: list[str]) -> None:
    sweep = tmp_path / "s"
    poisoned_sweep(sweep)
    flame("report", f"sweep_dir={sweep}")
    html = (sweep / "report.html").read_text()
    assert "hunter2" not in html and SECRET in html
    assert probe == []


@pytest.mark.parametrize("text", ["${a}", "a\\${b}", "\\\\${c} ${d}", "${x.${y}}", "no \\ dollar"])
def test_literal_round_trips(text: str) -> None:
    node = OmegaConf.create({"k": literal(text), "l": [literal(text)]})
    assert OmegaConf.to_container(node, resolve=True) == {"k": text, "l": [text]}

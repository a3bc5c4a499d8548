"""The sweep directory's config.yaml and plan from sweep alone: config.yaml read as a plain
mapping (format checked, not typed), planning from typed parts, the re-plan guard on records."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from conf.study import StudyConfig, load_sweep_config, study_config
from jobs.cli import compose
from sweep.commands import guard_replan, plan
from sweep.config import CONFIG_FORMAT, plan_study, planner_settings, read_config, read_plan
from sweep.errors import ConfigError
from sweep.io import run_dir
from sweep.records import RUNNING, RunRecord, write_record

DEMO = Path(__file__).parent / "data" / "demo_run_ids.txt"


def test_read_config_is_the_plain_file_with_its_format_checked(tmp_path: Path) -> None:
    assert read_config(tmp_path) is None
    plan(study_config(compose([f"sweep_dir={tmp_path}", "trainer=simulated"])))
    raw = read_config(tmp_path)
    assert isinstance(raw, dict) and raw["format_version"] == CONFIG_FORMAT
    assert raw == load_sweep_config(tmp_path)  # the current format needs no upgrade
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(dict(raw, format_version=99)))
    with pytest.raises(ConfigError, match="format_version=99 was written by a newer flame"):
        read_config(tmp_path)
    (tmp_path / "config.yaml").write_text("[a, list]\n")
    with pytest.raises(ConfigError, match="not a config mapping"):
        read_config(tmp_path)


def test_planning_takes_any_object_with_the_typed_parts() -> None:
    """sweep never names StudyConfig: the plan of a duck-typed config is the pinned demo."""
    study = study_config(compose(["sweep_dir=unused", "experiment=demo_grid"]))
    parts = argparse.Namespace(**{f.name: getattr(study, f.name)
                                  for f in dataclasses.fields(StudyConfig)})
    the_plan, settings = plan_study(parts)
    assert [r.run_id for r in the_plan.runs] == DEMO.read_text().split()
    mapping = yaml.safe_load(study.to_yaml())  # config.yaml's mapping gives the same settings
    assert planner_settings(mapping) == settings == planner_settings(study)


def test_plan_refuses_an_untyped_config(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="typed config"):
        plan(compose([f"sweep_dir={tmp_path}"]))


def test_branches_are_checked_where_the_config_is_typed() -> None:
    with pytest.raises(ConfigError, match="min_lr=.* is not below training.lr"):
        compose(["sweep_dir=unused", "experiment=demo_branches", "training.min_lr=${training.lr}"])


def test_replan_guard_reads_run_records(tmp_path: Path) -> None:
    plan(study_config(compose([f"sweep_dir={tmp_path}", "trainer=simulated"])))
    ids = {row.run_id for row in read_plan(tmp_path)}
    dropped = sorted(ids)[0]
    run_dir(tmp_path, dropped).mkdir(parents=True)
    write_record(tmp_path, RunRecord(run_id=dropped, state=RUNNING))
    with pytest.raises(ConfigError, match="pass --replan"):
        guard_replan(tmp_path, ids, ids - {dropped}, replan=False)
    with pytest.raises(ConfigError, match=f"still queued or running \\(e.g. {dropped}\\)"):
        guard_replan(tmp_path, ids, ids - {dropped}, replan=True)
    guard_replan(tmp_path, ids, ids, replan=False)  # the same plan: nothing to guard

"""The typed config schema: one source of defaults, unknown keys refused at compose time,
run_ids that hash exactly the result fields (and survive upgrades), a versioned config.yaml."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from analysis.fit import select
from conf.schema import CONFIG_FORMAT, GROUPS, RootConfig
from conf.study import StudyConfig, hash_context, load_sweep_config, plan_from_cfg, write_plan
from jobs.cli import compose
from sweep.errors import ConfigError
from sweep.family import build_family
from sweep.planner import PlannerConfig, plan
from sweep.schema import operational, result
from tests.jobs.conftest import flame as run_cli
from trainers.settings import TRAINER_CONFIGS, EmbeddedConfig

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
DATA = Path(__file__).parent / "data"


def flame(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """The CLI in this process (``tests.jobs.conftest.flame``), its exit code not checked."""
    return run_cli(*argv, check=False, cwd=cwd)


@pytest.mark.parametrize("override", ["cluster.bogus=1", "trainer.bogus=1", "fit.bogus=1",
                                      "family.bogus=1", "+cluster.bogus=1", "+trainer.bogus=1",
                                      "planner.bogus=1", "training.bogus=1"])
def test_unknown_keys_exit_2_naming_the_key(override: str, tmp_path: Path) -> None:
    out = flame("plan", f"sweep_dir={tmp_path / 's'}", override)
    key = override.lstrip("+").split("=")[0]
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert f"'{key}'" in lines[0] and "unknown config key" in lines[0]
    assert not (tmp_path / "s").exists()


def test_bad_types_name_the_key(tmp_path: Path) -> None:
    for override, key in (("budgets.flops=abc", "budgets.flops"),
                          ("planner.min_iters=many", "planner.min_iters"),
                          ("cluster.parallelism=two", "cluster.parallelism"),
                          ("budgets.flops=1e11", "budgets.flops")):
        out = flame("plan", f"sweep_dir={tmp_path / 's'}", override)
        assert out.returncode == 2 and key in out.stderr and "Traceback" not in out.stderr, \
            (override, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1


def _file_values(path: Path) -> dict:
    """What a config file sets (OmegaConf's YAML reading: 3.0e10 is a number), unresolved."""
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    data.pop("defaults", None)
    return data


def _schema_values(cls: type, *files: Path) -> dict:
    """``cls``'s defaults with ``files`` merged on top, as plain data (MISSING as '???')."""
    merged = OmegaConf.merge(OmegaConf.structured(cls), *(_file_values(f) for f in files))
    return OmegaConf.to_container(merged, resolve=False)


def _choices(path: Path) -> dict[str, str]:
    """The group options a file's defaults list picks (``override /family: demo``)."""
    out = {}
    for entry in OmegaConf.to_container(OmegaConf.load(path)).get("defaults", []):
        if isinstance(entry, dict):
            out.update({k.removeprefix("override ").lstrip("/"): v for k, v in entry.items()})
    return out


def _schema_of(group: str, option: str) -> type | None:
    return TRAINER_CONFIGS.get(option) if group == "trainer" else GROUPS.get(group)


def _experiment_baseline(path: Path) -> dict:
    """What the config holds without this experiment: the schemas' defaults and the group
    files it picks (conf/config.yaml's, unless it overrides them)."""
    choices = _choices(CONF / "config.yaml") | _choices(path)
    base = _schema_values(RootConfig)
    for group in (*GROUPS, "trainer"):
        option = choices[group]
        base[group] = _schema_values(_schema_of(group, option), CONF / group / f"{option}.yaml")
    return base


def _written_twice(values: dict, baseline: dict, where: str) -> list[str]:
    """Keys of ``values``, at any depth, set to the value they already have in ``baseline``."""
    out = []
    for key, value in values.items():
        if not isinstance(baseline, dict) or key not in baseline:
            continue
        if isinstance(value, dict) and isinstance(baseline[key], dict):
            out += _written_twice(value, baseline[key], f"{where}{key}.")
        elif value == baseline[key]:
            out.append(f"{where}{key}={value!r}")
    return out


def _layout_baseline(path: Path) -> dict:
    """The trainer section a trainer_layout file (<experiment>_<trainer>.yaml) lands on."""
    experiment, trainer = path.stem.rsplit("_", 1)
    exp_path = CONF / "experiment" / f"{experiment}.yaml"
    base = _schema_values(TRAINER_CONFIGS[trainer], CONF / "trainer" / f"{trainer}.yaml")
    return OmegaConf.to_container(OmegaConf.merge(
        base, _file_values(exp_path).get("trainer") or {}), resolve=False)


def written_twice() -> list[str]:
    """Every value a config file sets to what it would be without that file."""
    clashes = []
    for path in sorted(CONF.glob("*/*.yaml")):
        group, where = path.parent.name, f"{path.relative_to(REPO)}: "
        if group == "experiment":
            clashes += _written_twice(_file_values(path), _experiment_baseline(path), where)
        elif group == "trainer_layout":
            clashes += _written_twice(_file_values(path), _layout_baseline(path), where)
        elif _schema_of(group, path.stem) is not None:
            clashes += _written_twice(_file_values(path),
                                      _schema_values(_schema_of(group, path.stem)), where)
    return clashes


def test_the_check_for_defaults_written_twice_sees_nested_keys() -> None:
    base = {"a": 1, "law": {"E": 1.69, "A": 406.4}, "members": None}
    assert _written_twice({"a": 2, "law": {"E": 1.69, "A": 1.0}, "members": [{"a": 1}]},
                          base, "f: ") == ["f: law.E=1.69"]


def test_no_default_is_written_in_both_python_and_yaml() -> None:
    """A YAML file sets a key, at any depth, only to a value other than the one it would have
    without that file (its schema's default, or for an experiment the group files it picks)."""
    assert not written_twice(), written_twice()


def test_every_schema_field_has_a_docstring() -> None:
    from sweep.schema import field_docs

    for cls in [*GROUPS.values(), *TRAINER_CONFIGS.values(), PlannerConfig]:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in field_docs(cls)]
        assert not missing, (cls.__name__, missing)


def test_help_prints_field_docs() -> None:
    out = flame("plan", "--help")
    assert out.returncode == 0
    assert re.search(r"global_batch_size +=  *16 +Sequences per iteration\.", out.stdout)
    assert "signal_delay_s" not in out.stdout or "USR2" in out.stdout


def test_demo_run_ids_are_those_of_earlier_flame() -> None:
    """The ids pinned here were planned by flame before the typed schema existed: an upgrade
    that changes them would retrain every sweep."""
    the_plan, _ = plan_from_cfg(compose(["sweep_dir=unused", "experiment=demo_grid"]))
    assert [r.run_id for r in the_plan.runs] == (DATA / "demo_run_ids.txt").read_text().split()


def _ids(study: StudyConfig) -> list[str]:
    settings_plan, settings = plan_from_cfg(study)
    return [r.run_id for r in settings_plan.runs]


def test_operational_fields_never_change_run_ids() -> None:
    study = StudyConfig.from_cfg(compose(["sweep_dir=unused"]))
    before = _ids(study)

    @dataclasses.dataclass
    class Upgraded(EmbeddedConfig):
        """EmbeddedConfig as a later flame might have it: two new operational fields."""

        profile_dir: str | None = operational("/tmp/profiles")
        """A new path."""
        log_memory: bool = operational(True)
        """A new logging switch."""

    study.trainer = Upgraded(**vars(study.trainer))
    assert _ids(study) == before
    study.trainer.echo, study.trainer.eval_interval = True, 7  # existing operational fields
    assert _ids(study) == before


def test_result_fields_change_run_ids() -> None:
    base = _ids(StudyConfig.from_cfg(compose(["sweep_dir=unused"])))
    for override in ("training.lr=1e-3", "trainer.data.seed=7", "trainer.eval_iters=8",
                     "training.norm_epsilon=1e-6"):
        changed = _ids(StudyConfig.from_cfg(compose(["sweep_dir=unused", override])))
        assert not set(changed) & set(base), override


def test_a_result_field_added_later_keeps_ids_at_its_default() -> None:
    study = StudyConfig.from_cfg(compose(["sweep_dir=unused"]))

    @dataclasses.dataclass
    class Upgraded(EmbeddedConfig):
        """EmbeddedConfig with a result field added in a later format."""

        label_smoothing: float = result(0.0, since=3)
        """A new result field."""

    before = _ids(study)
    study.trainer = Upgraded(**vars(study.trainer))
    assert _ids(study) == before
    study.trainer.label_smoothing = 0.1
    assert not set(_ids(study)) & set(before)
    assert "label_smoothing" in hash_context(study)["trainer"]


def test_config_yaml_is_versioned_and_older_formats_are_read(tmp_path: Path) -> None:
    cfg = compose([f"sweep_dir={tmp_path}", "trainer=simulated"])
    the_plan, settings = plan_from_cfg(cfg)
    write_plan(tmp_path, the_plan, settings, cfg)
    stored = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert stored["format_version"] == CONFIG_FORMAT
    assert StudyConfig.from_cfg(load_sweep_config(tmp_path)).trainer.noise == 0.005
    # format 1 (flame before the schema): no version, trainer.operational_keys
    old = dict(stored, trainer={**stored["trainer"], "operational_keys": ["seconds_per_run"]})
    old.pop("format_version")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert _ids(StudyConfig.from_cfg(load_sweep_config(tmp_path))) == \
        [r.run_id for r in the_plan.runs]
    # a newer flame's format is refused, saying so, before anything is submitted
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(dict(stored, format_version=99)))
    with pytest.raises(ConfigError, match="newer flame"):
        load_sweep_config(tmp_path)
    out = flame("launch", f"sweep_dir={tmp_path}", "trainer=simulated")
    assert out.returncode == 2 and "format_version=99" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_selection_and_plan_agree_on_iterations_for_the_release_models() -> None:
    """One iterations function: the released models use round-to-nearest (5473.16 -> 5473)."""
    cfg = compose(["sweep_dir=unused", "experiment=flame_release",
                   "trainer.data_path=/data/x"])
    the_plan, settings = plan_from_cfg(cfg)
    members = build_family(StudyConfig.from_cfg(cfg).family)
    config = cfg  # selection reads the groups it needs from the config mapping
    assert [r.train_iters for r in the_plan.runs] == [2121, 2424, 4165, 5473, 5685, 8815, 11029]
    for run in the_plan.runs:
        n = run.n_active

        def predict(budgets, n=n):  # an optimum exactly at this member
            return [n] * len(budgets), [0.0] * len(budgets), [2.0] * len(budgets)

        table = select((run.budget,), predict, "test", members, config, "n_active_flame")
        assert table.loc[0, "member"] == run.member.name
        assert table.loc[0, "member_iterations"] == run.train_iters
        assert table.loc[0, "member_tokens"] == run.tokens


def test_plan_is_the_same_for_a_stored_config(tmp_path: Path) -> None:
    """config.yaml is a complete snapshot: re-planning from it gives the same plan."""
    cfg = compose([f"sweep_dir={tmp_path}", "experiment=flame_sweep", "trainer=simulated"])
    the_plan, settings = plan_from_cfg(cfg)
    write_plan(tmp_path, the_plan, settings, cfg)
    again, _ = plan_from_cfg(load_sweep_config(tmp_path))
    assert [r.run_id for r in again.runs] == [r.run_id for r in the_plan.runs]
    assert len(the_plan.runs) == 80 and plan  # FLAME's sweep

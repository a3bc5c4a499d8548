"""``sweep.schema_direct`` builds the same typed config OmegaConf builds, wherever it builds
one, and leaves to OmegaConf every value that needs a conversion or an error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import sweep.schema as schema
from conf.schema import GROUPS, TRAINER_CONFIGS
from conf.study import StudyConfig
from jobs.cli import compose
from sweep.errors import ConfigError
from sweep.family import FamilyConfig
from sweep.schema_direct import direct

CONF = Path(__file__).resolve().parents[2] / "conf"
CASES = [f"experiment={p.stem}" for p in sorted((CONF / "experiment").glob("*.yaml"))] + \
    [f"trainer={p.stem}" for p in sorted((CONF / "trainer").glob("*.yaml"))] + \
    [f"cluster={p.stem}" for p in sorted((CONF / "cluster").glob("*.yaml"))]


def through_omegaconf(monkeypatch: pytest.MonkeyPatch, cfg) -> StudyConfig:
    with monkeypatch.context() as patch:
        patch.setattr(schema, "direct", lambda cls, values: None)
        return StudyConfig.from_cfg(cfg)


@pytest.mark.parametrize("override", CASES)
def test_every_shipped_config_is_built_alike(override: str, monkeypatch) -> None:
    cfg = compose([override])
    direct_built = StudyConfig.from_cfg(cfg)
    assert direct_built == through_omegaconf(monkeypatch, cfg)
    # the whole config went the direct road: every group and the trainer
    data = schema.plain(cfg)
    for name, kind in GROUPS.items():
        assert direct(kind, data.get(name)) is not None, name
    trainer = data["trainer"]
    assert direct(TRAINER_CONFIGS[trainer["name"]], trainer) is not None


def test_an_int_for_a_float_becomes_that_float_as_omegaconf_makes_it() -> None:
    training = schema.plain(compose([]))["training"]
    floats = [f.name for f in dataclasses.fields(GROUPS["training"]) if f.type == "float"]
    assert floats
    values = {**training, floats[0]: 1}
    via = schema.to_typed(GROUPS["training"], values, "training")
    assert via == schema.omegaconf_typed(GROUPS["training"], values, "training")
    assert getattr(via, floats[0]) == 1.0 and type(getattr(via, floats[0])) is float


@pytest.mark.parametrize("values", [
    {"bogus": 1},                              # unknown key: OmegaConf's error
    {"base": {"hidden_size": "64"}},           # a string where an int is declared: converted
    {"base": {"hidden_size": "${x}"}},         # an interpolation: OmegaConf's rule
    {"base": {"hidden_size": True}},           # a bool where an int is declared
])
def test_values_that_need_omegaconf_go_to_omegaconf(values) -> None:
    assert direct(FamilyConfig, values) is None
    try:
        expected = schema.omegaconf_typed(FamilyConfig, values, "family")
    except ConfigError as err:
        with pytest.raises(ConfigError) as again:
            schema.to_typed(FamilyConfig, values, "family")
        assert str(again.value) == str(err)
    else:
        assert schema.to_typed(FamilyConfig, values, "family") == expected

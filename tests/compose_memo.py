"""Hydra's composition once per suite for each choice of config groups the suite makes.

The suite's in-process ``flame`` calls compose conf/ ~550 times at ~0.3 s of CPU each (Hydra's
defaults tree and OmegaConf's merges, not flame's code), but with about 40 different choices
of config groups (``experiment=``, ``trainer=``, ``cluster=``...): the rest of the overrides
set values (``sweep_dir=...``, ``planner.seeds=2``). Hydra composes in two phases
(``ConfigLoaderImpl._load_configuration_impl``, hydra-core 1.3): the defaults list and its
merges, which only the group overrides decide, then the value overrides applied in order to
the result by ``ConfigLoaderImpl._apply_overrides_to_config``. So a composition here is the
first one made for its group overrides (by any worker of this run: pickled into a folder they
share), copied, with Hydra's own second phase applied to the copy: what Hydra would have given
(``FLAME_TEST_CHECK_COMPOSE=1`` composes both and fails on any difference, in the config or
in the error). An error of that second phase is raised as Hydra's ``load_configuration`` and
then ``compose_hydra`` raise it (a ConfigError naming the key); any other error (OmegaConf's
on a null node, which ``compose_hydra`` handles), or a first phase that raised, falls back to
the real composition. The missing-value check and the typed config (``study_config``) run on
every call. Overrides of ``hydra.*``, sweeps, and a group given a dict value (Hydra applies that in
the second phase, in order) are never remembered.
"""

from __future__ import annotations

import difflib
import fcntl
import hashlib
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import conf
from jobs.cli import composition_error
from sweep.errors import ConfigError


def memoised(compose_hydra: Callable[[Sequence[str]], DictConfig],
             trainers: Callable[[], tuple[str, ...]], shared: Path
             ) -> Callable[[Sequence[str]], DictConfig]:
    """``compose_hydra`` remembering the composition of each set of group overrides, per the
    trainers registered then (``trainers()``: a plugin's trainer changes the schema), in this
    process and in ``shared`` (a folder this run's workers share)."""
    parser = OverridesParser.create()
    groups = {p.name for p in Path(conf.__path__[0]).iterdir() if p.is_dir()} | {"schema"}
    seen: dict[tuple, bytes] = {}
    check = os.environ.get("FLAME_TEST_CHECK_COMPOSE") == "1"

    def compose(overrides: Sequence[str]) -> DictConfig:
        split = _split(overrides, parser, groups)
        if split is None:
            return compose_hydra(overrides)
        chosen, values = split
        key = (chosen, trainers())
        if key not in seen:
            try:
                seen[key] = _shared(shared, key, lambda: compose_hydra(list(chosen)))
            except Exception:  # noqa: BLE001 (the real composition raises its own error)
                return compose_hydra(overrides)
        cfg = pickle.loads(seen[key])  # a deep copy (4 ms against deepcopy's 16)
        try:
            _second_phase(values, cfg)
        except ConfigError as err:
            if check:
                _check_same_error(compose_hydra, overrides, str(err))
            raise
        except Exception:  # noqa: BLE001 (null nodes: compose_hydra's own path)
            return compose_hydra(overrides)
        if check:
            real, made = OmegaConf.to_yaml(compose_hydra(overrides)), OmegaConf.to_yaml(cfg)
            assert real == made, "\n".join(difflib.unified_diff(
                real.splitlines(), made.splitlines(), "composed", "remembered", lineterm=""))
        return cfg

    return compose


def _second_phase(values: list, cfg: DictConfig) -> None:
    """Hydra's value overrides applied to ``cfg``; an error as ``compose_hydra`` raises it:
    ``load_configuration`` (hydra-core 1.3) wraps an OmegaConf error in a
    ConfigCompositionException, and ``compose_hydra`` turns either into a ConfigError."""
    try:
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
    except OmegaConfBaseException as err:
        wrapped = ConfigCompositionException()
        wrapped.__cause__ = err
        raise composition_error(wrapped) from None
    except HydraException as err:
        raise composition_error(err) from None


def _check_same_error(compose_hydra: Callable[[Sequence[str]], DictConfig],
                      overrides: Sequence[str], message: str) -> None:
    try:
        compose_hydra(overrides)
    except ConfigError as real:
        assert str(real) == message, (str(real), message)
    else:
        raise AssertionError(f"the real composition of {list(overrides)} raised nothing; the "
                             f"remembered one: {message}")


def _shared(folder: Path, key: tuple, make: Callable[[], DictConfig]) -> bytes:
    """The pickled composition for ``key``: another worker's, or made here under a lock (the
    others wait for it rather than compose it too)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(repr(key).encode()).hexdigest()[:24]
    path = folder / f"{name}.pickle"
    with open(folder / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return path.read_bytes()
        blob = pickle.dumps(make())
        partial = path.with_suffix(".partial")
        partial.write_bytes(blob)
        partial.replace(path)
        return blob


def _split(overrides: Sequence[str], parser: OverridesParser, groups: set[str]
           ) -> tuple[tuple[str, ...], list] | None:
    """The group overrides (as given) and the parsed value overrides, in order; None when the
    overrides are not remembered."""
    chosen, values = [], []
    for text in overrides:
        try:
            override = parser.parse_override(text)
        except Exception:  # noqa: BLE001 (the real composition names the bad override)
            return None
        if override.is_hydra_override() or override.is_sweep_override():
            return None
        key = override.key_or_group
        if key in groups or "/" in key or override.package is not None:
            if isinstance(override.value(), dict):
                return None
            chosen.append(text)
        else:
            values.append(override)
    return tuple(chosen), values

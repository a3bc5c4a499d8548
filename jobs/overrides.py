"""The one rule for settings at ``flame launch`` (and ``resubmit``): every setting comes from the
sweep's config.yaml, what its runs were planned with, and the cluster from the sweep's last
launch or else its plan. A key the command line names, or one whose value the environment gives
(``MEGATRON_LM``, ``FLAME_DATA_PATH``: read at launch, never frozen at plan time), is compared
with config.yaml's:

- equal: nothing happens;
- a key that decides the runs or their results (``sweep.config.changes_results``; another
  trainer, another experiment): refused, a ConfigError naming the key and the fix (re-plan);
- an operational trainer key: applied, printed, and written to config.yaml by the launch;
- a cluster key, or another cluster: applied (the launch records it under ``jobs/``) and
  printed; the sweep's own cluster named (``cluster=local``) keeps its settings;
- any other key (``fit.*``, ``results``, ...): refused, flame launch does not read it.

Precedence: the command line, then the environment at launch, then config.yaml.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from conf.study import StudyConfig
from jobs.sweepdir import read_config, recorded_cluster
from sweep.config import changed_keys, changes_results, flat, under
from sweep.errors import ConfigError
from sweep.io import CONFIG_YAML
from sweep.schema import plain

IDENTITY_GROUPS = ("trainer", "experiment")
"""Groups a launch may repeat to name the sweep's own choice, never change (the trainer and
experiment decide every run's result)."""
NOT_LAUNCH = ("design",)
"""Groups flame launch never reads (config.yaml does not hold them)."""
DERIVED = {"trainer.data_path": "trainer.data_fingerprint"}
"""A key that brings another: a `flame data` manifest's corpus fingerprint comes with it."""
_ENV = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)")


@dataclasses.dataclass(frozen=True)
class Change:
    """One setting whose launch value differs from the sweep's, applied."""

    key: str
    """The dotted key (``trainer.log_interval``), or ``cluster`` for another cluster."""
    old: Any
    """config.yaml's value (the recorded cluster's, for cluster keys)."""
    new: Any
    """The value applied."""
    source: str = ""
    """The environment variable the value came from ("" for the command line)."""

    def __str__(self) -> str:
        came = f" (from ${self.source})" if self.source else ""
        return f"{self.key}: {self.old!r} -> {self.new!r}{came}"


@dataclasses.dataclass(frozen=True)
class LaunchSettings:
    """What a launch runs with: config.yaml with its applied changes, and the cluster."""

    config: dict[str, Any]
    """config.yaml's config, operational trainer changes applied."""
    cluster: dict[str, Any]
    """The cluster group to launch on (plain data)."""
    changes: tuple[Change, ...] = ()
    """Applied trainer changes (the launch writes them to config.yaml)."""
    cluster_changes: tuple[Change, ...] = ()
    """Applied cluster changes (the launch records the cluster under ``jobs/``)."""
    notes: tuple[str, ...] = ()
    """Lines for the user, e.g. which cluster a launch naming none goes to."""


def named(overrides: Sequence[str]) -> tuple[set[str], dict[str, str]]:
    """The dotted keys a command line sets (``a.b=v``, ``+a.b=v``, ``~a.b``) and the groups it
    selects (``trainer=simulated`` -> {"trainer": "simulated"})."""
    keys, groups = set(), {}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        key = key.split("@")[0]  # `group@package=option`
        if "." in key:
            keys.add(key)
        elif key:
            groups[key] = value
    return keys, groups


def env_keys(cfg: DictConfig) -> dict[str, str]:
    """Keys of the composed config whose value comes from an environment variable that is set
    (``${oc.env:MEGATRON_LM,...}``), with the variable."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    found = {}
    for key, value in flat(raw).items():
        match = _ENV.search(value) if isinstance(value, str) else None
        if match and match.group(1) in os.environ:
            found[key] = match.group(1)
    return found


def launch_settings(sweep_dir: Path, cfg: DictConfig | Mapping[str, Any],
                    overrides: Sequence[str] | None = None) -> LaunchSettings:
    """The settings of a launch of ``sweep_dir`` by the one rule (module doc). ``cfg``: the
    composed config (the CLI composes it with the sweep's trainer, ``with_sweep_trainer``);
    ``overrides``: the command line's, or None when ``cfg`` is the whole config to launch with
    (``flame run`` has just planned it): then its trainer and cluster count as named."""
    stored = read_config(sweep_dir)
    recorded = recorded_cluster(Path(sweep_dir))
    touched, groups, env, base_cluster = named_at_launch(stored, recorded, cfg, overrides)
    check_identity(groups, stored, cfg)
    refuse_not_launch(touched)
    planned, wanted = StudyConfig.from_cfg(stored), StudyConfig.from_cfg(cfg).to_data()
    old = {**planned.to_data(), "cluster": base_cluster}
    changes, cluster_changes = [], []
    config = {**stored, "trainer": dict(stored.get("trainer") or {})}
    holder = {"cluster": dict(base_cluster)}
    before, after = flat(old), flat(wanted)
    for key in changed_keys(old, wanted, tuple(touched)):
        if key in ("sweep_dir", "format_version"):
            continue  # where the sweep is (it names it), and the format: never settings
        source = next((env[k] for k in env if under(key, k)), "")
        if changes_results(planned, key):
            raise ConfigError(result_refusal(key, before.get(key), after.get(key), source))
        change = Change(key, before.get(key), after.get(key), source)
        if under(key, "trainer"):
            _set(config, key, after.get(key))
            changes.append(change)
        elif not under(key, "cluster"):
            raise ConfigError(f"{key}={after.get(key)!r}: not a launch setting (flame launch "
                              f"takes the sweep's {CONFIG_YAML}; the plan has {before.get(key)!r}"
                              "); give it to the command that reads it, or drop it")
        elif "cluster" not in groups:  # a key of the sweep's cluster
            _set(holder, key, after.get(key))
            cluster_changes.append(change)
    cluster = holder["cluster"]
    if "cluster" in groups:  # another cluster: its file, with the keys named
        cluster = wanted["cluster"]
        if cluster.get("name") != base_cluster.get("name"):
            cluster_changes = [Change("cluster", base_cluster.get("name"), cluster.get("name"))]
    notes = cluster_note(overrides, groups, recorded, base_cluster, cfg)
    return LaunchSettings(config, cluster, tuple(changes), tuple(cluster_changes), notes)


def named_at_launch(stored: Mapping[str, Any], recorded: Any, cfg: Any,
                    overrides: Sequence[str] | None
                    ) -> tuple[set[str], dict[str, str], dict[str, str], dict[str, Any]]:
    """What a launch names: the keys to compare (dotted prefixes), the groups it selects, the
    keys the environment gives (with their variable), and the cluster it starts from (the
    recorded one, else config.yaml's; ``cfg``'s when ``overrides`` is None)."""
    if overrides is None:
        return {"trainer", "cluster"}, {"trainer": "", "cluster": ""}, {}, plain(cfg["cluster"])
    keys, groups = named(overrides)
    env = {k: v for k, v in env_keys(cfg).items() if not any(under(k, n) for n in keys)}
    base = plain(recorded) if recorded is not None else dict(stored.get("cluster") or {})
    if groups.get("cluster") == base.get("name"):
        del groups["cluster"]  # the sweep's own cluster: its settings stay, keys apply
    touched = {*keys, *env, *(("trainer" if g == "trainer_layout" else g) for g in groups
                              if g not in IDENTITY_GROUPS)}
    return touched | {DERIVED[k] for k in touched if k in DERIVED}, groups, env, base


def check_identity(groups: dict[str, str], stored: Mapping[str, Any],
                   cfg: DictConfig | Mapping[str, Any]) -> None:
    """A launch may name the sweep's own trainer or experiment (e.g. to find the sweep), never
    another: every run's result depends on it."""
    planned = (stored.get("trainer") or {}).get("name")
    wanted = (cfg.get("trainer") or {}).get("name")
    if "trainer" in groups and wanted != planned:
        raise ConfigError(f"trainer={wanted}: this sweep was planned with trainer={planned} "
                          f"({CONFIG_YAML}), and the trainer decides every run's result; drop "
                          f"trainer= (the sweep's own is used), or plan a new sweep_dir with "
                          f"trainer={wanted}")
    name, theirs = cfg.get("experiment_name"), stored.get("experiment_name")
    if "experiment" in groups and name != theirs:
        raise ConfigError(f"experiment={groups['experiment']}: this sweep was planned as "
                          f"experiment {theirs} ({CONFIG_YAML}), and flame launch takes every "
                          "setting from there; drop experiment= (sweep_dir= names the sweep), "
                          "or plan a new sweep_dir")


def refuse_not_launch(touched: set[str]) -> None:
    """Keys of groups config.yaml does not hold: a launch would drop them without a word."""
    for key in sorted(touched):
        if key.split(".")[0] in NOT_LAUNCH:
            raise ConfigError(f"{key}: not a launch setting (`flame {key.split('.')[0]}` reads "
                              "it); drop it")


def result_refusal(key: str, old: Any, new: Any, source: str) -> str:
    """The one line refusing a launch value that would change the runs' results."""
    came = f" (from ${source})" if source else ""
    fix = f"unset {source}, or re-plan" if source else "re-plan"
    return (f"{key}={new!r}{came} differs from the plan's {old!r} ({CONFIG_YAML}) and would "
            f"change the runs' results; {fix} with `flame plan ... {key}=... --replan` (or a new "
            "sweep_dir), or drop the override")


def cluster_note(overrides: Sequence[str] | None, groups: dict[str, str], recorded: Any,
                 base: Mapping[str, Any], cfg: Any) -> tuple[str, ...]:
    """Which cluster a launch naming none goes to, when it is not the default one (the CLI
    says so itself for a sweep launched before)."""
    if overrides is None or "cluster" in groups or recorded is not None:
        return ()
    default = (cfg.get("cluster") or {}).get("name")
    if base.get("name") == default:
        return ()
    return (f"(using cluster={base.get('name')}, which this sweep was planned with; pass "
            "cluster=... to choose another)",)


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted ``key`` in nested dicts, copying each level (the caller's stay as they were)."""
    head, _, rest = key.partition(".")
    if not rest:
        data[head] = value
        return
    inner = dict(data.get(head) or {})
    _set(inner, rest, value)
    data[head] = inner


def with_sweep_trainer(overrides: Sequence[str], compose: Callable[[Sequence[str]], Any],
                       trainers: Sequence[str]) -> list[str]:
    """The command line with the sweep's own trainer selected when it names none, so that
    ``trainer.*`` keys are read against that trainer's schema (not the default one's) and
    compared with config.yaml's. The sweep is ``sweep_dir=``'s, else the one the other
    overrides compose to; with no readable config.yaml there, or a trainer that is not one of
    ``trainers`` (the group's options), the command line as it is."""
    overrides = list(overrides)
    if "trainer" in named(overrides)[1]:
        return overrides
    given = [o.partition("=")[2] for o in overrides if o.lstrip("+").startswith("sweep_dir=")]
    try:
        if given:
            sweep_dir = given[-1]
        else:
            sweep_dir = compose([o for o in overrides
                                 if not o.lstrip("+~").startswith("trainer.")]).sweep_dir
        if not sweep_dir:
            return overrides
        config = read_config(Path(str(sweep_dir)))
    except ConfigError:  # no sweep or no config.yaml: the command says so itself
        return overrides
    name = (config.get("trainer") or {}).get("name")
    return [f"trainer={name}", *overrides] if name in trainers else overrides


__all__ = ["Change", "LaunchSettings", "named", "env_keys", "launch_settings",
           "named_at_launch", "check_identity", "with_sweep_trainer"]

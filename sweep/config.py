"""The sweep directory's plan.csv and config.yaml (written and read here: the contract's code,
with ``sweep/io.py``), and planning from a typed config's parts.

Nothing here knows the whole config's type (``conf.schema.StudyConfig``, typed by
``conf/study.py``): config.yaml is read as a plain mapping, and the planning functions take any
object with the typed groups as attributes (``root``, ``family``, ``budgets``, ``training``,
``trainer``, ``cluster``), so the bottom layer imports no other flame package.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from omegaconf._utils import get_yaml_loader

from sweep.arch import check_rope
from sweep.errors import ConfigError
from sweep.family import build_family
from sweep.io import CONFIG_YAML, HISTORY_DIR, PLAN_CSV, atomic_write_text
from sweep.planner import Plan, PlannerConfig, PlannerSettings, plan
from sweep.planrow import PlanRow
from sweep.schema import changes_result, result_values, to_typed

# The format of a sweep's config.yaml. 1: flame before the typed schema (no format_version,
# trainer.operational_keys). 2: typed groups, format_version recorded.
CONFIG_FORMAT = 2


def read_config(sweep_dir: Path) -> dict[str, Any] | None:
    """``<sweep>/config.yaml`` as a plain dict in the current format (every layer reads it
    through here); None when there is none, one clear error when it cannot be read or was
    written by a newer flame."""
    path = Path(sweep_dir) / CONFIG_YAML
    if not path.is_file():
        return None
    try:  # OmegaConf's YAML (its number rules) without OmegaConf: a sweep's files are data,
        # and a `${oc.env:...}` in a config.yaml someone sent must stay text, never be resolved
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=get_yaml_loader())
    except Exception as err:  # noqa: BLE001 - any YAML/decoding error: one clear line
        raise ConfigError(f"{path}: not readable YAML ({err}); re-run `flame plan`") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: not a config mapping; re-run `flame plan`")
    if check_format(loaded, str(path)) == 1:  # pre-schema: only the trainer's key list goes
        loaded = dict(loaded, trainer={k: v for k, v in (loaded.get("trainer") or {}).items()
                                       if k != "operational_keys"})
        loaded.pop("format_version", None)
    return loaded


def check_format(data: dict[str, Any], where: str) -> int:
    """The config's ``format_version`` (1 when absent), or a ConfigError if a newer flame
    wrote it."""
    version = data.get("format_version", 1)
    if not isinstance(version, int) or version > CONFIG_FORMAT:
        raise ConfigError(f"{where}: format_version={version!r} was written by a newer flame "
                          f"(this one reads up to {CONFIG_FORMAT}); upgrade flame")
    return version


def planner_settings(study: Any) -> PlannerSettings:
    """The planner's settings from a typed config (``root``'s planner key and conventions,
    ``cluster``'s cost model, ``training``'s warmup), or from a config mapping, e.g. a sweep's
    config.yaml as ``read_config`` gives it (the same keys; only ``planner`` is typed here)."""
    if isinstance(study, Mapping):
        planner = to_typed(PlannerConfig, study.get("planner"), "planner")
        return PlannerSettings(**vars(planner), accounting=study["accounting"],
                               flops_formula=study["flops_formula"],
                               device_peak_flops=study["cluster"]["device_peak_flops"],
                               assumed_mfu=study["cluster"]["assumed_mfu"],
                               warmup_fraction=study["training"]["warmup_fraction"],
                               decay_fraction=study["training"]["decay_fraction"])
    root = study.root
    return PlannerSettings(**vars(root.planner), accounting=root.accounting,
                           flops_formula=root.flops_formula,
                           device_peak_flops=study.cluster.device_peak_flops,
                           assumed_mfu=study.cluster.assumed_mfu,
                           warmup_fraction=study.training.warmup_fraction,
                           decay_fraction=study.training.decay_fraction)


def hash_context(study: Any) -> dict[str, Any]:
    """What besides the architecture and tokens changes a run's result: the typed recipe's and
    trainer's result fields (``sweep.schema.result``)."""
    return {"training": result_values(study.training), "trainer": result_values(study.trainer)}


def plan_study(study: Any) -> tuple[Plan, PlannerSettings]:
    """The plan of a typed, validated config (a ConfigError before anything is written)."""
    settings = planner_settings(study)
    members = build_family(study.family)
    for member in members:  # what every run's trainer would refuse, refused before planning
        check_rope(member.arch, member.name)
    return plan(study.budgets.flops, members, settings, hash_context(study)), settings


def plan_csv_text(the_plan: Plan, settings: PlannerSettings) -> str:
    """plan.csv's text: a header and one row per run."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=PlanRow.columns(), lineterminator="\n")
    writer.writeheader()
    for run in the_plan.runs:
        writer.writerow(run.to_row(settings).to_csv())
    return buf.getvalue()


def read_plan(sweep_dir: Path) -> list[PlanRow]:
    """plan.csv's rows in order, typed, or a ConfigError saying how to make one."""
    path = Path(sweep_dir) / PLAN_CSV
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: run `flame plan sweep_dir={sweep_dir}` first")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "run_id" not in rows[0]:
        raise ConfigError(f"{path} has no run_id column; re-plan with `flame plan`")
    return [PlanRow.from_csv(row) for row in rows]


def write_plan_text(sweep_dir: Path, the_plan: Plan, settings: PlannerSettings,
                    config_text: str) -> None:
    """Write plan.csv and config.yaml (``config_text``: the typed snapshot,
    ``StudyConfig.to_yaml``) atomically, config first: a plan never lacks its config.

    Re-planning with a changed config replaces the plan, after keeping the old plan.csv and
    config.yaml under ``history/<time>/``; runs keep their ids wherever their result-determining
    inputs are unchanged, so finished runs are reused.
    """
    if not isinstance(config_text, str):  # the old signature took the config itself
        raise TypeError("write_plan_text takes config.yaml's text; conf.study.write_plan takes a "
                        "config")
    sweep_dir = Path(sweep_dir)
    text = plan_csv_text(the_plan, settings)
    old_plan, old_config = sweep_dir / PLAN_CSV, sweep_dir / CONFIG_YAML
    if old_plan.is_file() and old_config.is_file() and (
            old_plan.read_text() != text or old_config.read_text() != config_text):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        for old in (old_config, old_plan):
            atomic_write_text(sweep_dir / HISTORY_DIR / stamp / old.name, old.read_text())
    atomic_write_text(old_config, config_text)
    atomic_write_text(old_plan, text)


PLAN_INPUTS = ("family", "budgets", "training", "trainer", "planner", "accounting",
               "flops_formula")
"""The config's keys that decide which runs a plan holds and what each computes; within them
each field's schema mark (``sweep.schema.result``/``operational``) decides. Every other key
(the cluster, the fit, paths) only says where and how runs go or are read."""


def flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as dotted keys and leaf values (lists are leaves)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def under(key: str, prefix: str) -> bool:
    """``key`` is ``prefix``, lies inside it, or holds it (a list leaf holding ``a.0.b``)."""
    return key == prefix or key.startswith(f"{prefix}.") or prefix.startswith(f"{key}.")


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any],
                 within: tuple[str, ...] | None = None) -> list[str]:
    """The dotted keys whose values differ between two configs (plain mappings, as config.yaml
    holds them), in ``new``'s order; ``within``: only keys under these prefixes."""
    before, after = flat(old), flat(new)
    keys = [*after, *(k for k in before if k not in after)]
    return [k for k in keys if before.get(k) != after.get(k)
            and (within is None or any(under(k, p) for p in within))]


def changes_results(study: Any, key: str) -> bool:
    """Whether the dotted config ``key`` decides a plan's runs or their results, by the schema
    of a typed config ``study`` (the typed groups as attributes, ``root`` the top level): a
    key outside ``PLAN_INPUTS`` never does; inside, the first field marked operational on the
    way down says no, and a key the schema does not know counts as a result (the safe side)."""
    head, *rest = key.split(".")
    if head not in PLAN_INPUTS:
        return False
    node = study.root.planner if head == "planner" else getattr(study, head, None)
    for part in rest:
        if not dataclasses.is_dataclass(node):
            return True  # inside a list or mapping field: the field was a result field
        found = {f.name: f for f in dataclasses.fields(node)}.get(part)
        if found is None:
            return True
        if not changes_result(found):
            return False
        node = getattr(node, part)
    return True


def change_line(old: Mapping[str, Any], new: Mapping[str, Any], study: Any,
                most: int = 4) -> str:
    """The keys that change a plan between two configs (``study``: ``new`` typed), e.g.
    ``training.lr: 0.001 -> 0.002, trainer.name: 'simulated' -> 'embedded'``; the other
    changed keys when no result key changed; "" when none did."""
    keys = [k for k in changed_keys(old, new) if k not in ("sweep_dir", "format_version")]
    shown = [k for k in keys if changes_results(study, k)] or keys
    if "trainer.name" in shown:  # another trainer: its other keys follow from it
        shown = [k for k in shown if k == "trainer.name" or not under(k, "trainer")]
    before, after = flat(old), flat(new)
    text = ", ".join(f"{k}: {_short(before.get(k))} -> {_short(after.get(k))}"
                     for k in shown[:most])
    return text + (f" and {len(shown) - most} more" if len(shown) > most else "")


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def history_plans(sweep_dir: Path) -> list[Path]:
    """plan.csv files of earlier plans of this sweep, newest first."""
    return sorted((Path(sweep_dir) / HISTORY_DIR).glob(f"*/{PLAN_CSV}"), reverse=True)


__all__ = ["CONFIG_FORMAT", "read_config", "check_format", "planner_settings", "hash_context",
           "plan_study", "plan_csv_text", "read_plan", "write_plan_text", "history_plans",
           "PLAN_INPUTS", "flat", "under", "changed_keys", "changes_results", "change_line"]

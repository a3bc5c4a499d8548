"""What ``flame`` tells a user beyond running a command: the config keys of ``--help``, a
did-you-mean for a misspelt key, group option or command, and suggested commands in errors
that keep the user's ``experiment=``."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from conf.schema import GROUPS, TOP_LEVEL, RootConfig, group_docs
from sweep.schema import field_default
from trainers.settings import TRAINER_CONFIGS

VALUE_WIDTH = 24  # a longer value is shown as "..." (`--cfg` prints it whole)
_UNKNOWN_KEY = re.compile(r"unknown config key '([^']+)'( \(no such field in (\w+)\))?")
_UNKNOWN_OPTION = re.compile(r"Could not find '([\w/]+)/([^']+)'")
_SUGGESTED = re.compile(r"`flame ([a-z]+)([^`]*)`")


def close_match(word: str, candidates: Sequence[str]) -> str | None:
    """The candidate ``word`` was most likely meant to be, if any is close."""
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


# --- did you mean ---------------------------------------------------------------------------

def _dataclasses_in(hint: Any) -> list[type]:
    """The dataclasses a field's type names (``X | None``, ``list[X]``, ``dict[str, X]``)."""
    if dataclasses.is_dataclass(hint):
        return [hint]
    if typing.get_origin(hint) in (typing.Union, types.UnionType, list, dict, tuple):
        return [c for arg in typing.get_args(hint) for c in _dataclasses_in(arg)]
    return []


def _schemas_at(path: Sequence[str]) -> list[tuple[type, str]]:
    """The schemas that may hold the keys under the dotted ``path``, each with the trainer
    that has it ("" outside ``trainer``)."""
    if path and path[0] == "trainer":
        found = [(cls, name) for name, cls in TRAINER_CONFIGS.items()]
        path = path[1:]
    else:
        found = [(RootConfig, "")]
    for part in path:
        found = [(inner, trainer) for cls, trainer in found
                 for inner in _dataclasses_in(_field_types(cls).get(part))]
    return found


def _field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation only a type checker resolves: no hints
        return {}


def key_suggestion(full_key: str, owner: str = "") -> str | None:
    """The key ``full_key`` was likely meant to be, e.g. ``'trainer.noise' (a key of
    trainer=simulated)`` for ``trainer.nois``; ``owner`` is the schema the error named."""
    *parent, word = full_key.split(".")
    keys: dict[str, list[str]] = {}
    for cls, trainer in _schemas_at(parent):
        for f in dataclasses.fields(cls):
            keys.setdefault(f.name, [])
            if trainer and cls.__name__ != owner:
                keys[f.name].append(trainer)
            elif trainer:
                keys[f.name].insert(0, "")  # the chosen trainer has it: no note
    if not parent:
        keys.update({"experiment": [], "trainer": []})  # groups chosen by name
    match = close_match(word, keys)
    if match is None:
        return None
    text = "'" + ".".join([*parent, match]) + "'"
    if keys[match] and "" not in keys[match]:
        text += f" (a key of trainer={' | trainer='.join(keys[match])})"
    return text


def option_suggestion(group: str, option: str, options: Callable[[str], list[str]]) -> str:
    """One line for an unknown group option: the likely one and every option."""
    choices = options(group)
    match = close_match(option, choices)
    mean = f"did you mean {group}={match}? " if match else ""
    return f"{group}={option}: no such option; {mean}options: {', '.join(choices)}"


def with_suggestion(message: str, options: Callable[[str], list[str]]) -> str:
    """``message`` with a did-you-mean for an unknown key or group option, if one is close."""
    found = _UNKNOWN_OPTION.search(message)
    if found:
        return option_suggestion(found.group(1), found.group(2), options)
    found = _UNKNOWN_KEY.search(message)
    if found:
        match = key_suggestion(found.group(1), found.group(3) or "")
        if match:
            return message.replace("check its spelling against", f"did you mean {match}? See")
    return message


# --- suggested commands ---------------------------------------------------------------------

def keep_experiment(message: str, overrides: Sequence[str], configured: Callable[[str], bool]
                    ) -> str:
    """Commands suggested in ``message`` (```flame plan sweep_dir=...```) with the user's
    ``experiment=`` added, so that following the advice plans the same study;
    ``configured(command)`` says whether that command reads the config."""
    given = [o for o in overrides if o.startswith("experiment=")]
    if not given:
        return message

    def add(found: re.Match) -> str:
        command, rest = found.group(1), found.group(2)
        if not configured(command) or "experiment=" in rest or "--help" in rest:
            return found.group(0)
        return f"`flame {command} {given[-1]}{rest}`"

    return _SUGGESTED.sub(add, message)


# --- --help ---------------------------------------------------------------------------------

def _schema_default(cls: type | None, key: str) -> Any:
    for f in dataclasses.fields(cls) if cls else ():
        if f.name == key:
            return field_default(f)
    return dataclasses.MISSING


def _doc(doc: str, value: Any, default: Any) -> str:
    """A field's docstring as help for its current value: a "(default: ...)" that the config
    overrides says whose default it is, instead of seeming to describe the value shown."""
    if default is dataclasses.MISSING or value == default or "(default: " not in doc:
        return doc
    shown = _shown(default)
    whose = f"schema default {shown}" if shown != "..." else "schema default"
    return doc.replace("(default: ", f"({whose}, not this config's: ")


def _shown(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return "..." if isinstance(value, (dict, list)) and len(text) > VALUE_WIDTH else text


def section_lines(title: str, values: dict[str, Any], docs: dict[str, str],
                  schema: type | None) -> list[str]:
    """One block of keys: name, current value and meaning, in aligned columns."""
    width = max((len(k) for k in values), default=0)
    lines = [f"  {title}:"]
    for key, value in values.items():
        doc = _doc(docs.get(key, ""), value, _schema_default(schema, key))
        lines.append(f"    {key:<{width}} = {_shown(value):<{VALUE_WIDTH}} {doc}".rstrip())
    return lines


def config_help(cfg: DictConfig, trainer_values: Callable[[str], dict[str, Any] | None]
                ) -> list[str]:
    """The keys of ``--help``: the top-level keys, the planner, each group, and every
    trainer's keys (the chosen trainer's current values; the others' as ``trainer=<name>``
    gives them, from ``trainer_values``)."""
    lines = ["Keys (override with key=value, nested with a.b=value): key = current value, "
             "meaning"]
    values = OmegaConf.to_container(cfg, resolve=True)
    top = {k: v for k, v in values.items() if not isinstance(v, dict)}
    lines += section_lines("top level", top, group_docs(TOP_LEVEL), RootConfig)
    chosen = str((values.get("trainer") or {}).get("name", ""))
    for section in ("planner", *GROUPS, "trainer"):
        node = values.get(section)
        if not isinstance(node, dict):
            continue
        schema = GROUPS.get(section) or (TRAINER_CONFIGS.get(chosen) if section == "trainer"
                                         else None)
        title = f"trainer (trainer={chosen})" if section == "trainer" else section
        lines += section_lines(title, node, group_docs(section, chosen), schema)
    for name, cls in TRAINER_CONFIGS.items():
        if name == chosen:
            continue
        other = trainer_values(name)
        if other is None:  # not composable with these overrides: the schema's defaults
            other = {f.name: _schema_default(cls, f.name) for f in dataclasses.fields(cls)}
        lines += section_lines(f"trainer (with trainer={name})", other,
                               group_docs("trainer", name), cls)
    return lines


__all__ = ["close_match", "key_suggestion", "option_suggestion", "with_suggestion",
           "keep_experiment", "section_lines", "config_help"]

"""How a config group's dataclass is its schema: typed loading, field docs, result marks.

Every config group (``conf/<group>/*.yaml``) is a dataclass registered as a Hydra structured
config (``conf/schema.py``); the YAML files only set values. Each field says whether it changes a
run's result (``result()``) or only how the run executes (``operational()``): ``run_id`` hashes
exactly the result fields (``result_values``), so adding a logging or path field to a trainer
keeps every run_id, and an upgrade of flame never retrains a sweep.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweep.errors import ConfigError
from sweep.schema_direct import direct, field_default

T = TypeVar("T")
CHANGES_RESULT = "changes_result"
SINCE = "since_format"


def result(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING,
           since: int = 1) -> Any:
    """A field that changes what a run computes (hashed into run_id).

    ``since`` > 1 marks a field added after the first sweep format: it is hashed only when it
    differs from its default, so sweeps planned before it existed keep their run_ids.
    """
    return dataclasses.field(default=default, default_factory=factory,
                             metadata={CHANGES_RESULT: True, SINCE: since})


def operational(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING) -> Any:
    """A field that only changes how a run executes (paths, logging, layout): never hashed."""
    return dataclasses.field(default=default, default_factory=factory,
                             metadata={CHANGES_RESULT: False})


def changes_result(f: dataclasses.Field) -> bool:
    """Fields not marked either way count as result fields: the safe side for run_id."""
    return bool(f.metadata.get(CHANGES_RESULT, True))


def result_values(obj: Any) -> Any:
    """The result-changing part of a config dataclass, as plain data for hashing."""
    if not dataclasses.is_dataclass(obj):
        if isinstance(obj, (list, tuple)):
            return [result_values(v) for v in obj]
        if isinstance(obj, Mapping):
            return {str(k): result_values(v) for k, v in obj.items()}
        return obj
    out = {}
    for f in dataclasses.fields(obj):
        if not changes_result(f):
            continue
        value = getattr(obj, f.name)
        if f.metadata.get(SINCE, 1) > 1 and value == field_default(f):
            continue
        out[f.name] = result_values(value)
    return out


def to_typed(cls: type[T], values: Mapping[str, Any] | DictConfig | None, where: str) -> T:
    """``values`` checked against ``cls`` (unknown keys, types) and built into an instance
    (its ``__post_init__`` validates); any problem is a ConfigError naming ``where.key``.
    Plain values that need no conversion are built directly (``sweep.schema_direct``, the same
    instance without OmegaConf's cost)."""
    if values is not None and not isinstance(values, DictConfig):
        built = direct(cls, values)
        if built is not None:
            return built
    return omegaconf_typed(cls, values, where)


def omegaconf_typed(cls: type[T], values: Mapping[str, Any] | DictConfig | None,
                    where: str) -> T:
    """``to_typed`` through OmegaConf: every conversion rule, every error's wording."""
    if values is not None and not isinstance(values, DictConfig):
        values = literal(values)  # plain data (a file, a resolved config): no interpolation
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), values or {})
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise ConfigError(explain(err, where)) from None


def literal(data: Any) -> Any:
    """Plain data made safe to hand to OmegaConf: every ``${`` in a string escaped, so that a
    value read from a file (``${oc.env:SECRET}`` in a config.yaml someone sent) stays the
    text it is and no resolver runs. Backslashes before a ``${`` are doubled first, as
    OmegaConf's grammar reads them (``\\${`` is one backslash, then an interpolation)."""
    if isinstance(data, str):
        return _INTERPOLATION.sub(lambda m: m.group(1) * 2 + "\\${", data) if "${" in data else data
    if isinstance(data, Mapping):
        return {k: literal(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [literal(v) for v in data]
    return data


_INTERPOLATION = re.compile(r"(\\*)\$\{")


def explain(err: OmegaConfBaseException, where: str = "") -> str:
    """One line from an OmegaConf error: the full key, what was wrong, how to fix it."""
    key = getattr(err, "full_key", None) or ""
    full = f"{where}.{key}" if where and key else (where or key)
    message = str(err).split("\n")[0].strip()
    if "not in '" in message:  # "Key 'x' not in 'ClusterSettings'"
        owner = getattr(getattr(err, "object_type", None), "__name__", "")
        inside = f" (no such field in {owner})" if owner else ""
        return (f"unknown config key '{full}'{inside}: check its spelling against "
                "`flame <command> --help`")
    if "is not a ListConfig" in message:
        return (f"config key '{full}' takes a list, not a single value; write it in brackets, "
                f"e.g. {full}=[...]")
    if "could not be converted to" in message:
        return f"config key '{full}': {message.split(' full_key')[0]}; give a value of that type"
    if "Missing mandatory value" in message:
        return f"config key '{full}' has no value; set it, e.g. {full}=..."
    return f"config key '{full}': {message}"


def plain(obj: Any) -> Any:
    """A dataclass (or OmegaConf node) as plain dicts and lists, e.g. for YAML."""
    if isinstance(obj, DictConfig):
        return OmegaConf.to_container(obj, resolve=True)
    if dataclasses.is_dataclass(obj):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    return obj


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it), read from the class's source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs

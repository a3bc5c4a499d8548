"""A config dataclass built straight from plain data that OmegaConf would take unchanged.

``sweep.schema.to_typed`` checks values against a group's dataclass by merging them onto
``OmegaConf.structured(cls)`` and calling ``OmegaConf.to_object``: the one place that knows
every conversion rule and words every error. It is also most of a command's start: 0.14 s of
CPU per whole config on the 2-core machine (the family's member list alone 65 ms), paid twice
or more per command and hundreds of times in the test suite. ``direct`` builds the same
instance without OmegaConf for the values that need no rule: every key a field, every value
already of its field's type (an int where a float is declared becomes that float, as
OmegaConf's FloatNode makes it). Anything else (an unknown or missing key, a string where a
number is declared, an interpolation, a dict field with defaults to merge into) returns None
and ``to_typed`` takes OmegaConf's road, so errors and conversions stay OmegaConf's.
tests/sweep/test_schema_direct.py checks both roads give equal configs for every shipped
experiment and trainer.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any

_NO = object()  # "not direct": the value needs OmegaConf


def direct(cls: type, values: Mapping[str, Any] | None) -> Any:
    """``cls(**values)`` built field by field, or None when any value needs OmegaConf."""
    built = _dataclass(cls, values or {}, None)
    return None if built is _NO else built


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass(cls: type, values: Any, default: Any) -> Any:
    """An instance of ``cls``: ``values`` over ``default``'s fields (None: the class's)."""
    if not isinstance(values, Mapping) or not all(isinstance(k, str) for k in values):
        return _NO
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if not set(values) <= set(fields):
        return _NO
    hints, kwargs = _hints(cls), {}
    for name, f in fields.items():
        base = getattr(default, name) if default is not None else field_default(f)
        if name not in values:
            if base is dataclasses.MISSING:
                return _NO
            kwargs[name] = base
            continue
        value = _value(hints[name], values[name], base)
        if value is _NO:
            return _NO
        kwargs[name] = value
    return cls(**kwargs)


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default (its factory called), or ``dataclasses.MISSING``."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _value(hint: Any, value: Any, base: Any) -> Any:
    """``value`` as a field declared ``hint`` (whose current value is ``base``) holds it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if value is None:
            return None if len(inner) < len(args) else _NO
        return _value(inner[0], value, base) if len(inner) == 1 else _NO
    if hint is Any:
        return _plain(value)
    if value is None:
        return _NO
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint, value, base if dataclasses.is_dataclass(base) else None)
    if origin is list:
        if not isinstance(value, list):
            return _NO
        items = [_value(args[0], v, None) for v in value]
        return _NO if any(v is _NO for v in items) else items
    if origin is dict:  # OmegaConf merges into a default dict: only an empty one is direct
        if not isinstance(value, Mapping) or base not in (None, {}, dataclasses.MISSING):
            return _NO
        items = {k: _value(args[1], v, None) for k, v in value.items()}
        ok = all(isinstance(k, str) for k in items) and _NO not in items.values()
        return items if ok else _NO
    return _scalar(hint, value)


def _scalar(hint: Any, value: Any) -> Any:
    if hint is bool:
        return value if isinstance(value, bool) else _NO
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else _NO
    if hint is str:
        return value if isinstance(value, str) and "${" not in value else _NO
    return _NO


def _plain(value: Any) -> Any:
    """An ``Any`` field's value as OmegaConf.to_object returns it: plain lists and dicts."""
    if isinstance(value, Mapping):
        items = {k: _plain(v) for k, v in value.items()}
        return _NO if _NO in items.values() else items
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return _NO if any(v is _NO for v in items) else items
    if isinstance(value, str) and "${" in value:
        return _NO
    return value if value is None or isinstance(value, (bool, int, float, str)) else _NO

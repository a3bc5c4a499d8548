"""A sweep's config.yaml as the plain mapping analysis reads, in the current format (None
when the sweep has none). Analysis types only the groups it needs from it (``FitSettings``,
``trainers.settings.trainer_config``, ``sweep.family``), never the whole typed config, which
belongs to ``conf``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sweep.config import read_config
from sweep.family import FamilyConfig
from sweep.schema import to_typed

__all__ = ["read_config", "family_config"]


def family_config(config: Mapping[str, Any]) -> FamilyConfig:
    """The config's ``family`` group, typed (``grid: null`` read as no grid, as
    ``sweep.family.build_family`` reads it); a ConfigError names a bad key."""
    values = {k: v for k, v in dict(config.get("family") or {}).items()
              if not (k == "grid" and v is None)}
    return to_typed(FamilyConfig, values, "family")

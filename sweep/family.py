"""An architecture family from config: an explicit member list, or a grid of rules."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping

from sweep.arch import ConfigError, MoEArch

_EXTRA_KEYS = ("micro_batch_size", "budgets", "name")


@dataclass(frozen=True)
class Member:
    """One architecture of the family, with how (and at which budgets) it may be planned."""

    name: str
    """Short human label, e.g. ``L9-h512``."""
    arch: MoEArch
    """The architecture itself."""
    micro_batch_size: int | None = None
    """Per-GPU micro batch for Megatron (does not change results); None = trainer decides."""
    budgets: tuple[float, ...] | None = None
    """Restrict this member to these budgets (None = every budget of the study)."""


def build_family(cfg: Mapping[str, Any]) -> list[Member]:
    """Members from ``family`` config: ``members`` (explicit) or ``grid`` (hidden x layers)."""
    members_cfg = cfg.get("members")
    grid = cfg.get("grid")
    if members_cfg and grid:
        raise ConfigError("family: give either `members` or `grid`, not both (set the other "
                          "to null)")
    if grid:
        sizes, layers = _grid_axis(grid, "hidden_size"), _grid_axis(grid, "num_layers")
        members_cfg = [{"hidden_size": h, "num_layers": n}
                       for h, n in itertools.product(sizes, layers)]
    if not members_cfg:
        raise ConfigError("family: no architectures; set `family.members` (a list) or "
                          "`family.grid` ({hidden_size: [...], num_layers: [...]})")
    members = [_member(cfg, dict(m), i) for i, m in enumerate(members_cfg)]
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"family.members: duplicate architectures {dup}; list each once")
    return members


def _grid_axis(grid: Mapping[str, Any], key: str) -> list[int]:
    values = grid.get(key)
    if not values:
        raise ConfigError(f"family.grid.{key}: missing; give a list of sizes")
    return [int(v) for v in values]


def _member(cfg: Mapping[str, Any], spec: dict[str, Any], index: int) -> Member:
    where = f"family.members[{index}]"
    fields_ = dict(cfg.get("base") or {})
    fields_.update({k: v for k, v in spec.items() if k not in _EXTRA_KEYS})
    if "hidden_size" not in fields_:
        raise ConfigError(f"{where}.hidden_size: missing; every member needs a width")
    h = int(fields_["hidden_size"])
    # Widths not given explicitly follow the family's ratios of hidden_size.
    _derive(fields_, "ffn_hidden_size", cfg, "ffn_ratio", h, where)
    _derive(fields_, "moe_ffn_hidden_size", cfg, "moe_ffn_ratio", h, where)
    if "shared_expert_size" not in fields_:
        ratio = cfg.get("shared_expert_ratio", 0) or 0
        fields_["shared_expert_size"] = _round_width(ratio * fields_["moe_ffn_hidden_size"])
    unknown = set(fields_) - set(MoEArch.field_names())
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: "
                          f"{MoEArch.field_names() + list(_EXTRA_KEYS)}")
    try:
        arch = MoEArch.from_mapping(fields_)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{where}: {err}; set it in the member or in family.base") from None
    budgets = spec.get("budgets")
    return Member(
        name=str(spec.get("name") or f"L{arch.num_layers}-h{arch.hidden_size}"),
        arch=arch,
        micro_batch_size=int(spec["micro_batch_size"]) if spec.get("micro_batch_size") else None,
        budgets=tuple(float(b) for b in budgets) if budgets else None,
    )


def _derive(fields_: dict[str, Any], key: str, cfg: Mapping[str, Any], ratio_key: str, h: int,
            where: str) -> None:
    if key in fields_:
        return
    ratio = cfg.get(ratio_key)
    if not ratio:
        raise ConfigError(f"{where}.{key}: missing; set it, or set family.{ratio_key}")
    fields_[key] = _round_width(float(ratio) * h)


def _round_width(value: float) -> int:
    # Ratios like 5.34375 give whole widths for the family's sizes; round others to the nearest.
    return int(math.floor(value + 0.5))

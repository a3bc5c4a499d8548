"""An architecture family from config: an explicit member list, or a grid of rules."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sweep.arch import MoEArch
from sweep.errors import ConfigError
from sweep.schema import to_typed

_EXTRA_KEYS = ("micro_batch_size", "budgets", "name")


@dataclass
class ArchFields:
    """Architecture fields a family sets for all members (``family.base``) or one member;
    None = not set here (see ``sweep.arch.MoEArch`` for what each means)."""

    num_layers: int | None = None
    """Transformer layers in total."""
    hidden_size: int | None = None
    """Model width h."""
    num_attention_heads: int | None = None
    """Attention heads."""
    ffn_hidden_size: int | None = None
    """Dense FFN width (default: family.ffn_ratio x hidden_size)."""
    moe_ffn_hidden_size: int | None = None
    """Routed expert width (default: family.moe_ffn_ratio x hidden_size)."""
    num_experts: int | None = None
    """Routed experts per MoE layer."""
    moe_router_topk: int | None = None
    """Routed experts per token."""
    shared_expert_size: int | None = None
    """Shared MLP width (default: family.shared_expert_ratio x moe_ffn_hidden_size)."""
    first_dense_layers: int | None = None
    """Leading dense layers."""
    vocab_size: int | None = None
    """Vocabulary size (padded)."""
    seq_length: int | None = None
    """Sequence length."""
    tie_embeddings: bool | None = None
    """Share input embedding and output projection."""


@dataclass
class MemberConfig(ArchFields):
    """One entry of ``family.members``: its architecture fields and launch hints."""

    name: str | None = None
    """Label (default ``L<layers>-h<hidden>``)."""
    micro_batch_size: int | None = None
    """Per-GPU micro batch for Megatron (does not change results)."""
    budgets: list[float] | None = None
    """Plan this member at these budgets only (None = every budget)."""


@dataclass
class GridConfig:
    """``family.grid``: every hidden_size x num_layers pair is a member."""

    hidden_size: list[int] = field(default_factory=list)
    """Widths."""
    num_layers: list[int] = field(default_factory=list)
    """Depths."""


@dataclass
class FamilyConfig:
    """The ``family`` group: an architecture family (``conf/family/*.yaml``)."""

    name: str = "custom"
    """The family's name."""
    base: ArchFields = field(default_factory=ArchFields)
    """Architecture fields shared by every member."""
    ffn_ratio: float | None = None
    """Dense FFN width = ratio x hidden_size, where a member does not set ffn_hidden_size."""
    moe_ffn_ratio: float | None = None
    """Expert width = ratio x hidden_size, where a member does not set moe_ffn_hidden_size."""
    shared_expert_ratio: float = 0.0
    """Shared MLP width = ratio x expert width (0 = no shared expert)."""
    grid: GridConfig = field(default_factory=GridConfig)
    """Members by rule (hidden_size x num_layers; empty = none); give this or ``members``."""
    members: list[MemberConfig] | None = None
    """Members listed one by one; give this or ``grid``."""


def _given(fields_: Any) -> dict[str, Any]:
    """The fields of a config dataclass that are set (not None), as a dict."""
    return {f.name: getattr(fields_, f.name) for f in dataclasses.fields(fields_)
            if getattr(fields_, f.name) is not None}


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


def build_family(cfg: FamilyConfig | Mapping[str, Any]) -> list[Member]:
    """Members from ``family`` config: ``members`` (explicit) or ``grid`` (hidden x layers)."""
    if not isinstance(cfg, FamilyConfig):
        values = {k: v for k, v in dict(cfg).items() if not (k == "grid" and v is None)}
        cfg = to_typed(FamilyConfig, values, "family")
    has_grid = bool(cfg.grid.hidden_size or cfg.grid.num_layers)
    if cfg.members and has_grid:
        raise ConfigError("family: give either `members` or `grid`, not both (set "
                          "family.members=null to use the grid)")
    members_cfg = [_given(m) for m in cfg.members or []]
    if has_grid:
        sizes, layers = _grid_axis(cfg.grid, "hidden_size"), _grid_axis(cfg.grid, "num_layers")
        members_cfg = [{"hidden_size": h, "num_layers": n}
                       for h, n in itertools.product(sizes, layers)]
    if not members_cfg:
        raise ConfigError("family: no architectures; set `family.members` (a list) or "
                          "`family.grid` ({hidden_size: [...], num_layers: [...]})")
    members = [_member(cfg, m, i) for i, m in enumerate(members_cfg)]
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"family.members: duplicate architectures {dup}; list each once")
    return members


def _grid_axis(grid: GridConfig, key: str) -> list[int]:
    values = getattr(grid, key)
    if not values:
        raise ConfigError(f"family.grid.{key}: missing; give a list of sizes")
    return [int(v) for v in values]


def _member(cfg: FamilyConfig, spec: dict[str, Any], index: int) -> Member:
    where = f"family.members[{index}]"
    fields_ = _given(cfg.base)
    fields_.update({k: v for k, v in spec.items() if k not in _EXTRA_KEYS})
    if "hidden_size" not in fields_:
        raise ConfigError(f"{where}.hidden_size: missing; every member needs a width")
    h = int(fields_["hidden_size"])
    # Widths not given explicitly follow the family's ratios of hidden_size.
    _derive(fields_, "ffn_hidden_size", cfg, "ffn_ratio", h, where)
    _derive(fields_, "moe_ffn_hidden_size", cfg, "moe_ffn_ratio", h, where)
    if "shared_expert_size" not in fields_:
        ratio = cfg.shared_expert_ratio or 0
        fields_["shared_expert_size"] = _round_width(ratio * fields_["moe_ffn_hidden_size"])
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


def _derive(fields_: dict[str, Any], key: str, cfg: FamilyConfig, ratio_key: str, h: int,
            where: str) -> None:
    if key in fields_:
        return
    ratio = getattr(cfg, ratio_key)
    if not ratio:
        raise ConfigError(f"{where}.{key}: missing; set it, or set family.{ratio_key}")
    fields_[key] = _round_width(float(ratio) * h)


def _round_width(value: float) -> int:
    # Ratios like 5.34375 give whole widths for the family's sizes; round others to the nearest.
    return int(math.floor(value + 0.5))

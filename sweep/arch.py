"""One Mixture-of-Experts decoder architecture, the unit every stage agrees on."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any

from sweep.errors import ConfigError


@dataclass(frozen=True)
class MoEArch:
    """A FLAME-MoE-style decoder: dense first layers, then MoE layers with a shared expert."""

    num_layers: int
    """Transformer layers in total (dense first layers included)."""
    hidden_size: int
    """Model width h."""
    num_attention_heads: int
    """Attention heads; must divide hidden_size (no GQA: one KV head per query head)."""
    ffn_hidden_size: int
    """SwiGLU intermediate width of the dense (non-MoE) layers."""
    moe_ffn_hidden_size: int
    """SwiGLU intermediate width of one routed expert."""
    num_experts: int
    """Routed experts per MoE layer."""
    moe_router_topk: int
    """Routed experts each token is sent to."""
    shared_expert_size: int
    """Total intermediate width of the always-on shared MLP (0 = none)."""
    first_dense_layers: int = 1
    """Leading layers that use the dense FFN instead of MoE."""
    vocab_size: int = 50304
    """Vocabulary size (already padded)."""
    seq_length: int = 2048
    """Training sequence length in tokens."""
    tie_embeddings: bool = False
    """Share the input embedding with the output projection."""

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size",
                     "moe_ffn_hidden_size", "num_experts", "moe_router_topk", "vocab_size",
                     "seq_length"):
            _require_positive_int(name, getattr(self, name))
        for name in ("shared_expert_size", "first_dense_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name}={value!r}: must be a whole number >= 0")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} does not divide "
                f"hidden_size={self.hidden_size}: pick a head count that divides it "
                f"(e.g. {_nearest_divisor(self.hidden_size, self.num_attention_heads)})")
        if self.moe_router_topk > self.num_experts:
            raise ConfigError(
                f"moe_router_topk={self.moe_router_topk} exceeds num_experts={self.num_experts}: "
                "set moe_router_topk <= num_experts")
        if self.first_dense_layers > self.num_layers:
            raise ConfigError(
                f"first_dense_layers={self.first_dense_layers} exceeds num_layers="
                f"{self.num_layers}: set first_dense_layers <= num_layers")

    @property
    def num_moe_layers(self) -> int:
        """Layers whose FFN is the routed MoE block."""
        return self.num_layers - self.first_dense_layers

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict[str, Any]:
        # every field is a scalar: no deep copy (``asdict``) needed, and a 10,000-run plan
        # calls this twice a run
        return {name: getattr(self, name) for name in _ARCH_FIELDS}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def required_names(cls) -> list[str]:
        """The fields without a default: a plan row or mapping must give each."""
        return [f.name for f in fields(cls)
                if f.default is MISSING and f.default_factory is MISSING]

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> MoEArch:
        """Build from a plan row or config mapping; extra keys are ignored, numbers coerced."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in row:
                continue
            value = row[f.name]
            if f.name == "tie_embeddings":
                kwargs[f.name] = value if isinstance(value, bool) else str(value).lower() in (
                    "1", "true", "yes")
            else:
                kwargs[f.name] = _as_int(f.name, value)
        return cls(**kwargs)


_ARCH_FIELDS = tuple(f.name for f in fields(MoEArch))


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name}={value!r}: must be a whole number")
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r}: must be a whole number") from None
    if not math.isfinite(number) or number != int(number):
        raise ConfigError(f"{name}={value!r}: must be a whole number")
    return int(number)


def _require_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name}={value!r}: must be a whole number > 0")


def check_rope(arch: MoEArch, member: str) -> None:
    """A ConfigError when the head dimension is odd: rotary position embeddings (RoPE, which
    the embedded trainer and flame's Megatron recipe both use) rotate pairs of a head's
    dimensions, so every run of such a member would fail. Checked at plan time, not when a
    plan row is read (a simulated sweep planned before the check stays readable)."""
    if arch.head_dim % 2:
        even = [d for d in range(1, arch.hidden_size + 1)
                if arch.hidden_size % d == 0 and (arch.hidden_size // d) % 2 == 0]
        near = min(even, key=lambda d: abs(d - arch.num_attention_heads)) if even else None
        hint = f"e.g. num_attention_heads={near}" if near else "or an even hidden_size"
        raise ConfigError(
            f"family member {member!r}: head dimension hidden_size/num_attention_heads = "
            f"{arch.hidden_size}/{arch.num_attention_heads} = {arch.head_dim} is odd, and RoPE "
            f"needs an even one; pick a head count that gives one ({hint})")


def _nearest_divisor(n: int, near: int) -> int:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: (abs(d - near), d))

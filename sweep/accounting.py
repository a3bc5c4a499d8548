"""Parameter counts and FLOPs per token for an MoE architecture, under named conventions.

Two conventions (see DESIGN.md, "Accounting conventions"):

- ``exact``: what megatron-core's ``GPTModel`` instantiates for the architecture (local layer
  spec, no biases, RMSNorm, SwiGLU with 3 matrices, a router of h x E per MoE layer, untied
  embeddings unless ``tie_embeddings``). Checked against the real model in
  ``tests/sweep/test_megatron_count.py``.
- ``flame``: the spreadsheet formula behind FLAME-MoE's published sizes (Kang et al. 2025):
  ``2.V.h + L.(4h^2 + 2h) + h + 2.h.ffn + (L-1).(k+2).3.h.d_e`` active, with the shared MLP
  counted as ``shared/d_e`` experts, the dense layer as 2 matrices and no router. Total uses
  ``E + shared/d_e`` experts. It reproduces all 80 iteration counts of their sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from sweep.arch import MoEArch
from sweep.errors import ConfigError

Convention = Literal["exact", "flame"]
FlopsFormula = Literal["6n", "6n_attn"]
CONVENTIONS: tuple[str, ...] = ("exact", "flame")
FLOPS_FORMULAS: tuple[str, ...] = ("6n", "6n_attn")
ITERS_ROUNDINGS: tuple[str, ...] = ("ceil", "round")


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of one architecture under one convention."""

    convention: str
    """Which convention produced these numbers ("exact" or "flame")."""
    active: int
    """Parameters touched per token (top-k routed + shared experts), embeddings included."""
    total: int
    """All parameters, every expert, embeddings included."""
    embedding: int
    """Input embedding plus output projection (one matrix if tied)."""

    @property
    def active_non_embedding(self) -> int:
        return self.active - self.embedding

    @property
    def total_non_embedding(self) -> int:
        return self.total - self.embedding


def param_counts(arch: MoEArch, convention: str = "exact") -> ParamCounts:
    """Active and total parameter counts of ``arch`` under ``convention``."""
    if convention == "exact":
        return _exact(arch)
    if convention == "flame":
        return _flame(arch)
    raise ConfigError(f"accounting={convention!r}: must be one of {', '.join(CONVENTIONS)}")


def _embedding(arch: MoEArch) -> int:
    # RoPE has no parameters; the output layer is a second V x h matrix unless tied.
    return arch.vocab_size * arch.hidden_size * (1 if arch.tie_embeddings else 2)


def _exact(arch: MoEArch) -> ParamCounts:
    h = arch.hidden_size
    attention = 4 * h * h          # fused QKV (3h^2) + output projection (h^2), no GQA
    norms = 2 * h                  # input_layernorm + pre_mlp_layernorm (RMSNorm weights)
    swiglu = lambda width: 3 * h * width  # noqa: E731  gate, up, down
    dense_layer = attention + norms + swiglu(arch.ffn_hidden_size)
    router = h * arch.num_experts
    shared = swiglu(arch.shared_expert_size) if arch.shared_expert_size else 0
    expert = swiglu(arch.moe_ffn_hidden_size)
    moe_common = attention + norms + router + shared
    base = _embedding(arch) + h + arch.first_dense_layers * dense_layer  # + final norm
    active = base + arch.num_moe_layers * (moe_common + arch.moe_router_topk * expert)
    total = base + arch.num_moe_layers * (moe_common + arch.num_experts * expert)
    return ParamCounts("exact", active, total, _embedding(arch))


def _flame(arch: MoEArch) -> ParamCounts:
    h = arch.hidden_size
    shared_as_experts = arch.shared_expert_size / arch.moe_ffn_hidden_size
    per_expert = 3 * h * arch.moe_ffn_hidden_size
    base = (_embedding(arch) + arch.num_layers * (4 * h * h + 2 * h) + h
            + arch.first_dense_layers * 2 * h * arch.ffn_hidden_size)
    active = base + arch.num_moe_layers * (arch.moe_router_topk + shared_as_experts) * per_expert
    total = base + arch.num_moe_layers * (arch.num_experts + shared_as_experts) * per_expert
    return ParamCounts("flame", round(active), round(total), _embedding(arch))


def attention_flops_per_token(arch: MoEArch) -> int:
    """Training FLOPs per token of attention's score and value products (no weights).

    Forward: QK^T and softmax.V cost 2.seq.h each per layer per token (Hoffmann et al. 2022,
    "Training Compute-Optimal Large Language Models", Appendix F); x3 for forward + backward,
    hence 12.L.h.seq. No causal-mask discount, as in that table.
    """
    return 12 * arch.num_layers * arch.hidden_size * arch.seq_length


def flops_per_token(arch: MoEArch, convention: str = "flame", formula: str = "6n") -> float:
    """Training FLOPs per token: ``6.N_active`` or ``6.N_active + attention``."""
    n_active = param_counts(arch, convention).active
    if formula == "6n":
        return 6.0 * n_active
    if formula == "6n_attn":
        return 6.0 * n_active + attention_flops_per_token(arch)
    raise ConfigError(f"flops_formula={formula!r}: must be one of {', '.join(FLOPS_FORMULAS)}")


def train_iters(budget: float, arch: MoEArch, global_batch_size: int, convention: str,
                formula: str, rounding: str) -> int:
    """Iterations that spend ``budget`` FLOPs: C / (flops_per_token . batch . seq), rounded up
    (``ceil``: never under budget) or to the nearest (``round``). The one definition: the
    planner and selection both call it."""
    per_iter = flops_per_token(arch, convention, formula) * global_batch_size * arch.seq_length
    exact = budget / per_iter
    if rounding == "ceil":
        return math.ceil(exact)
    if rounding == "round":
        return round(exact)
    raise ConfigError(f"planner.iters_rounding={rounding!r}: use one of "
                      f"{', '.join(ITERS_ROUNDINGS)}")

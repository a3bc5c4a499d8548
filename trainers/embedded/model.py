"""The FLAME-MoE decoder in plain PyTorch (torch.nn, no biases, untied embeddings).

Same parameters as megatron-core's ``GPTModel`` with the local layer spec, so its count equals
``sweep.accounting.param_counts(arch, "exact").total``: per layer a fused QKV and an output
projection (4h^2), two RMSNorm weights, then a SwiGLU FFN (dense first layers) or an MoE block
(router h x E, E routed SwiGLU experts, one shared SwiGLU MLP); a final RMSNorm; input embedding
and output layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sweep.arch import MoEArch


@dataclass(frozen=True)
class MoELosses:
    """Router regularisers of one forward pass, summed over the MoE layers as Megatron adds
    them to the loss (each layer contributes coeff x its own loss)."""

    aux: torch.Tensor
    """Load-balancing loss (1.0 when perfectly balanced)."""
    z: torch.Tensor
    """Router z-loss: mean squared log-sum-exp of the router logits."""


# What RouterTally.sums holds, by index (each a sum over the window's steps).
_ENTROPY, _LOAD, _AUX, _Z = range(4)


class RouterTally(nn.Module):
    """One MoE layer's routing over the training steps of a window (diagnostics only).

    Added to from tensors the forward pass computed anyway, under no_grad, on the model's
    device: no host sync per step; the window is read (one sync) at evaluation points. The
    buffers are not persistent (the model's state_dict, and so its checkpoints, are unchanged);
    the loop saves ``state()`` beside them so that a resumed run reports the same windows.
    """

    def __init__(self, experts: int, topk: int) -> None:
        super().__init__()
        self.experts, self.topk = experts, topk
        self.register_buffer("counts", torch.zeros(experts, dtype=torch.float64),
                             persistent=False)
        self.register_buffer("sums", torch.zeros(4, dtype=torch.float64), persistent=False)
        self.steps, self.tokens = 0, 0

    @torch.no_grad()
    def add(self, probs: torch.Tensor, counts: torch.Tensor, aux: torch.Tensor,
            z: torch.Tensor) -> None:
        tokens = probs.shape[0]
        entropy = torch.special.entr(probs).sum()  # sum over tokens of -sum_e p log p (nats)
        # the busiest expert's assignments over the mean, k T / E (dropless: all are kept)
        load = counts.max().double() * (self.experts / (self.topk * tokens))
        self.counts += counts
        self.sums += torch.stack([entropy, load, aux, z]).to(self.sums.dtype)
        self.steps += 1
        self.tokens += tokens

    def window(self) -> dict | None:
        """The window's statistics (None when it saw no step): ``expert_fraction`` (share of
        the routed assignments each expert took over the window; sums to 1, uniform = 1/E),
        ``load_max_mean`` (the busiest expert's share over the mean share 1/E: 1 = balanced,
        E/k = every token on the same k experts), ``step_load_max_mean`` (the same per step,
        averaged over the steps: imbalance within a batch, which the window's sum can hide),
        ``entropy`` (mean over tokens of the router distribution's entropy / ln E: 1 = uniform
        probabilities, 0 = one-hot; a confident router is not a collapsed one), ``aux_loss``
        and ``z_loss`` (per-step means, without their coefficients, as Megatron logs them)."""
        if not self.steps:
            return None
        sums = self.sums.tolist()
        total = float(self.counts.sum())
        fraction = [c / total for c in self.counts.tolist()]
        return {"steps": self.steps, "expert_fraction": fraction,
                "load_max_mean": max(fraction) * self.experts,
                "step_load_max_mean": sums[_LOAD] / self.steps,
                "entropy": sums[_ENTROPY] / self.tokens / math.log(self.experts),
                "aux_loss": sums[_AUX] / self.steps, "z_loss": sums[_Z] / self.steps}

    def reset(self) -> None:
        self.counts.zero_()
        self.sums.zero_()
        self.steps, self.tokens = 0, 0

    def state(self) -> dict:
        """The open window, for a checkpoint."""
        return {"counts": self.counts.clone(), "sums": self.sums.clone(),
                "steps": self.steps, "tokens": self.tokens}

    def load(self, state: dict) -> None:
        self.counts.copy_(state["counts"])
        self.sums.copy_(state["sums"])
        self.steps, self.tokens = state["steps"], state["tokens"]


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (Zhang & Sennrich 2019)."""

    def __init__(self, width: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(seq: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, ...]:
    """cos/sin tables of rotary position embeddings (Su et al. 2021), rotate-half layout."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq, dtype=torch.float32), inv)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Causal multi-head self-attention with RoPE, fused QKV, no biases."""

    def __init__(self, arch: MoEArch) -> None:
        super().__init__()
        self.heads, self.head_dim = arch.num_attention_heads, arch.head_dim
        self.qkv = nn.Linear(arch.hidden_size, 3 * arch.hidden_size, bias=False)
        self.proj = nn.Linear(arch.hidden_size, arch.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        qk, v = self.qkv(x).view(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4
                                                                             ).split([2, 1])
        # q and k rotated in one pass: the same products as one at a time (bit for bit), half
        # the ops; split's backward concatenates where slicing's would zero-fill
        q, k = apply_rope(qk, cos, sin).unbind(0)
        v = v.squeeze(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(b, s, h))


class SwiGLU(nn.Module):
    """SwiGLU MLP (Shazeer 2020): gate and up projections fused, then down."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(hidden, 2 * width, bias=False)
        self.down = nn.Linear(width, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class MoE(nn.Module):
    """Softmax top-k router over E SwiGLU experts plus an always-on shared SwiGLU MLP.

    Routing as FLAME-MoE configures Megatron (``--moe-router-pre-softmax``): softmax over all
    experts, keep the top-k probabilities unnormalised as the combine weights. Dropless: every
    expert takes all its tokens. Tokens are sorted by expert and each expert multiplies its
    contiguous chunk (``split``/``unbind``, whose backward passes concatenate instead of
    filling zeros): on CPU this ran 1.5x (balanced) to 5x (skewed routing) the FLOP/s of one
    ``bmm`` over [E, capacity, h] padded to the busiest expert.
    """

    def __init__(self, arch: MoEArch) -> None:
        super().__init__()
        h, f, e = arch.hidden_size, arch.moe_ffn_hidden_size, arch.num_experts
        self.experts, self.topk, self.width = e, arch.moe_router_topk, f
        self.router = nn.Linear(h, e, bias=False)
        self.w_gate_up = nn.Parameter(torch.empty(e, h, 2 * f))
        self.w_down = nn.Parameter(torch.empty(e, f, h))
        self.shared = SwiGLU(h, arch.shared_expert_size) if arch.shared_expert_size else None
        self.tally = RouterTally(e, self.topk)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        tokens = x.shape[0]
        logits = self.router(x)
        probs = logits.softmax(dim=-1)
        weights, chosen = probs.topk(self.topk, dim=-1)
        counts = torch.bincount(chosen.flatten(), minlength=self.experts)
        routed = self._experts(x, chosen.flatten(), weights.flatten(), counts)
        out = routed if self.shared is None else routed + self.shared(x)
        # Switch/GShard load balancing as Megatron's switch_load_balancing_loss_func:
        # E / (k T^2) . sum_e (sum_t p_te) . count_e  (= 1 when balanced).
        aux = (probs.sum(0) * counts.to(probs.dtype)).sum() * (
            self.experts / (self.topk * tokens * tokens))
        z = torch.logsumexp(logits, dim=-1).square().mean()  # ST-MoE router z-loss
        if self.training:  # training steps only, as Megatron tracks them (router.py:484)
            self.tally.add(probs, counts, aux, z)
        return out.view(shape), aux, z

    def _experts(self, x: torch.Tensor, expert: torch.Tensor, weight: torch.Tensor,
                 counts: torch.Tensor) -> torch.Tensor:
        # Sort the (token, expert) assignments by expert, run each expert on its contiguous
        # chunk, scatter-add the weighted outputs back to their tokens.
        order = torch.argsort(expert, stable=True)
        token = order // self.topk
        chunks = x.index_select(0, token).split(counts.tolist())
        outs = []
        for chunk, w_gate_up, w_down in zip(chunks, self.w_gate_up.unbind(0),
                                            self.w_down.unbind(0)):
            gate, up = (chunk @ w_gate_up).chunk(2, dim=-1)
            outs.append((F.silu(gate) * up) @ w_down)
        contrib = torch.cat(outs) * weight.index_select(0, order).unsqueeze(1)
        return torch.zeros_like(x).index_add(0, token, contrib)


class Block(nn.Module):
    """Pre-norm transformer layer: attention, then a dense SwiGLU or an MoE FFN."""

    def __init__(self, arch: MoEArch, moe: bool, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.input_norm = RMSNorm(arch.hidden_size, norm_eps)
        self.attention = Attention(arch)
        self.mlp_norm = RMSNorm(arch.hidden_size, norm_eps)
        self.mlp: nn.Module = MoE(arch) if moe else SwiGLU(arch.hidden_size, arch.ffn_hidden_size)

    def forward(self, x, cos, sin):
        x = x + self.attention(self.input_norm(x), cos, sin)
        if isinstance(self.mlp, MoE):
            out, aux, z = self.mlp(self.mlp_norm(x))
            return x + out, aux, z
        return x + self.mlp(self.mlp_norm(x)), None, None


class MoEDecoder(nn.Module):
    """The whole decoder: embedding, layers (dense first), final norm, output layer."""

    def __init__(self, arch: MoEArch, init_std: float = 0.02, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.arch = arch
        self.embedding = nn.Embedding(arch.vocab_size, arch.hidden_size)
        self.layers = nn.ModuleList(Block(arch, moe=i >= arch.first_dense_layers,
                                          norm_eps=norm_eps) for i in range(arch.num_layers))
        self.final_norm = RMSNorm(arch.hidden_size, norm_eps)
        self.output = (None if arch.tie_embeddings
                       else nn.Linear(arch.hidden_size, arch.vocab_size, bias=False))
        cos, sin = rope_tables(arch.seq_length, arch.head_dim)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters(init_std)

    def reset_parameters(self, std: float) -> None:
        """Megatron's init: N(0, std) everywhere, output projections of each residual branch
        scaled by 1/sqrt(2L) (``init_method_normal`` / ``scaled_init_method_normal``)."""
        scaled = std / math.sqrt(2.0 * self.arch.num_layers)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith(("proj.weight", "down.weight", "w_down")):
                nn.init.normal_(p, 0.0, scaled)
            else:
                nn.init.normal_(p, 0.0, std)

    def tallies(self) -> dict[int, RouterTally]:
        """The routing tally of each MoE layer, by layer index (0-based over all layers, as
        Megatron numbers its per-layer logging)."""
        return {i: layer.mlp.tally for i, layer in enumerate(self.layers)
                if isinstance(layer.mlp, MoE)}

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, MoELosses]:
        """Logits [batch, seq, vocab] and the router losses summed over MoE layers."""
        s = tokens.shape[1]
        cos, sin = self.rope_cos[:s], self.rope_sin[:s]
        x = self.embedding(tokens)
        aux, z = [], []
        for layer in self.layers:
            x, a, zz = layer(x, cos, sin)
            if a is not None:
                aux.append(a)
                z.append(zz)
        x = self.final_norm(x)
        logits = x @ self.embedding.weight.t() if self.output is None else self.output(x)
        zero = x.new_zeros(())
        return logits, MoELosses(torch.stack(aux).sum() if aux else zero,
                                 torch.stack(z).sum() if z else zero)

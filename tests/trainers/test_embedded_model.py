"""The embedded model: parameter count = the `exact` accounting; MoE routing is correct."""

from __future__ import annotations

import pytest

from sweep.accounting import param_counts
from sweep.arch import MoEArch
from tests.lazy import LazyModule

torch = LazyModule("torch")  # imported by the tests that run (tests/lazy.py)
embedded = LazyModule("trainers.embedded.model")

ARCHS = [
    # the demo family's L2-h64 member
    MoEArch(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=171,
            moe_ffn_hidden_size=32, num_experts=8, moe_router_topk=2, shared_expert_size=32,
            vocab_size=256, seq_length=128),
    # FLAME-MoE's sweep shape L6-h256 (64 experts, top-6, shared 2x expert FFN)
    MoEArch(num_layers=6, hidden_size=256, num_attention_heads=16, ffn_hidden_size=1368,
            moe_ffn_hidden_size=176, num_experts=64, moe_router_topk=6, shared_expert_size=352),
    # no shared expert, two dense layers, tied embeddings
    MoEArch(num_layers=4, hidden_size=96, num_attention_heads=6, ffn_hidden_size=256,
            moe_ffn_hidden_size=48, num_experts=4, moe_router_topk=1, shared_expert_size=0,
            first_dense_layers=2, vocab_size=1000, seq_length=64, tie_embeddings=True),
]


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"L{a.num_layers}-h{a.hidden_size}")
def test_parameter_count_is_exact_accounting(arch):
    with torch.device("meta"):  # no memory for the 70M-parameter FLAME shape
        model = embedded.MoEDecoder(arch)
    assert sum(p.numel() for p in model.parameters()) == param_counts(arch, "exact").total


def test_batched_experts_match_per_token_reference():
    torch.manual_seed(0)
    arch = ARCHS[0]
    moe = embedded.MoE(arch)
    for p in (moe.w_gate_up, moe.w_down):
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(3, 10, arch.hidden_size)
    out, aux, z = moe(x)
    flat = x.reshape(-1, arch.hidden_size)
    probs = moe.router(flat).softmax(-1)
    want = moe.shared(flat).clone()
    for t in range(flat.shape[0]):  # the definition, one token and one expert at a time
        weights, experts = probs[t].topk(arch.moe_router_topk)
        for w, e in zip(weights, experts):
            gate, up = (flat[t] @ moe.w_gate_up[e]).chunk(2)
            want[t] += w * ((torch.nn.functional.silu(gate) * up) @ moe.w_down[e])
    torch.testing.assert_close(out.reshape(-1, arch.hidden_size), want, rtol=1e-5, atol=1e-6)
    # Switch Transformer's loss (Fedus et al. 2021, eq. 4): E . sum_e f_e . P_e, f_e the share
    # of routed assignments sent to e, P_e the mean router probability of e.
    chosen = probs.topk(arch.moe_router_topk).indices.flatten()
    share = torch.bincount(chosen, minlength=arch.num_experts) / chosen.numel()
    assert aux.item() == pytest.approx(arch.num_experts * (share * probs.mean(0)).sum().item(),
                                       rel=1e-5)
    logits = moe.router(flat)
    assert z.item() == pytest.approx(torch.logsumexp(logits, -1).square().mean().item(), rel=1e-5)


def test_balanced_router_gives_unit_aux_loss():
    arch = ARCHS[0]
    moe = embedded.MoE(arch)
    torch.nn.init.zeros_(moe.router.weight)  # uniform probabilities
    x = torch.randn(1, 8 * arch.num_experts, arch.hidden_size)
    _, aux, z = moe(x)  # uniform probabilities: 1 whatever the tie-breaking sends where
    assert aux.item() == pytest.approx(1.0, rel=1e-5)
    assert z.item() == pytest.approx(torch.log(torch.tensor(8.0)).item() ** 2, rel=1e-5)

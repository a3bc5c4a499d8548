"""The embedded model's routing tally: what a window reports for a forced, a uniform and a
learned router; evaluation passes are not counted; the forward pass is unchanged."""

from __future__ import annotations

import math

import pytest

from sweep.arch import MoEArch
from tests.lazy import LazyModule

torch = LazyModule("torch")  # imported by the tests that run (tests/lazy.py)
embedded = LazyModule("trainers.embedded.model")

ARCH = MoEArch(num_layers=3, hidden_size=32, num_attention_heads=4, ffn_hidden_size=86,
               moe_ffn_hidden_size=16, num_experts=8, moe_router_topk=2, shared_expert_size=16,
               first_dense_layers=1, vocab_size=256, seq_length=32)


def _moe(seed: int = 0) -> embedded.MoE:
    torch.manual_seed(seed)
    moe = embedded.MoE(ARCH)
    for p in (moe.w_gate_up, moe.w_down):
        torch.nn.init.normal_(p, std=0.1)
    torch.nn.init.normal_(moe.router.weight, std=0.5)
    return moe


def test_router_forced_onto_two_experts():
    moe = _moe()
    router = torch.nn.Linear(ARCH.hidden_size, ARCH.num_experts, bias=True)
    with torch.no_grad():
        router.weight.zero_()
        router.bias.copy_(torch.tensor([5.0, 4.0, 0, 0, 0, 0, 0, 0]))
    moe.router = router
    for _ in range(3):
        moe(torch.randn(2, 16, ARCH.hidden_size))
    got = moe.tally.window()
    assert got["steps"] == 3
    assert got["expert_fraction"] == pytest.approx([0.5, 0.5] + [0.0] * 6)
    assert got["load_max_mean"] == pytest.approx(4.0)  # E / k
    assert got["step_load_max_mean"] == pytest.approx(4.0)
    p = torch.tensor([5.0, 4.0, 0, 0, 0, 0, 0, 0]).softmax(0)
    assert got["aux_loss"] == pytest.approx(8 * 0.5 * float(p[0] + p[1]), rel=1e-5)
    assert got["entropy"] == pytest.approx(float(torch.special.entr(p).sum()) / math.log(8),
                                           rel=1e-5)


def test_uniform_router_is_undecided_but_its_load_says_collapsed():
    # zero router weights: uniform probabilities (entropy 1, aux loss 1: the aux loss cannot
    # see it), yet top-k ties send every token to the same two experts
    moe = _moe()
    torch.nn.init.zeros_(moe.router.weight)
    moe(torch.randn(1, 64, ARCH.hidden_size))
    got = moe.tally.window()
    assert got["entropy"] == pytest.approx(1.0) and got["aux_loss"] == pytest.approx(1.0)
    assert got["load_max_mean"] == pytest.approx(4.0) and min(got["expert_fraction"]) == 0.0


def test_window_sums_steps_resets_and_round_trips_through_a_checkpoint():
    moe = _moe()
    xs = [torch.randn(2, 16, ARCH.hidden_size) for _ in range(4)]
    counts = torch.zeros(ARCH.num_experts)
    for x in xs[:2]:
        moe(x)
        chosen = moe.router(x.reshape(-1, ARCH.hidden_size)).topk(2, dim=-1).indices
        counts += torch.bincount(chosen.flatten(), minlength=8)
    saved = moe.tally.state()
    assert moe.tally.window()["expert_fraction"] == pytest.approx((counts / counts.sum()).tolist())
    for x in xs[2:]:
        moe(x)
    whole = moe.tally.window()
    other = _moe()
    other.tally.load(saved)  # a resumed run: the open window from the checkpoint
    for x in xs[2:]:
        other(x)
    assert other.tally.window() == whole
    moe.tally.reset()
    assert moe.tally.window() is None


def test_evaluation_passes_are_not_counted_and_outputs_are_unchanged():
    model = embedded.MoEDecoder(ARCH)
    tokens = torch.randint(0, 256, (2, 32))
    model.eval()
    with torch.no_grad():
        logits, losses = model(tokens)
    assert [t.window() for t in model.tallies().values()] == [None, None]
    model.train()
    again, losses2 = model(tokens)
    assert torch.equal(again, logits) and torch.equal(losses2.aux, losses.aux)
    assert list(model.tallies()) == [1, 2]  # layer 0 is dense
    assert all(t.window()["steps"] == 1 for t in model.tallies().values())
    assert "tally" not in "".join(model.state_dict())  # checkpoints' model state unchanged


def test_training_steps_compute_the_same_with_and_without_the_tally(monkeypatch):
    """The tally only reads: three AdamW steps end with bit-identical parameters and losses."""
    def steps() -> tuple[list[float], list[torch.Tensor]]:
        torch.manual_seed(1)
        model = embedded.MoEDecoder(ARCH)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        tokens = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(2))
        losses = []
        for _ in range(3):
            logits, router = model(tokens)
            loss = torch.nn.functional.cross_entropy(logits.view(-1, 256), tokens.view(-1))
            loss = loss + 0.01 * router.aux + 1e-3 * router.z
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, [p.detach().clone() for p in model.parameters()]

    with_tally = steps()
    monkeypatch.setattr(embedded.RouterTally, "add", lambda *args, **kwargs: None)
    without = steps()
    assert with_tally[0] == without[0]
    assert all(torch.equal(a, b) for a, b in zip(with_tally[1], without[1]))

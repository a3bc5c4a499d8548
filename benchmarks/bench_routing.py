"""Cost of the embedded trainer's routing tally: the training step with the tally (as it runs)
against the same step with ``RouterTally.add`` made a no-op, interleaved in one process on the
same model and data (a shared machine's drift hits both alike); the minimum of the rounds.
Also the tally alone (``RouterTally.add`` on one step's router outputs, x the MoE layers) over
the step's time: the small, steady number to read on a busy machine.

    .venv/bin/python benchmarks/bench_routing.py [--threads 1] [--steps 8] [--rounds 5]

The sizes and recipe are bench_trainer.py's. Prints seconds per step and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from bench_trainer import SIZES, arch_for, common_arguments, loop_for, prepare  # noqa: E402

from trainers.embedded.model import RouterTally  # noqa: E402
from trainers.embedded.train import _Loop  # noqa: E402


def timed(loop: _Loop, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        loop._train_step()
    return (time.perf_counter() - start) / steps


def tally_seconds(arch, tokens: int, calls: int = 50, rounds: int = 5) -> float:
    """Seconds of ``RouterTally.add`` per training step: one call per MoE layer."""
    tally = RouterTally(arch.num_experts, arch.moe_router_topk)
    probs = torch.randn(tokens, arch.num_experts).softmax(-1)
    counts = torch.bincount(probs.topk(arch.moe_router_topk).indices.flatten(),
                            minlength=arch.num_experts)
    aux, z = torch.tensor(1.0), torch.tensor(2.0)
    best = min(_calls(tally, probs, counts, aux, z, calls) for _ in range(rounds))
    return best * arch.num_moe_layers


def _calls(tally, probs, counts, aux, z, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        tally.add(probs, counts, aux, z)
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cache = prepare(args)
    table = Table(title=f"routing tally cost, {args.threads} thread(s), batch {args.batch}x128, "
                        f"min of {args.rounds} rounds of {args.steps} steps")
    for col in ("arch", "s/step with tally", "s/step without", "ratio", "tally alone / step"):
        table.add_column(col, justify="right")
    real_add = RouterTally.add
    for layers, hidden, heads in SIZES:
        total = 2 + 2 * args.rounds * args.steps
        with tempfile.TemporaryDirectory() as tmp:
            loop = loop_for(arch_for(layers, hidden, heads), total, args.batch, cache, Path(tmp))
            timed(loop, 2)  # warm-up
            on, off = [], []
            for _ in range(args.rounds):
                on.append(timed(loop, args.steps))
                RouterTally.add = lambda *a, **k: None
                try:
                    off.append(timed(loop, args.steps))
                finally:
                    RouterTally.add = real_add
        alone = tally_seconds(arch_for(layers, hidden, heads), args.batch * 128)
        table.add_row(f"L{layers}-h{hidden}", f"{min(on):.4f}", f"{min(off):.4f}",
                      f"{min(on) / min(off):.3f}", f"{alone / min(off):.2%}")
    Console().print(table)


if __name__ == "__main__":
    main()

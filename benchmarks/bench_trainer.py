"""Embedded trainer speed: tokens/s and achieved model FLOP/s for 3 sizes, against the dense
matmul FLOP/s measured in the same run on the same threads (MFU). Target: >= 30% MFU for models
with >= 1M active parameters.

    .venv/bin/python benchmarks/bench_trainer.py [--threads 1] [--steps 12] [--batch 16]

Model FLOPs per token (PaLM, Chowdhery et al. 2022, appendix B): 6 x (active parameters that
multiply: everything but the input embedding lookup) + 12.L.h.seq for attention's score and
value products. Peak: the best fwd+bwd FLOP/s of float32 matmuls of a few square sizes.
Timings are wall clock: run it on an idle machine, or read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from sweep.accounting import param_counts
from sweep.arch import MoEArch
from sweep.planrow import PlanRow
from trainers.embedded.train import _Loop
from trainers.settings import EmbeddedConfig, Recipe

SIZES = [  # (layers, hidden, heads): demo scale, then two >= 1M active parameters
    (2, 128, 4),
    (4, 256, 4),
    (4, 384, 6),
]
RECIPE = dict(lr=1e-3, min_lr=1e-4, warmup_fraction=0.0, decay_fraction=0.1,
              decay_style="linear", weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95,
              clip_grad=1.0, init_std=0.02, aux_loss_coeff=0.01, z_loss_coeff=1e-3, seed=1)


def arch_for(layers: int, hidden: int, heads: int) -> MoEArch:
    """The demo family's shape rules (conf/family/demo.yaml) at another size."""
    expert = hidden // 2
    return MoEArch(num_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                   ffn_hidden_size=round(2.671875 * hidden), moe_ffn_hidden_size=expert,
                   num_experts=8, moe_router_topk=2, shared_expert_size=expert,
                   vocab_size=256, seq_length=128)


def model_flops_per_token(arch: MoEArch) -> float:
    matmul_params = param_counts(arch, "exact").active - arch.vocab_size * arch.hidden_size
    return 6.0 * matmul_params + 12.0 * arch.num_layers * arch.hidden_size * arch.seq_length


def matmul_peak(repeats: int = 5) -> float:
    """Best fwd+bwd FLOP/s of square float32 matmuls (the machine's dense rate)."""
    best = 0.0
    for n in (256, 512, 1024):
        a = torch.randn(n, n, requires_grad=True)
        b = torch.randn(n, n, requires_grad=True)
        (a @ b).sum().backward()
        start = time.perf_counter()
        for _ in range(repeats):
            (a @ b).sum().backward()
        best = max(best, 6.0 * n ** 3 * repeats / (time.perf_counter() - start))
    return best


def loop_for(arch: MoEArch, steps: int, batch: int, cache: Path, tmp: Path) -> _Loop:
    """The embedded trainer's own loop for ``steps`` steps of ``arch`` on real batches."""
    exact = param_counts(arch, "exact")
    counts = {f"n_{k}_{c}{e}": 0 for k in ("active", "total") for c in ("exact", "flame")
              for e in ("", "_nonemb")} | {"n_active_exact": exact.active}
    spec = PlanRow(run_id="bench", budget=0.0, member="bench", arch=arch, micro_batch_size=None,
                   global_batch_size=batch, counts=counts, accounting="exact",
                   flops_formula="6n", flops_per_token=6.0 * exact.active,
                   tokens=steps * batch * arch.seq_length, train_iters=steps,
                   gpu_hours=0.0)
    return _Loop(spec, Recipe(**RECIPE), EmbeddedConfig(cache_dir=str(cache), eval_iters=1), tmp)


def common_arguments(parser: argparse.ArgumentParser) -> None:
    """--threads and --cache-dir (and --batch), as both trainer benchmarks take them."""
    parser.add_argument("--threads", type=int, default=int(os.environ.get("FLAME_THREADS", 1)))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--cache-dir", type=Path, default=None)


def prepare(args: argparse.Namespace) -> Path:
    """Torch on ``args.threads`` threads with denormals flushed; the corpus cache folder."""
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    return args.cache_dir or Path(os.path.expanduser("~/.cache/flame/data"))


def train_rate(arch: MoEArch, steps: int, batch: int, cache: Path) -> float:
    """Tokens/s of the embedded trainer's own training step on real batches."""
    with tempfile.TemporaryDirectory() as tmp:
        loop = loop_for(arch, steps + 2, batch, cache, Path(tmp))
        for _ in range(2):  # warm-up: allocator, first-touch
            loop._train_step()
        start = time.perf_counter()
        for _ in range(steps):
            loop._train_step()
        return steps * batch * arch.seq_length / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    cache = prepare(args)
    peak = matmul_peak()
    table = Table(title=f"embedded trainer, {args.threads} thread(s), batch {args.batch}x128; "
                        f"dense matmul peak {peak / 1e9:.1f} GFLOP/s")
    for col in ("arch", "N active", "N total", "tokens/s", "model GFLOP/s", "MFU"):
        table.add_column(col, justify="right")
    for layers, hidden, heads in SIZES:
        arch = arch_for(layers, hidden, heads)
        rate = train_rate(arch, args.steps, args.batch, cache)
        achieved = rate * model_flops_per_token(arch)
        counts = param_counts(arch, "exact")
        table.add_row(f"L{layers}-h{hidden}", f"{counts.active / 1e6:.2f}M",
                      f"{counts.total / 1e6:.2f}M", f"{rate:,.0f}", f"{achieved / 1e9:.1f}",
                      f"{achieved / peak:.0%}")
    Console().print(table)


if __name__ == "__main__":
    main()

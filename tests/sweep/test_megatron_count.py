"""`exact` accounting equals the parameter count of megatron-core's real GPTModel."""

import json
import subprocess
import sys
from pathlib import Path

from sweep.accounting import param_counts
from sweep.arch import MoEArch

ARCHS = [
    # A FLAME-MoE sweep shape (reference grid: 73,069,824 exact total).
    MoEArch(6, 256, 16, 1368, 176, 64, 6, 352),
    # Two dense layers first, tied embeddings, odd sizes.
    MoEArch(3, 96, 4, 200, 40, 8, 2, 80, first_dense_layers=2, vocab_size=1000,
            seq_length=128, tie_embeddings=True),
    # No dense layer, no shared expert, top-1 routing.
    MoEArch(2, 48, 3, 96, 24, 4, 1, 0, first_dense_layers=0, vocab_size=512, seq_length=64),
]


def test_exact_count_matches_megatron_gptmodel():
    script = Path(__file__).with_name("megatron_count.py")
    payload = json.dumps([a.to_dict() for a in ARCHS])
    out = subprocess.run([sys.executable, str(script), payload], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts == [param_counts(a, "exact").total for a in ARCHS]
    assert counts[0] == 73_069_824

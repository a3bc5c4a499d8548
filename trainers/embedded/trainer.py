"""The embedded trainer as a ``Trainer``: torch is imported only when a job trains."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from trainers.base import BaseTrainer
from trainers.readers import Routing, read_routing_record
from trainers.settings import EmbeddedConfig
from trainers.signals import DeferredSignals


class EmbeddedTrainer(BaseTrainer):
    """The FLAME-MoE architecture in plain PyTorch on CPU (``trainers.embedded.train``)."""

    name: ClassVar[str] = "embedded"
    config: ClassVar[type] = EmbeddedConfig
    numerics_version: ClassVar[int] = 1
    """1: the losses of flame up to 690ed83 (tests/trainers/data/golden_embedded.json)."""
    branch_file: ClassVar[str | None] = "iter_{step:07d}.pt"

    def train(self, row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path,
              signals: DeferredSignals) -> dict[str, Any]:
        from trainers.embedded.train import train

        return train(row, cfg, run_dir, signals)

    def routing(self, run_dir: Path) -> Routing | None:
        """Its per-layer tally (metrics.jsonl ``kind: routing`` at each evaluation)."""
        return read_routing_record(Path(run_dir))

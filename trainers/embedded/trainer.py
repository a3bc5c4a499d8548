"""The embedded trainer as a ``Trainer``: torch is imported only when a job trains."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from sweep.io import CHECKPOINTS_DIR
from trainers.base import BaseTrainer
from trainers.embedded.eval_tasks import COMPLETION
from trainers.lm_eval_tasks import FINAL, missing_checkpoint
from trainers.readers import Routing, read_routing_record
from trainers.settings import EmbeddedConfig, trainer_config
from trainers.signals import DeferredSignals


class EmbeddedTrainer(BaseTrainer):
    """The FLAME-MoE architecture in plain PyTorch on CPU (``trainers.embedded.train``)."""

    name: ClassVar[str] = "embedded"
    config: ClassVar[type] = EmbeddedConfig
    numerics_version: ClassVar[int] = 1
    """1: the losses of flame up to 690ed83 (tests/trainers/data/golden_embedded.json)."""
    branch_file: ClassVar[str | None] = "iter_{step:07d}.pt"
    eval_tasks: ClassVar[tuple[str, ...]] = (COMPLETION,)

    def train(self, row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path,
              signals: DeferredSignals) -> dict[str, Any]:
        from trainers.embedded.train import train

        return train(row, cfg, run_dir, signals)

    def sample_order(self, trainer_cfg: Any) -> Any:
        """megatron-core's GPTDataset over its corpus (trainer.data), as Megatron's."""
        from trainers.data_order import embedded_order

        return embedded_order(trainer_config(trainer_cfg))

    def routing(self, run_dir: Path) -> Routing | None:
        """Its per-layer tally (metrics.jsonl ``kind: routing`` at each evaluation)."""
        return read_routing_record(Path(run_dir))

    def eval_checkpoints(self, run_dir: Path, every: bool) -> list[tuple[str, Path, int | None]]:
        """``latest.pt`` (final), and with ``every`` the ``iter_<step>.pt`` it kept."""
        folder = Path(run_dir) / CHECKPOINTS_DIR
        final = folder / "latest.pt"
        if not final.exists():
            raise missing_checkpoint(run_dir, final)
        kept = sorted(folder.glob("iter_*.pt")) if every else []
        return [(p.stem, p, int(p.stem[5:])) for p in kept] + [(FINAL, final, None)]

    def evaluate(self, target: Any, tasks: Sequence[str], trainer_cfg: Mapping[str, Any],
                 limit: int | None, batch_size: int) -> str:
        """lm-eval's evaluator over the checkpoint as an lm-eval LM (``lm_eval_adapter``)."""
        from trainers.embedded.lm_eval_adapter import evaluate_checkpoint

        return evaluate_checkpoint(target, tasks, limit, batch_size)

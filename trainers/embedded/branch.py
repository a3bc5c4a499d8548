"""WSD cooldown branches in the embedded trainer (issue 14): a trunk keeps its state at each
branch step; a branch's first start takes that state over, bit for bit.

What carries over is everything that decides the next step: model, AdamW moments and step
counts, RNG states and the iteration (the data position: sample index = iteration x batch, and
megatron-core's GPTDataset gives the same sample i whatever length a run requests, as long as
it stays within one epoch; tests/trainers/test_embedded_branch.py checks both). What does not:
the trunk's log offsets, its partial logging window, its last validation loss and routing
windows; the branch's train.log and metrics.jsonl start at the branch step with a note.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweep.planrow import PlanRow
from trainers.artifacts import branch_checkpoint, parent_run_dir
from trainers.embedded import checkpoint

TRAINER = "embedded"


def keep(ckpt_dir: Path, spec: PlanRow, state: dict[str, Any]) -> None:
    """A run at one of its ``save_steps`` (a trunk's branch steps; a release run's tenths):
    write ``state`` to ``iter_<step>.pt`` (atomically, and before latest.pt, so a run killed in
    between redoes the step and writes it again)."""
    step = int(state["iteration"])
    if step not in spec.save_steps:
        return
    checkpoint.write(branch_checkpoint(ckpt_dir.parent, step, TRAINER), state)


def trunk_state(spec: PlanRow, ckpt_dir: Path) -> dict[str, Any] | None:
    """For a branch without a checkpoint of its own, the state to start from: its trunk's at
    ``branch_step``, as this branch's (its run_id, no log offsets: its logs start empty). None
    for any other run."""
    if spec.role != "branch":
        return None
    path = branch_checkpoint(parent_run_dir(ckpt_dir.parent, spec.parent), spec.branch_step,
                             TRAINER)
    if not path.is_file():
        raise RuntimeError(f"branch {spec.run_id}: its trunk {spec.parent} has no checkpoint at "
                           f"iteration {spec.branch_step} ({path}); run the trunk first")
    state = checkpoint.read(path)
    if state.get("run_id") != spec.parent or state.get("iteration") != spec.branch_step:
        raise RuntimeError(f"{path}: holds run {state.get('run_id')} at iteration "
                           f"{state.get('iteration')}, not trunk {spec.parent} at "
                           f"{spec.branch_step}; re-run the trunk")
    fresh = dict.fromkeys(state["log_accumulators"], 0.0) | {"n": 0}
    return state | {"run_id": spec.run_id, "offsets": {}, "log_accumulators": fresh,
                    "val_loss": None, "routing_windows": {}, "routing_last": None,
                    "note": f" branching from trunk {spec.parent} at iteration "
                            f"{spec.branch_step}"}

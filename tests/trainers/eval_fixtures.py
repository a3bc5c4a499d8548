"""Sweeps whose runs look trained, for ``flame eval``'s tests: real plans from the real planner,
each completed run with a real checkpoint of its trainer's format (an untrained embedded model;
a Megatron tracker and iteration folders), and its ledger entry completed."""

from __future__ import annotations

from pathlib import Path

from sweep.config import read_plan
from sweep.io import CHECKPOINTS_DIR, run_dir
from sweep.records import RunRecord, write_record
from tests.jobs.conftest import make_sweep

# The demo's byte-level family at one tiny budget: 4 sizes, seq_length 128.
EMBEDDED = ("experiment=demo", "family.members=null",
            "family.grid={hidden_size:[8,16],num_layers:[2]}", "budgets.flops=[3e10]",
            "planner.seeds=1")


def embedded_sweep(sweep_dir: Path, completed: int = 2, *overrides: str) -> list[str]:
    """An embedded sweep with its first ``completed`` runs completed at a checkpoint (an
    untrained model, seeded per run); returns the completed run ids."""
    import torch  # only where it runs (tests/lazy.py)

    from trainers.embedded import checkpoint
    from trainers.embedded.model import MoEDecoder

    make_sweep(sweep_dir, *EMBEDDED, *overrides, trainer="embedded")
    done = []
    for n, row in enumerate(read_plan(sweep_dir)[:completed]):
        torch.manual_seed(n)
        model = MoEDecoder(row.arch)
        folder = run_dir(sweep_dir, row.run_id) / CHECKPOINTS_DIR
        folder.mkdir(parents=True)
        checkpoint.save(folder, {"model": model.state_dict(), "run_id": row.run_id,
                                 "iteration": row.train_iters})
        write_record(sweep_dir, RunRecord(run_id=row.run_id, state="completed"))
        done.append(row.run_id)
    return done


def megatron_sweep(sweep_dir: Path, completed: int = 1, steps: tuple[int, ...] = (5, 10),
                   *overrides: str) -> list[str]:
    """A Megatron sweep with its first ``completed`` runs completed: iteration folders and the
    tracker at the last step, as Megatron leaves them (core_v0.16.1 checkpointing.py:277-281)."""
    make_sweep(sweep_dir, *overrides, trainer="megatron")
    done = []
    for row in read_plan(sweep_dir)[:completed]:
        folder = run_dir(sweep_dir, row.run_id) / CHECKPOINTS_DIR
        for step in steps:
            (folder / f"iter_{step:07d}").mkdir(parents=True)
        (folder / "latest_checkpointed_iteration.txt").write_text(f"{steps[-1]}\n")
        write_record(sweep_dir, RunRecord(run_id=row.run_id, state="completed"))
        done.append(row.run_id)
    return done

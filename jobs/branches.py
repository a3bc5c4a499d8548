"""WSD cooldown branches in jobs/ (``planner.strategy=branches``): when a branch may start.

A branch starts from its trunk's checkpoint at ``branch_step`` (its trainer's
``branch_ready`` says whether that checkpoint is complete). Until then it waits: locally a worker
skips it and takes other work (``jobs.task.claim_next``); on SLURM its array depends on its
trunk's task (``afterok``, ``jobs.launch``). A wait is *live* while the trunk is queued or
running, *dead* once only a person can end it (the trunk failed, timed out, was cancelled or
never launched: ``flame resubmit <trunk>`` trains it again and resubmits its waiting branches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs import ledger
from jobs.sweepdir import read_config
from sweep.errors import ConfigError
from sweep.io import run_dir
from sweep.planrow import PlanRow
from trainers.base import Trainer
from trainers.registry import trainer_for

QUEUED, RUNNING = "queued", "running"
"""How a live trunk is named in a wait (``flame status``): waiting for the scheduler, training."""
NO_CHECKPOINT = "completed without the checkpoint"
"""A trunk that ended ``completed`` but has no checkpoint at the branch's step."""
WITH_TRUNK = "cancelled with its trunk"
"""The error_tail of a waiting branch ``flame cancel <trunk>`` cancelled too (resubmit of the
trunk brings it back)."""
_TRUNK_WORD = {ledger.SUBMITTED: QUEUED, ledger.RUNNING: RUNNING,
               ledger.PLANNED: "never launched", ledger.CORRUPT: "state.json unreadable"}


@dataclass(frozen=True)
class Wait:
    """Why a branch that has not started cannot start yet."""

    trunk: str
    """The trunk's run_id."""
    trunk_state: str
    """``queued`` | ``running`` | the trunk's end state (``failed``, ...) | ``never launched``
    | ``completed without the checkpoint`` | ``state.json unreadable``."""
    step: int
    """The branch step whose checkpoint it waits for."""

    @property
    def live(self) -> bool:
        """The trunk is queued or training: the checkpoint may still come without anyone's help."""
        return self.trunk_state in (QUEUED, RUNNING)

    def line(self) -> str:
        """``waiting for trunk <id>: failed`` (what ``flame status`` prints)."""
        return f"waiting for trunk {self.trunk}: {self.trunk_state}"

    def fix(self) -> str:
        """What ends a dead wait (empty for a live one)."""
        if self.live:
            return ""
        if self.trunk_state == _TRUNK_WORD[ledger.PLANNED]:
            return "`flame launch` launches it and them"
        if self.trunk_state == NO_CHECKPOINT:
            return (f"its checkpoint at iteration {self.step} is gone: delete "
                    f"runs/{self.trunk}/state.json and its checkpoints/ to train it again")
        if self.trunk_state == _TRUNK_WORD[ledger.CORRUPT]:
            return f"repair or delete runs/{self.trunk}/state.json"
        return f"`flame resubmit {self.trunk}` trains it again and resubmits them"


def has_branches(rows: Iterable[PlanRow]) -> bool:
    return any(row.role == "branch" for row in rows)


def sweep_trainer(sweep_dir: Path) -> Trainer:
    """The sweep's trainer (config.yaml): where its trunks keep their checkpoints."""
    return trainer_for(read_config(sweep_dir)["trainer"])


def ready(sweep_dir: Path, row: PlanRow, trainer: Trainer) -> bool:
    """Whether the branch ``row`` may start: its trunk's checkpoint at its step is complete."""
    return trainer.branch_ready(run_dir(sweep_dir, row.parent), row.branch_step)


def trunk_word(rec: ledger.RunRecord | None, corrupt: bool = False) -> str:
    """The trunk's state as a wait names it."""
    if corrupt:
        return _TRUNK_WORD[ledger.CORRUPT]
    state = rec.state if rec is not None else ledger.PLANNED
    return NO_CHECKPOINT if state == ledger.COMPLETED else _TRUNK_WORD.get(state, state)


def waits(sweep_dir: Path, rows: list[PlanRow], records: dict[str, ledger.RunRecord],
          corrupt: Iterable[str] = (), trainer: Trainer | None = None) -> dict[str, Wait]:
    """Branch run_id -> ``Wait``, for every branch not started yet (planned or queued) whose
    trunk's checkpoint is not there. Reads config.yaml only if the plan has branches."""
    if not has_branches(rows):
        return {}
    trainer, corrupt = trainer or sweep_trainer(sweep_dir), frozenset(corrupt)
    out = {}
    for row in rows:
        if row.role != "branch" or row.run_id in corrupt:
            continue
        state = ledger.state_of(records, row.run_id)
        if state not in (ledger.PLANNED, ledger.SUBMITTED) or ready(sweep_dir, row, trainer):
            continue
        out[row.run_id] = Wait(row.parent, trunk_word(records.get(row.parent),
                                                      row.parent in corrupt), row.branch_step)
    return out


def branches_of(rows: Iterable[PlanRow], trunks: Iterable[str]) -> dict[str, list[str]]:
    """Trunk run_id -> its branches' run_ids (plan order)."""
    wanted: dict[str, list[str]] = {t: [] for t in trunks}
    for row in rows:
        if row.role == "branch" and row.parent in wanted:
            wanted[row.parent].append(row.run_id)
    return wanted


def trunks_first(rows: Iterable[PlanRow],
                 then: Callable[[PlanRow], Any] | None = None) -> list[PlanRow]:
    """The rows with the trunks first: a trunk's checkpoints unlock its branches, so a SLURM
    launch puts trunks at the head of its first arrays (``jobs.executors.slurm.arrays``) and a
    local worker claims them before anything else (``jobs.task.claim_next``, ``then`` = largest
    first). ``then``: the order within the trunks and within the others (default: as given)."""
    return sorted(rows, key=lambda row: (row.role != "trunk", then(row) if then else 0))


@dataclass(frozen=True)
class Resubmit:
    """What ``flame resubmit`` does with trunks and branches."""

    chosen: list[str]
    """The runs asked for, less (``--failed``) branches that could not start."""
    along: list[str]
    """Branches resubmitted with their trunk: waiting for it (their old jobs are cancelled:
    their dependency names the failed one), cancelled with it, or failed for want of its
    checkpoint."""
    notes: list[str]
    """One line per branch left out (``--failed``): its trunk will not train."""


def resubmit_set(sweep_dir: Path, rows: list[PlanRow], records: dict[str, ledger.RunRecord],
                 chosen: list[str], named: bool) -> Resubmit:
    """``chosen`` with the branches that come along with its trunks. A chosen branch whose
    trunk neither has its checkpoint, nor is queued or training, nor is chosen too is a
    ConfigError when named (nothing is reset yet), left out with a note under ``--failed``."""
    if not has_branches(rows):
        return Resubmit(list(chosen), [], [])
    trainer, picked = sweep_trainer(sweep_dir), set(chosen)
    by_id = {row.run_id: row for row in rows}
    kept, notes = [], []
    for run_id in chosen:
        row = by_id[run_id]
        trunk = ledger.state_of(records, row.parent)
        if (row.role != "branch" or row.parent in picked or trunk in ledger.ACTIVE
                or ready(sweep_dir, row, trainer)):
            kept.append(run_id)
            continue
        how = ("`flame launch` launches it" if trunk == ledger.PLANNED
               else f"`flame resubmit {row.parent} {run_id}` resubmits both")
        line = (f"branch {run_id} starts from its trunk {row.parent}'s checkpoint at iteration "
                f"{row.branch_step}, and the trunk is {trunk_word(records.get(row.parent))}: {how}")
        if named:
            raise ConfigError(line)
        notes.append(line)
    along = [rid for trunk, ids in branches_of(rows, picked).items() for rid in ids
             if rid not in picked and _comes_along(sweep_dir, by_id[rid], records, trainer)]
    return Resubmit(kept, along, notes)


def _comes_along(sweep_dir: Path, row: PlanRow, records: dict[str, ledger.RunRecord],
                 trainer: Trainer) -> bool:
    """A branch resubmitted with its trunk: not started for want of its checkpoint (queued),
    cancelled with its trunk, or failed because the trunk had no checkpoint."""
    rec = records.get(row.run_id) or ledger.new_record(row.run_id)
    state, tail = rec.state, rec.error_tail or ""
    if state == ledger.SUBMITTED:
        return not ready(sweep_dir, row, trainer)
    return ((state == ledger.CANCELLED and tail.startswith(WITH_TRUNK))
            or (state == ledger.FAILED and f"its trunk {row.parent} " in tail))

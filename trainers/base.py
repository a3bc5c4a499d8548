"""What every trainer is to the rest of flame: the ``Trainer`` protocol, and ``BaseTrainer``
with the behaviour most trainers share.

A trainer is found by its config's ``trainer.name`` (``trainers.registry.trainer_for``); jobs/
and analysis/ ask it, never its name: what a job runs (``train``, and ``run_node`` on the other
nodes of a multi-node job), the job shape it needs, the checks and files before a launch, where
a trunk keeps its checkpoints for its branches and when a branch may start, and how collect
reads a run (loss evidence, routing, throughput). Every trainer writes the same artefacts
(train.log in Megatron's format, metrics.jsonl: ``trainers.artifacts.RunLog``), so the default
readers serve any trainer that does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from sweep.errors import ConfigError
from sweep.io import CHECKPOINTS_DIR, METRICS_JSONL, TRAIN_LOG
from sweep.planrow import PlanRow
from trainers.readers import (
    Evidence,
    Routing,
    Throughput,
    read_metrics,
    read_tensorboard,
    read_train_log,
)
from trainers.signals import DeferredSignals

Reader = Callable[[], Evidence | None]
"""One source of a run's losses, read when called (collect stops at the first final one)."""


@dataclass(frozen=True)
class JobShape:
    """The nodes and GPUs one run's job takes, when the trainer decides them."""

    nodes: int
    """Nodes per job (one task each)."""
    gpus_per_node: int
    """GPUs (ranks) per node."""


@runtime_checkable
class Trainer(Protocol):
    """One trainer: its config, what a job runs, its artefacts, and how they are read."""

    name: str
    """``trainer.name`` in a config (a built-in's short name, or ``package.module:attr``)."""
    config: type
    """The ``trainer`` group's dataclass (fields marked ``result()`` / ``operational()``)."""
    numerics_version: int
    """The version of this trainer's numbers: bumped when a change of the code changes the
    losses it computes on purpose (see docs/numerics.md); a run's summary records it."""
    artefacts: tuple[str, ...]
    """The files a run writes into its run directory (besides ``checkpoints/``)."""

    def train(self, row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path,
              signals: DeferredSignals) -> dict[str, Any]:
        """Train (or resume) one run into ``run_dir``; the summary (``final_val_loss``,
        ``iterations``, ...). Defers ``signals`` to a step boundary."""
        ...

    def run_node(self, row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path) -> None:
        """Node k > 0 of a multi-node job: its share of the run (no ledger, no summary)."""
        ...

    def completed(self, run_dir: Path, train_iters: int) -> bool:
        """Whether ``run_dir`` holds the run trained to its end (a final evaluation)."""
        ...

    def job_shape(self, trainer_cfg: Any) -> JobShape | None:
        """The job shape the trainer needs (None: the cluster group's)."""
        ...

    def preflight(self, rows: list[PlanRow], config: Mapping[str, Any], todo: list[str],
                  dry_run: bool) -> list[str]:
        """Checks before a launch writes anything: a ConfigError on bad input, else notes."""
        ...

    def launch_files(self, row: PlanRow, config: Mapping[str, Any], run_dir: Path) -> list[Path]:
        """Files a launch (and a dry run) writes into a run's directory before it is submitted."""
        ...

    def check_branchable(self, recipe: Any, trainer_cfg: Any) -> None:
        """A ConfigError unless trunks and branches (``planner.strategy=branches``) work with
        this recipe and trainer config."""
        ...

    def branch_checkpoint(self, run_dir: Path, step: int) -> Path:
        """Where the trunk in ``run_dir`` keeps its checkpoint at ``step`` for its branches."""
        ...

    def branch_ready(self, run_dir: Path, step: int) -> bool:
        """Whether that checkpoint is complete (a branch at ``step`` may start)."""
        ...

    def sample_order(self, trainer_cfg: Any) -> Any:
        """How its runs order their training samples (``trainers.data_order.SampleOrder``),
        which a branch plan checks (a branch must read its straight-through run's data); None
        when it reads no corpus. ``data_order.Unreadable`` when the corpus is not readable."""
        ...

    def evidence_readers(self, run_dir: Path, train_iters: int | None,
                         seq_length: int | None) -> list[Reader]:
        """The sources of a run's losses, in collect's order of precedence."""
        ...

    def routing(self, run_dir: Path) -> Routing | None:
        """The run's routing over the last window of training (None: not reported)."""
        ...

    def throughput(self, run_dir: Path) -> Throughput | None:
        """The trainer's own speed lines (None: it reports none)."""
        ...

    def eval_checkpoints(self, run_dir: Path, every: bool) -> list[tuple[str, Path, int | None]]:
        """The checkpoints ``flame eval`` scores, as (label, checkpoint, step)."""
        ...

    def evaluate(self, target: Any, tasks: Sequence[str], trainer_cfg: Mapping[str, Any],
                 limit: int | None, batch_size: int) -> str:
        """Score one checkpoint with lm-eval; write its results JSON."""
        ...


def check_decays(recipe: Any) -> None:
    """A ConfigError unless the recipe's decay lowers the learning rate: what lets a branch
    continue its trunk's stable phase and cool down from it."""
    if recipe.min_lr >= recipe.lr:
        raise ConfigError(f"training.min_lr={recipe.min_lr} is not below training.lr="
                          f"{recipe.lr}: a branch's cooldown would not decay; set min_lr "
                          "below lr (e.g. lr/10) or use planner.strategy=independent")


class BaseTrainer:
    """Defaults for the ``Trainer`` protocol: a single-task job of the cluster's shape, no
    launch checks or files, the common artefacts and readers, branch checkpoints as one file
    named by ``branch_file`` (None: no branches), no routing or throughput."""

    name: ClassVar[str] = ""
    config: ClassVar[type] = object
    numerics_version: ClassVar[int] = 1
    artefacts: ClassVar[tuple[str, ...]] = (TRAIN_LOG, METRICS_JSONL)
    branch_file: ClassVar[str | None] = None
    """A trunk's checkpoint at a branch step, under checkpoints/ (``{step}`` formatted)."""
    eval_tasks: ClassVar[tuple[str, ...]] = ()
    """The lm-eval tasks ``flame eval`` scores by default (empty: no model to evaluate)."""
    eval_gpus: ClassVar[int] = 0
    """GPUs one evaluation job asks for (a job of one node); 0: the cluster's shape."""

    def train(self, row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path,
              signals: DeferredSignals) -> dict[str, Any]:
        raise NotImplementedError(f"trainer {self.name}: no train()")

    def run_node(self, row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path) -> None:
        raise RuntimeError(f"trainer {self.name} runs on one node; a job of several nodes has "
                           "nothing to run on the others")

    def completed(self, run_dir: Path, train_iters: int) -> bool:
        ev = read_metrics(Path(run_dir))
        return ev is not None and any(final and it >= train_iters for it, _, final in ev.evals)

    def job_shape(self, trainer_cfg: Any) -> JobShape | None:
        return None

    def preflight(self, rows: list[PlanRow], config: Mapping[str, Any], todo: list[str],
                  dry_run: bool) -> list[str]:
        return []

    def launch_files(self, row: PlanRow, config: Mapping[str, Any], run_dir: Path) -> list[Path]:
        return []

    def check_branchable(self, recipe: Any, trainer_cfg: Any) -> None:
        check_decays(recipe)

    def branch_checkpoint(self, run_dir: Path, step: int) -> Path:
        if self.branch_file is None:
            raise ValueError(f"trainer {self.name!r} keeps no branch checkpoints")
        return Path(run_dir) / CHECKPOINTS_DIR / self.branch_file.format(step=step)

    def branch_ready(self, run_dir: Path, step: int) -> bool:
        # a file that appears whole, by rename (sweep.io.atomic_writer)
        return self.branch_checkpoint(run_dir, step).is_file()

    def sample_order(self, trainer_cfg: Any) -> Any:
        return None

    def evidence_readers(self, run_dir: Path, train_iters: int | None,
                         seq_length: int | None) -> list[Reader]:
        run_dir = Path(run_dir)
        return [lambda: read_metrics(run_dir), lambda: read_train_log(run_dir, seq_length),
                lambda: read_tensorboard(run_dir, train_iters)]

    def routing(self, run_dir: Path) -> Routing | None:
        return None

    def throughput(self, run_dir: Path) -> Throughput | None:
        return None

    def eval_checkpoints(self, run_dir: Path, every: bool) -> list[tuple[str, Path, int | None]]:
        """A completed run's checkpoints to evaluate, as (label, checkpoint, step): its last
        (label ``final``), or every one it kept (``every``); a ConfigError if it is missing."""
        raise ConfigError(f"trainer={self.name}: has no model to evaluate downstream")

    def evaluate(self, target: Any, tasks: Sequence[str], trainer_cfg: Mapping[str, Any],
                 limit: int | None, batch_size: int) -> str:
        """Score one checkpoint (``target``: ``jobs.eval.EvalTarget``) on lm-eval ``tasks`` and
        write its results JSON under ``target.out``; returns what it wrote."""
        raise ConfigError(f"trainer={self.name}: has no model to evaluate downstream")

    def __repr__(self) -> str:
        return f"<trainer {self.name}>"


__all__ = ["Trainer", "BaseTrainer", "JobShape", "Reader", "check_decays"]

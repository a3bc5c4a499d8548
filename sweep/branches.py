"""WSD cooldown branches (``planner.strategy=branches``): where each branch leaves its trunk.

With a warmup-stable-decay schedule the stable phase does not depend on the run's length, so one
trunk per family member trains at the constant learning rate and each of the member's runs
branches off it, decaying over only its last ``cooldown_fraction`` of iterations (Hägele et al.
2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations": a ~20%
cooldown matches a cosine run). Pure arithmetic: the planner builds the rows from it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from sweep.errors import ConfigError

STRATEGIES = ("independent", "branches")


def cooldown_iters(train_iters: int, cooldown_fraction: float) -> int:
    """Iterations of a branch's decay before rounding its start down: round(fraction x T)."""
    return int(round(cooldown_fraction * train_iters))


def branch_step(train_iters: int, cooldown_fraction: float, multiple: int) -> int:
    """Where a branch of ``train_iters`` leaves its trunk: T - cooldown, rounded down to a
    multiple of ``multiple`` (so one checkpoint interval can hit every branch step)."""
    step = train_iters - cooldown_iters(train_iters, cooldown_fraction)
    return step // multiple * multiple


def shared_warmup(shortest_iters: int, warmup_fraction: float) -> int:
    """The warmup a trunk and all its branches share: the recipe's fraction of the shortest
    branch (at least 1 iteration when the recipe warms up at all)."""
    if warmup_fraction <= 0:
        return 0
    return max(1, int(round(warmup_fraction * shortest_iters)))


@dataclass(frozen=True)
class TrunkLayout:
    """One trunk and where its branches leave it."""

    train_iters: int
    """The trunk's length: its last branch step (it never trains past it)."""
    warmup_iters: int
    """Warmup iterations of the trunk and every branch."""
    branch_steps: tuple[int, ...]
    """Each branch's step, in the order the branches were given."""

    @property
    def save_steps(self) -> tuple[int, ...]:
        """The trunk's checkpoint steps: its branches' steps, sorted, each once."""
        return tuple(sorted(set(self.branch_steps)))


def layout(branch_iters: Sequence[int], cooldown_fraction: float, multiple: int,
           warmup_fraction: float, names: Sequence[str]) -> TrunkLayout:
    """The trunk of branches of ``branch_iters`` iterations (``names`` say which run each is,
    for the error); a branch that would leave before the warmup ends is a ConfigError."""
    steps = tuple(branch_step(t, cooldown_fraction, multiple) for t in branch_iters)
    warmup = shared_warmup(min(branch_iters), warmup_fraction)
    for name, iters, step in zip(names, branch_iters, steps):
        if step <= warmup:
            raise ConfigError(
                f"planner.cooldown_fraction={cooldown_fraction}: the branch {name} "
                f"({iters} iterations) would leave its trunk at iteration {step}, not after the "
                f"shared warmup of {warmup} (training.warmup_fraction={warmup_fraction} of the "
                f"shortest branch, {min(branch_iters)}); lower planner.cooldown_fraction, "
                "training.warmup_fraction or planner.branch_step_multiple")
    return TrunkLayout(max(steps), warmup, steps)


def unlike_trunks(rows: Sequence[Any], key: Callable[[Any], Hashable]) -> list[tuple[Any, Any]]:
    """(branch, trunk) for each branch of ``rows`` (plan rows: ``run_id``, ``role``,
    ``parent``) whose ``key`` differs from its trunk's, in plan order. A branch's first
    iterations are its trunk's, so anything the run's result depends on that the two runs
    settle each by itself (``key``: e.g. the order in which a data loader serves samples,
    which may depend on the run's length) must come out the same for both."""
    trunks = {row.run_id: row for row in rows if row.role == "trunk"}
    keys: dict[str, Hashable] = {}
    out = []
    for row in rows:
        trunk = trunks.get(row.parent) if row.role == "branch" else None
        if trunk is None:
            continue
        if trunk.run_id not in keys:
            keys[trunk.run_id] = key(trunk)
        if key(row) != keys[trunk.run_id]:
            out.append((row, trunk))
    return out

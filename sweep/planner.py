"""Budgets x architecture family -> runs: tokens, iterations, cost, constraints. Pure functions."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sweep.accounting import (
    CONVENTIONS,
    FLOPS_FORMULAS,
    ITERS_ROUNDINGS,
    flops_per_token,
    param_counts,
    train_iters,
)
from sweep.branches import STRATEGIES, cooldown_iters, layout
from sweep.errors import ConfigError
from sweep.family import Member
from sweep.planrow import PlanRow
from sweep.schema import operational, result


@dataclass
class Prior:
    """A prior compute-optimal law ``N_opt = k . C^a`` to centre each budget's sizes on."""

    k: float
    """Prefactor of the law (parameters at C = 1 FLOP)."""
    a: float
    """Exponent of the law."""
    span_log10: float
    """Keep runs with |log10(N / N_opt)| <= span_log10."""


@dataclass
class BudgetsConfig:
    """The ``budgets`` group (``conf/budgets/*.yaml``)."""

    flops: list[float] = field(default_factory=list)
    """The isoFLOP budgets C in training FLOPs (C = flops_per_token x tokens)."""


@dataclass
class PlannerConfig:
    """The ``planner`` key: how budgets become runs, and which runs are kept."""

    global_batch_size: int = 1024
    """Sequences per iteration."""
    iters_rounding: str = "ceil"
    """C / (flops_per_token . batch . seq) to whole iterations: ceil (never under budget;
    FLAME-MoE's sweep grid) or round (nearest; FLAME-MoE's released models)."""
    min_iters: int = 100
    """Runs with fewer iterations are removed (too few steps to mean much)."""
    max_tokens: float | None = None
    """Dataset size: runs needing more tokens are removed (no repetition)."""
    min_tokens_per_param: float | None = None
    """Lower end of the tokens-per-active-parameter window (null = open)."""
    max_tokens_per_param: float | None = None
    """Upper end of the tokens-per-active-parameter window (null = open)."""
    prior: Prior | None = None
    """Keep runs within span_log10 decades of N_opt = k.C^a (null = keep all)."""
    seeds: int = 1
    """Runs per (budget, member), each from its own seed (replicates); replicate 0 is the run
    of a plan without replicates, with the same run_id."""
    adaptive: bool = operational(False)
    """`flame run` runs the budgets in waves from the cheapest, each wave's sizes re-centred on
    the law refitted from the finished budgets (needs prior; see jobs/adaptive.py)."""
    strategy: str = result("independent", since=2)
    """independent (one run per budget and member) | branches (one constant-lr trunk per member,
    each run a WSD cooldown branched off it; sweep/branches.py)."""
    cooldown_fraction: float | None = result(None, since=2)
    """With branches: the fraction of a run's iterations (at its end) spent decaying, in (0, 1);
    null = the recipe's ``training.decay_fraction`` (FLAME-MoE's 0.1, the demo's 0.2), as its
    independent runs decay."""
    branch_step_multiple: int = result(1, since=2)
    """With branches: branch steps are rounded down to a multiple of this (e.g. one Megatron
    --save-interval that hits them all)."""


@dataclass(kw_only=True)
class PlannerSettings(PlannerConfig):
    """Everything the planner uses: the ``planner`` key plus the study-wide conventions and the
    cluster's cost model (built by ``sweep.config.settings_from_cfg``)."""

    accounting: str
    """Parameter convention for iterations and tokens-per-parameter: flame | exact."""
    flops_formula: str
    """FLOPs per token: 6n | 6n_attn."""
    device_peak_flops: float
    """Peak FLOP/s of one accelerator, for the cost estimate (``cluster.device_peak_flops``)."""
    assumed_mfu: float
    """Model FLOPs utilisation assumed for the cost estimate (``cluster.assumed_mfu``, checked
    there: in (0, 1])."""
    warmup_fraction: float = 0.0
    """The recipe's ``training.warmup_fraction`` (with branches: the shared warmup's length)."""
    decay_fraction: float = 0.2
    """The recipe's ``training.decay_fraction``: a branch's cooldown unless
    ``planner.cooldown_fraction`` is set."""

    def __post_init__(self) -> None:
        if self.cooldown_fraction is None:
            self.cooldown_fraction = self.decay_fraction
        if self.accounting not in CONVENTIONS:
            raise ConfigError(f"accounting={self.accounting!r}: use one of {CONVENTIONS}")
        if self.flops_formula not in FLOPS_FORMULAS:
            raise ConfigError(f"flops_formula={self.flops_formula!r}: use one of {FLOPS_FORMULAS}")
        if self.iters_rounding not in ITERS_ROUNDINGS:
            raise ConfigError(f"planner.iters_rounding={self.iters_rounding!r}: use ceil or round")
        if self.global_batch_size <= 0:
            raise ConfigError(f"planner.global_batch_size={self.global_batch_size}: must be > 0")
        if self.seeds < 1:
            raise ConfigError(f"planner.seeds={self.seeds}: must be >= 1 (runs per budget "
                              "and member; 1 = no replicates)")
        if self.min_iters < 1:
            raise ConfigError(f"planner.min_iters={self.min_iters}: must be >= 1")
        self._check_branches()

    def _check_branches(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"planner.strategy={self.strategy!r}: use independent or branches")
        if not 0 < self.cooldown_fraction < 1:
            raise ConfigError(f"planner.cooldown_fraction={self.cooldown_fraction}: must be in "
                              "(0, 1), e.g. 0.2 (a branch decays over its last 20% of iterations)")
        if self.branch_step_multiple < 1:
            raise ConfigError(f"planner.branch_step_multiple={self.branch_step_multiple}: must "
                              "be >= 1 (1 = any iteration)")
        if self.strategy == "branches" and self.adaptive:
            raise ConfigError("planner.adaptive=true with planner.strategy=branches: adaptive "
                              "waves plan independent runs; set one of them back")


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the study."""

    run_id: str
    """Short stable hash of everything that changes the run's result."""
    budget: float
    """The isoFLOP budget C this run belongs to."""
    member: Member
    """Architecture (and its launch hints)."""
    train_iters: int
    """Iterations: C / (flops_per_token . batch . seq), rounded per planner.iters_rounding."""
    tokens: int
    """Tokens trained on: train_iters . batch . seq."""
    flops_per_token: float
    """Training FLOPs per token under the study's convention and formula."""
    n_active: int
    """Active parameters under the study's convention."""
    gpu_hours: float
    """Estimated accelerator-hours at the assumed MFU."""
    replicate: int = 0
    """Repeat of this (budget, member), from seed + replicate (``planner.seeds``)."""
    role: str = ""
    """"" (an independent run) | trunk | branch (``planner.strategy=branches``)."""
    parent: str = ""
    """A branch's trunk run_id."""
    branch_step: int = 0
    """A branch's first iteration after its trunk's checkpoint (0 otherwise)."""
    warmup_iters: int = 0
    """Warmup shared by a trunk and its branches (0: the recipe's fraction of train_iters)."""
    save_steps: tuple[int, ...] = ()
    """A trunk's checkpoint steps for its branches."""

    @property
    def flops(self) -> float:
        """FLOPs of the whole run (a branch's as if trained from scratch: its isoFLOP budget)."""
        return self.flops_per_token * self.tokens

    @property
    def own_flops(self) -> float:
        """FLOPs the run spends itself (a branch: only its cooldown)."""
        return self.flops * (self.train_iters - self.branch_step) / self.train_iters

    def to_row(self, settings: PlannerSettings) -> PlanRow:
        """The run as a plan.csv row."""
        arch = self.member.arch
        exact, flame = param_counts(arch, "exact"), param_counts(arch, "flame")
        counts = {"n_active_exact": exact.active, "n_total_exact": exact.total,
                  "n_active_flame": flame.active, "n_total_flame": flame.total,
                  "n_active_exact_nonemb": exact.active_non_embedding,
                  "n_total_exact_nonemb": exact.total_non_embedding,
                  "n_active_flame_nonemb": flame.active_non_embedding,
                  "n_total_flame_nonemb": flame.total_non_embedding}
        return PlanRow(run_id=self.run_id, budget=self.budget, member=self.member.name,
                       arch=arch, micro_batch_size=self.member.micro_batch_size,
                       global_batch_size=settings.global_batch_size, counts=counts,
                       accounting=settings.accounting, flops_formula=settings.flops_formula,
                       flops_per_token=self.flops_per_token, tokens=self.tokens,
                       train_iters=self.train_iters, gpu_hours=self.gpu_hours,
                       replicate=self.replicate, role=self.role, parent=self.parent,
                       branch_step=self.branch_step, warmup_iters=self.warmup_iters,
                       save_steps=self.save_steps)


@dataclass(frozen=True)
class Removal:
    """A candidate (budget, member) that a constraint removed, and why."""

    budget: float
    member: str
    constraint: str
    """Config key of the constraint, e.g. ``planner.min_iters``."""
    detail: str
    """What the run's numbers were."""


@dataclass
class Plan:
    """The planner's answer: kept runs, in budget then size then replicate order, and what
    was removed."""

    runs: list[PlannedRun] = field(default_factory=list)
    removed: list[Removal] = field(default_factory=list)


def validate_budgets(budgets: Sequence[Any]) -> list[float]:
    """Budgets as positive finite floats, or a ConfigError naming the bad entry."""
    if not budgets:
        raise ConfigError("budgets.flops: empty; give at least one FLOP budget, e.g. [1e18]")
    out = []
    for i, b in enumerate(budgets):
        try:
            value = float(b)
        except (TypeError, ValueError):
            raise ConfigError(f"budgets.flops[{i}]={b!r}: not a number; write e.g. 1e18") from None
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"budgets.flops[{i}]={b!r}: must be a positive, finite FLOP count")
        out.append(value)
    if len(set(out)) != len(out):
        raise ConfigError(f"budgets.flops: duplicate budgets in {out}; list each once")
    return sorted(out)


def run_id(payload: Mapping[str, Any]) -> str:
    """Short stable hash of a run's result-determining description (canonical JSON)."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def plan(budgets: Sequence[float], members: Sequence[Member], settings: PlannerSettings,
         hash_context: Mapping[str, Any] | None = None) -> Plan:
    """Every (budget, member) pair that passes the constraints, as runs.

    ``hash_context`` holds what else changes a run's result (training recipe, data, trainer)
    and goes into each run_id with the architecture, budget, tokens and batch.
    """
    result = Plan()
    for budget in validate_budgets(budgets):
        _check_listed(budget, members)
        kept_before = len(result.runs)
        for member in members:
            if member.budgets is not None and not any(math.isclose(budget, b)
                                                      for b in member.budgets):
                continue
            run, removal = _plan_one(budget, member, settings, hash_context or {})
            if removal:
                result.removed.append(removal)
            else:
                result.runs += [run] + [replicate(run, r, settings, hash_context or {})
                                        for r in range(1, settings.seeds)]
        if len(result.runs) == kept_before and any(m.budgets is None or budget in m.budgets
                                                   for m in members):
            raise _empty_budget_error(budget, [r for r in result.removed if r.budget == budget])
    if settings.strategy == "branches":
        result.runs = branched(result.runs, members, settings, hash_context or {})
    return result


def branched(runs: Sequence[PlannedRun], members: Sequence[Member], s: PlannerSettings,
             ctx: Mapping[str, Any]) -> list[PlannedRun]:
    """``runs`` (independent) as branches: per member and replicate one trunk, then each run
    as a branch of it (same budget, tokens and iterations); trunks first, in family order."""
    trunks: list[PlannedRun] = []
    branches: dict[int, PlannedRun] = {}  # by id() of the independent run
    for member in members:
        for r in range(s.seeds):
            group = [run for run in runs if run.member.name == member.name and run.replicate == r]
            if not group:
                continue
            trunk, kids = _trunk_and_branches(group, s, ctx)
            trunks.append(trunk)
            branches.update((id(old), new) for old, new in zip(group, kids))
    return trunks + [branches[id(run)] for run in runs]


def _trunk_and_branches(group: Sequence[PlannedRun], s: PlannerSettings,
                        ctx: Mapping[str, Any]) -> tuple[PlannedRun, list[PlannedRun]]:
    first = group[0]
    names = [f"{run.member.name} at C={run.budget:.3g}" for run in group]
    shape = layout([run.train_iters for run in group], s.cooldown_fraction,
                   s.branch_step_multiple, s.warmup_fraction, names)
    tokens = shape.train_iters * s.global_batch_size * first.member.arch.seq_length
    own = first.flops_per_token * tokens
    extra = {"strategy": "branches", "warmup_iters": shape.warmup_iters,
             **({"replicate": first.replicate} if first.replicate else {})}
    trunk_id = run_id({**_payload(own, first.member, tokens, shape.train_iters, s, ctx), **extra,
                       "role": "trunk", "save_steps": list(shape.save_steps)})
    trunk = dataclasses.replace(
        first, run_id=trunk_id, budget=own, train_iters=shape.train_iters, tokens=tokens,
        gpu_hours=first.gpu_hours * shape.train_iters / first.train_iters, role="trunk",
        warmup_iters=shape.warmup_iters, save_steps=shape.save_steps)
    kids = []
    for run, step in zip(group, shape.branch_steps):
        rid = run_id({**_payload(run.budget, run.member, run.tokens, run.train_iters, s, ctx),
                      **extra, "role": "branch", "branch_step": step, "parent": trunk_id})
        kids.append(dataclasses.replace(  # gpu_hours: what the branch itself trains
            run, run_id=rid, role="branch", parent=trunk_id, branch_step=step,
            warmup_iters=shape.warmup_iters,
            gpu_hours=run.gpu_hours * (run.train_iters - step) / run.train_iters))
    return trunk, kids


def _check_listed(budget: float, members: Sequence[Member]) -> None:
    if any(m.budgets is None or any(math.isclose(budget, b) for b in m.budgets)
           for m in members):
        return
    listed = sorted({b for m in members for b in m.budgets or ()})
    raise ConfigError(f"budgets.flops: no family member runs at {budget:.3g} (the members list "
                      f"{', '.join(f'{b:.3g}' for b in listed)}); use those budgets or add "
                      "the budget to members' `budgets` in the family")


def _plan_one(budget: float, member: Member, s: PlannerSettings,
              ctx: Mapping[str, Any]) -> tuple[PlannedRun | None, Removal | None]:
    arch = member.arch
    fpt = flops_per_token(arch, s.accounting, s.flops_formula)
    iters = train_iters(budget, arch, s.global_batch_size, s.accounting, s.flops_formula,
                        s.iters_rounding)
    tokens = iters * s.global_batch_size * arch.seq_length
    n = param_counts(arch, s.accounting).active
    removal = _check(budget, member.name, iters, tokens, n, s) or _check_cooldown(
        budget, member.name, iters, s)
    if removal:
        return None, removal
    rid = run_id(_payload(budget, member, tokens, iters, s, ctx))
    hours = fpt * tokens / (s.device_peak_flops * s.assumed_mfu) / 3600.0
    return PlannedRun(rid, budget, member, iters, tokens, fpt, n, hours), None


def _payload(budget: float, member: Member, tokens: int, iters: int, s: PlannerSettings,
             ctx: Mapping[str, Any]) -> dict[str, Any]:
    return {"arch": member.arch.to_dict(), "budget": budget, "tokens": tokens, "iters": iters,
            "global_batch_size": s.global_batch_size, **ctx}


def replicate(run: PlannedRun, r: int, settings: PlannerSettings,
              hash_context: Mapping[str, Any] | None = None) -> PlannedRun:
    """Replicate ``r`` of ``run``: the same run from seed + r, under its own run_id (replicate
    0's payload plus ``replicate``; replicate 0 keeps the payload as it was before replicates,
    so no existing run_id changes)."""
    if r == 0:
        return run
    payload = _payload(run.budget, run.member, run.tokens, run.train_iters, settings,
                       hash_context or {})
    return dataclasses.replace(run, run_id=run_id({**payload, "replicate": r}), replicate=r)


def _check(budget: float, name: str, iters: int, tokens: int, n: int,
           s: PlannerSettings) -> Removal | None:
    tpp = tokens / n
    if iters < s.min_iters:
        return Removal(budget, name, "planner.min_iters", f"{iters} iterations < {s.min_iters}")
    if s.max_tokens is not None and tokens > s.max_tokens:
        return Removal(budget, name, "planner.max_tokens",
                       f"{tokens:.3g} tokens > dataset's {s.max_tokens:.3g}")
    if s.min_tokens_per_param is not None and tpp < s.min_tokens_per_param:
        return Removal(budget, name, "planner.min_tokens_per_param",
                       f"{tpp:.3g} tokens/param < {s.min_tokens_per_param}")
    if s.max_tokens_per_param is not None and tpp > s.max_tokens_per_param:
        return Removal(budget, name, "planner.max_tokens_per_param",
                       f"{tpp:.3g} tokens/param > {s.max_tokens_per_param}")
    if s.prior is not None:
        n_opt = s.prior.k * budget ** s.prior.a
        off = abs(math.log10(n / n_opt))
        if off > s.prior.span_log10:
            return Removal(budget, name, "planner.prior",
                           f"N={n:.3g} is {off:.2f} decades from the prior N_opt={n_opt:.3g}")
    return None


def _check_cooldown(budget: float, name: str, iters: int, s: PlannerSettings) -> Removal | None:
    if s.strategy == "branches" and cooldown_iters(iters, s.cooldown_fraction) < 1:
        return Removal(budget, name, "planner.cooldown_fraction",
                       f"a cooldown of {s.cooldown_fraction} x {iters} iterations rounds to 0")
    return None


def _empty_budget_error(budget: float, removed: list[Removal]) -> ConfigError:
    reasons = sorted({r.constraint for r in removed})
    if reasons == ["planner.min_iters"]:
        most = max(int(r.detail.split()[0]) for r in removed)
        return ConfigError(
            f"budgets.flops: budget {budget:.3g} is too small: every architecture gets fewer "
            f"than planner.min_iters iterations (at most {most}); raise the budget, add smaller "
            "architectures, or lower planner.min_iters")
    return ConfigError(
        f"budgets.flops: budget {budget:.3g} has no runs left after the constraints "
        f"{reasons} ({'; '.join(f'{r.member}: {r.detail}' for r in removed[:3])}); relax them "
        "or change the family")

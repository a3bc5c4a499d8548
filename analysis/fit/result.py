"""fit.json as a typed, versioned record: ``FitResult``, read (``read_fit``) and written
(``write_fit``) here and nowhere else.

The file's keys and their order are those flame always wrote, with ``version`` first (added in
version 1; a file without it is version 0 and reads the same). A file of a newer version is
refused with a ConfigError naming it, as config.yaml's ``format_version`` is. Parts that vary
in shape (the extrapolation check, the selection, the branch counts) stay plain mappings, as
their own modules write them; the parts other stages read field by field are typed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from analysis.fit.degenerate import FitWarning
from analysis.jsonsafe import dumps, json_safe
from analysis.settings import FitSettings
from sweep.errors import ConfigError
from sweep.io import FIT_JSON, atomic_write_text
from sweep.law import Law

FIT_VERSION = 2
"""fit.json's ``version``: bumped when a key changes meaning (0: the files before it; 2 added
``variance_components``, and intervals that resample shapes where runs share one)."""
LAW_KEYS = ("E", "A", "B", "alpha", "beta")


@dataclass
class FitInput:
    """What was fitted."""

    results: str
    """The CSV fitted (a sweep's results.csv, or a plain CSV)."""
    kind: str
    """``sweep`` (results.csv of a sweep directory) or ``csv`` (a plain CSV)."""
    n_column: str
    """The column N was read from (``n`` for a plain CSV)."""


@dataclass
class BudgetEntry:
    """One budget's isoFLOP parabola in fit.json (``approach2.budgets``)."""

    budget: float
    """FLOPs of the budget (bucket: geometric mean of its points)."""
    n_points: int
    """Runs at this budget."""
    n_opt: float | None
    """N at the parabola's minimum (None when rejected)."""
    d_opt: float | None
    """Tokens at that N."""
    loss_opt: float | None
    """Loss at the minimum."""
    used: bool
    """Whether the budget enters the power laws."""
    reason: str
    """Why it was rejected ("" when used)."""


@dataclass
class Approach2Result:
    """fit.json's ``approach2``: the power laws N_opt = k.C^a, D_opt = k_d.C^b, L_opt(C)."""

    a: float | None = None
    """Exponent of N_opt(C) (None without a law)."""
    a_ci: list[float] | None = None
    """Its interval (None when withheld: see ``interval_reason``)."""
    b: float | None = None
    """Exponent of D_opt(C)."""
    b_ci: list[float] | None = None
    """Its interval."""
    k: float | None = None
    """Prefactor of N_opt(C)."""
    k_ci: list[float] | None = None
    """Its interval."""
    k_d: float | None = None
    """Prefactor of D_opt(C)."""
    loss_law: dict[str, float] | None = None
    """L_opt = k.C^exponent: ``{k, exponent}``."""
    budgets: list[BudgetEntry] = field(default_factory=list)
    """One entry per budget, used or rejected."""
    reason: str = ""
    """Why there is no law ("" when there is one)."""
    note: str = ""
    """How budgets were formed (e.g. bucketed FLOPs)."""
    bootstrap: int = 0
    """Resamples asked for."""
    estimator: str = "parabola"
    """``fit.approach2_estimator``: parabola or porian."""
    bootstrap_kind: str = ""
    """How resamples were drawn: residual, pairs, seed noise ("" without)."""
    bootstrap_usable_fraction: float | None = None
    """Resamples with at least two usable budgets."""
    interval_reason: str = ""
    """Why no interval is reported ("" when one is)."""


# Keys an Approach 3 entry has only when a law was fitted (fit.json never had them otherwise).
FITTED_ONLY = ("interval_reason", "bootstrap", "bootstrap_method", "huber_delta", "theta")


@dataclass
class Approach3Result:
    """fit.json's ``approach3``: the law L(N, D) = E + A/N^alpha + B/D^beta, or why not."""

    E: float | None = None
    """Irreducible loss (None: not fitted, see ``reason``)."""
    A: float | None = None
    """Parameter term's scale."""
    B: float | None = None
    """Data term's scale."""
    alpha: float | None = None
    """Parameter exponent."""
    beta: float | None = None
    """Data exponent."""
    a: float | None = None
    """Exponent of N_opt(C): beta / (alpha + beta)."""
    b: float | None = None
    """Exponent of D_opt(C): alpha / (alpha + beta)."""
    objective: float | None = None
    """Summed Huber loss at the fit."""
    n_points: int = 0
    """Points fitted."""
    ci: dict[str, list[float] | None] = field(default_factory=dict)
    """Percentile interval per quantity (E, A, B, alpha, beta, a, b)."""
    se: dict[str, float | None] = field(default_factory=dict)
    """Bootstrap standard error per quantity."""
    reason: str = ""
    """Why there is no law ("" when there is one)."""
    interval_reason: str = ""
    """Why there are no intervals ("" when there are)."""
    bootstrap: int = 0
    """Resamples asked for."""
    bootstrap_method: str = ""
    """Refit per resample, or one Newton step per resample ("" without)."""
    huber_delta: float | None = None
    """Huber's delta of the objective."""
    theta: dict[str, float] | None = None
    """The fitted vector: log A, log B, log E, alpha, beta (``a, b, e, alpha, beta``)."""

    @property
    def fitted(self) -> bool:
        """Whether a law was fitted."""
        return self.E is not None

    def law(self) -> Law | None:
        """The fitted law, or None when a parameter is missing (not fitted)."""
        values = [getattr(self, k) for k in LAW_KEYS]
        if not all(isinstance(v, (int, float)) for v in values):
            return None
        return Law(*(float(v) for v in values))


@dataclass
class FitResult:
    """One fit.json: both approaches, the extrapolation check, selection and warnings."""

    input: FitInput
    """What was fitted."""
    approach2: Approach2Result
    """Approach 2 (isoFLOP minima, power laws in C)."""
    approach3: Approach3Result
    """Approach 3 (the parametric law)."""
    extrapolation: dict[str, Any]
    """The leave-the-largest-budget-out check (``analysis.fit.extrapolation``'s mapping)."""
    n_used: int
    """Points fitted."""
    n_excluded: int
    """Rows left out (each with its reason in the points)."""
    excluded: dict[str, int]
    """Rows left out, by reason."""
    branches: dict[str, Any]
    """Fitted points that are cooldown branches, by trunk (``points.branch_summary``)."""
    settings: dict[str, Any]
    """The ``fit`` settings used, as a mapping (``fit_settings()`` types them)."""
    selection: dict[str, Any] = field(default_factory=dict)
    """The selection's summary: the law used, the family, rows, warnings."""
    warnings: list[FitWarning] = field(default_factory=list)
    """What would make the fit falsely precise, and what was done about it."""
    figures: list[str] = field(default_factory=list)
    """Figures written, relative to the sweep directory."""
    variance_components: dict[str, Any] | None = None
    """Seed-to-seed and per-shape log-loss SDs (``analysis.fit.structure``: seed_sd,
    shape_sd, n_shapes, n_replicated_points, method, run_sd); None without replicates."""
    version: int = FIT_VERSION
    """The file's format (``FIT_VERSION`` when written; 0 for files before the key)."""

    def fit_settings(self) -> FitSettings:
        """The ``fit`` settings as typed (a ConfigError naming a bad key)."""
        return FitSettings.from_mapping(self.settings)

    def law(self) -> Law | None:
        """Approach 3's law, or None when it was not fitted."""
        return self.approach3.law()

    def headline_a(self) -> float | None:
        """The exponent a of N_opt(C) selection uses: Approach 3's, else Approach 2's."""
        return self.approach3.a if self.approach3.a is not None else self.approach2.a

    def to_json(self) -> dict[str, Any]:
        """The file's object, keys in the order flame writes them (``version`` first)."""
        a3 = {f.name: getattr(self.approach3, f.name) for f in fields(Approach3Result)
              if self.approach3.fitted or f.name not in FITTED_ONLY}
        a2 = {f.name: getattr(self.approach2, f.name) for f in fields(Approach2Result)}
        a2["budgets"] = [vars(b).copy() for b in self.approach2.budgets]
        return {"version": self.version, "input": vars(self.input).copy(), "approach2": a2,
                "approach3": a3, "extrapolation": self.extrapolation,
                "n_used": self.n_used, "n_excluded": self.n_excluded,
                "excluded": self.excluded, "branches": self.branches,
                "settings": self.settings, "selection": self.selection,
                "warnings": [w.as_dict() for w in self.warnings], "figures": self.figures,
                "variance_components": self.variance_components}

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = FIT_JSON) -> FitResult:
        """A result from fit.json's object; ``source`` names the file in errors."""
        version = data.get("version", 0)
        if not isinstance(version, int) or version > FIT_VERSION:
            raise ConfigError(f"{source}: fit.json version {version!r} is newer than this "
                              f"flame reads ({FIT_VERSION}); upgrade flame, or refit with "
                              "`flame fit`")
        try:
            a2 = _known(Approach2Result, data["approach2"])
            a2["budgets"] = [BudgetEntry(**_known(BudgetEntry, b)) for b in a2.get("budgets")
                             or []]
            return cls(input=FitInput(**_known(FitInput, data["input"])),
                       approach2=Approach2Result(**a2),
                       approach3=Approach3Result(**_known(Approach3Result, data["approach3"])),
                       extrapolation=data.get("extrapolation") or {},
                       n_used=data["n_used"], n_excluded=data["n_excluded"],
                       excluded=data.get("excluded") or {},
                       branches=data.get("branches") or {},
                       settings=data.get("settings") or {},
                       selection=data.get("selection") or {},
                       warnings=[FitWarning(**_known(FitWarning, w))
                                 for w in data.get("warnings") or []],
                       figures=list(data.get("figures") or []),
                       variance_components=data.get("variance_components"), version=version)
        except (KeyError, TypeError) as err:
            raise ConfigError(f"{source}: not a fit.json ({type(err).__name__}: {err}); "
                              "refit with `flame fit`") from None

    def normalised(self) -> FitResult:
        """The result as it reads back from its file (numpy numbers as Python's, NaN as
        None), so what ``fit_sweep`` returns equals what ``read_fit`` gives."""
        return FitResult.from_json(json_safe(self.to_json()))


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``data`` that ``cls`` has as fields (an older or newer file may have
    others: a key flame no longer writes is ignored, not an error)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in dict(data).items() if k in names}


def read_fit(path: Path) -> FitResult:
    """fit.json at ``path`` (a file, or a sweep directory holding one), or a ConfigError."""
    path = Path(path)
    if path.is_dir():
        path = path / FIT_JSON
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: run `flame fit` first") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable fit.json ({err.__class__.__name__}); "
                          "refit with `flame fit`") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a fit.json (no JSON object); refit with `flame fit`")
    return FitResult.from_json(data, str(path))


def write_fit(sweep_dir: Path, result: FitResult) -> Path:
    """Write ``<sweep_dir>/fit.json`` atomically; return its path."""
    path = Path(sweep_dir) / FIT_JSON
    atomic_write_text(path, dumps(result.to_json()))
    return path

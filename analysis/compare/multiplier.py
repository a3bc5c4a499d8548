"""``flame compare A B``: the effective compute multiplier of study A over study B.

At each of A's budgets C, A reaches its optimal loss L_A(C) on its loss frontier; B reaches
that loss at C_B, where B's frontier equals it; the multiplier is C_B / C (2 = B needs twice
A's compute for A's loss; < 1 = B is more efficient). The frontiers cross where the
multiplier is 1.

Each study's frontier is its Approach 3 law's: minimising ``E + A/N^alpha + B/D^beta`` on
``6.N.D = C`` gives ``L_opt(C) = E + K.C^-gamma`` with ``gamma = alpha.beta/(alpha+beta)``
(Hoffmann et al. 2022, eq. 4), an irreducible loss plus a power law, so C_B is
``((L - E_B)/K_B)^(-1/gamma_B)``. A pure power law ``L_opt = k.C^c`` (flame's frontier
before) cannot bend toward an irreducible loss: on two studies exactly 2x apart its
per-budget multiplier drifted from 2.3 to 1.7 across the budgets and its intervals at both
ends excluded 2 (issue 25). The law is each study's own fit, refitted from its points with
the settings its fit.json records (the same numbers), and the interval is its bootstrap:
resample i of A with resample i of B (each study's own resamples: the structured bootstrap
of ``analysis.fit.structure`` where its runs share shapes, so the law's misfit is in the
interval), the multiplier recomputed per pair. E itself is poorly identified by a few
budgets, but the multiplier at a budget needs the frontier only where the data are.

A budget where B would need a compute outside the budgets B's law was fitted on uses that law
beyond B's data: it is reported, marked ``extrapolated``, and left out of the summary
multiplier (the geometric mean over the other budgets). A loss at or below B's irreducible
loss has no C_B (infinite multiplier; marked ``unreachable``). Bad input (a study not fitted
or without an Approach 3 law, different budgets, no overlap in loss) is a ConfigError naming
the problem and the fix.

Output (read by the HTML report): ``<A>/compare/<basename of B>/{compare.json, compare.csv,
compare.png, compare.svg}``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from analysis.csvsafe import write_csv
from analysis.fit.driver import parametric_with_bootstrap
from analysis.fit.isoflop import IsoflopFit, budget_groups
from analysis.fit.parametric import ParametricFit, closed_form_optimum
from analysis.fit.points import load_bare_csv, load_sweep_results, used_points
from analysis.fit.porian import fit_approach2
from analysis.fit.result import read_fit
from analysis.jsonsafe import dumps
from analysis.settings import FitSettings
from sweep.errors import ConfigError
from sweep.io import FIT_JSON, RESULTS_CSV, atomic_write_text

COMPARE_DIR = "compare"


def frontier_terms(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``E, K, gamma`` of ``L_opt(C) = E + K.C^-gamma`` for each row of ``theta`` (k, 5)."""
    theta = np.atleast_2d(theta)
    alpha, beta = theta[:, 3], theta[:, 4]
    gamma = alpha * beta / (alpha + beta)
    e = np.exp(theta[:, 2])
    with np.errstate(over="ignore", invalid="ignore"):
        _, _, at_one = closed_form_optimum(theta, np.array([1.0]))
    return e, np.reshape(at_one, (-1,)) - e, gamma


def frontier_loss(theta: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """L_opt at ``budgets`` (m,) for each row of theta: (k, m)."""
    e, k, gamma = frontier_terms(theta)
    return e[:, None] + k[:, None] * np.asarray(budgets, float)[None] ** -gamma[:, None]


def compute_for_loss(loss: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Compute at which each row's frontier reaches ``loss`` (k, m): inf at or below E."""
    e, k, gamma = frontier_terms(theta)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        excess = (loss - e[:, None]) / k[:, None]
        out = excess ** (-1 / gamma[:, None])
    return np.where(excess > 0, out, np.inf)


@dataclass(frozen=True)
class Study:
    """One fitted study: where it is, its fit settings, its law and their resamples."""

    path: Path
    """The sweep directory (or the folder of a fitted CSV)."""
    settings: FitSettings
    """The fit settings its fit.json records."""
    law: ParametricFit
    """Approach 3, refitted from its points (equals its fit.json)."""
    thetas: np.ndarray | None
    """The law's bootstrap resamples (k, 5), None without."""
    iso: IsoflopFit | None = None
    """Approach 2 without bootstrap: the measured isoFLOP minima drawn beside the frontier."""
    budgets: tuple[float, ...] = ()
    """The study's budgets (FLOPs)."""

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def theta(self) -> np.ndarray:
        return np.array(self.law.theta)[None]

    def used_range(self) -> np.ndarray:
        """The smallest and largest budget its law was fitted on."""
        return np.array([min(self.budgets), max(self.budgets)])

    def frontier_loss(self, budgets: np.ndarray) -> np.ndarray:
        """Its optimal loss at ``budgets`` by its law."""
        return frontier_loss(self.theta, budgets)[0]

    def frontier(self) -> dict:
        e, k, gamma = (float(v[0]) for v in frontier_terms(self.theta))
        return {"E": e, "K": k, "gamma": gamma}


def study_of(path: Path, points: pd.DataFrame, settings: FitSettings, label: str) -> Study:
    """A study from its used points: the law and its resamples, as ``flame fit`` draws them."""
    law, thetas, reason, interval_reason, _ = parametric_with_bootstrap(points, settings)
    if law is None:
        raise ConfigError(f"{label}={path}: Approach 3 found no law ({reason}); compare "
                          "needs each study's law: fit at least 3 budgets with 6 or more runs")
    iso = fit_approach2(points, dataclasses.replace(settings, bootstrap=0))
    budgets, _ = budget_groups(points["budget"].to_numpy(float), settings.bucket_decades)
    return Study(path, settings, law, thetas, iso, tuple(float(b) for b in np.unique(budgets)))


def load_study(path: Path, label: str, bootstrap: int | None = None) -> Study:
    """A fitted study from its directory, or a ConfigError saying how to fit it;
    ``bootstrap`` replaces its fit's resample count (None: keep it)."""
    path = Path(path)
    fit_json = path / FIT_JSON
    if not path.is_dir():
        raise ConfigError(f"{label}={path}: no such sweep directory; pass the sweep_dir of a "
                          "fitted study")
    if not fit_json.is_file():
        raise ConfigError(f"{label}={path}: no {FIT_JSON} (not fitted); run `flame fit "
                          f"sweep_dir={path}` first")
    fit = read_fit(fit_json)
    settings = fit.fit_settings()
    if bootstrap is not None:
        settings = dataclasses.replace(settings, bootstrap=bootstrap)
    bare = fit.input.kind == "csv"
    source = Path(fit.input.results) if bare else path / RESULTS_CSV
    points = load_bare_csv(source, settings) if bare else load_sweep_results(source, settings)
    return study_of(path, used_points(points), settings, label)


def check_pair(a: Study, b: Study) -> None:
    """Same budgets and some overlap in optimal loss, else a ConfigError."""
    ca, cb = (np.array(s.budgets) for s in (a, b))
    if ca.size != cb.size or not np.allclose(ca, cb, rtol=1e-6):
        raise ConfigError(f"budgets differ: A has {_list(ca)}, B has {_list(cb)} FLOPs; run "
                          "both studies on the same budgets (budgets=...) before comparing")
    la, lb = (s.frontier_loss(s.used_range()) for s in (a, b))
    if la.max() < lb.min() or la.min() > lb.max():
        raise ConfigError(f"no overlap in loss: A's optimal losses {la.min():.4g}-"
                          f"{la.max():.4g}, B's {lb.min():.4g}-{lb.max():.4g} (loss frontiers "
                          "over their budgets); B's compute for "
                          "A's loss would be pure extrapolation: add budgets so that the "
                          "studies' loss ranges overlap")


def _list(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def multipliers(theta_a: np.ndarray, theta_b: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """(k, budgets) multipliers C_B / C of law rows ``theta_a`` over ``theta_b``, paired."""
    loss_a = frontier_loss(theta_a, budgets)
    return compute_for_loss(loss_a, theta_b) / budgets[None]


def compare(a: Study, b: Study) -> dict:
    """The multiplier per budget, its summary and interval, the crossover: compare.json."""
    check_pair(a, b)
    budgets = np.array(a.budgets)
    loss_a = a.frontier_loss(budgets)
    multiplier = multipliers(a.theta, b.theta, budgets)[0]
    lo, hi = b.used_range()
    needed = multiplier * budgets
    extrapolated = (needed < lo * (1 - 1e-9)) | (needed > hi * (1 + 1e-9))
    samples = _bootstrap_multipliers(a, b, budgets)
    s = a.settings
    measured = {x.budget: x.loss_opt for x in (a.iso.budgets if a.iso else ()) if x.used}
    table = pd.DataFrame({
        "budget": budgets, "loss_a": loss_a,
        "loss_a_measured": [_nearest(measured, c) for c in budgets],
        "loss_b_law": b.frontier_loss(budgets),
        "compute_b": needed, "multiplier": multiplier,
        "multiplier_lo": _percentile(samples, s.alpha_tails[0]),
        "multiplier_hi": _percentile(samples, s.alpha_tails[1]),
        "extrapolated": extrapolated, "unreachable": ~np.isfinite(multiplier)})
    inside = ~extrapolated & np.isfinite(multiplier)
    summary = math.exp(np.log(multiplier[inside]).mean()) if inside.any() else None
    summary_samples = np.exp(np.log(samples[:, inside]).mean(axis=1)) \
        if samples.size and inside.any() else np.array([])
    return {
        "a": str(a.path), "b": str(b.path),
        "method": "approach3 loss frontiers: L_opt(C) = E + K.C^-gamma",
        "frontier_a": a.frontier(), "frontier_b": b.frontier(),
        "multiplier": summary,
        "multiplier_ci": _ci(summary_samples, s),
        "multiplier_note": "geometric mean over the budgets where B's compute lies within "
                           "B's fitted budgets" if inside.any() else
                           "every budget needs B's law beyond B's data",
        "bootstrap": int(samples.shape[0]), "confidence": s.confidence,
        "crossover": _crossover(a, b, budgets),
        "budgets": table.to_dict(orient="records"),
    }


def _nearest(measured: dict, budget: float) -> float | None:
    """The measured isoFLOP minimum at ``budget`` (Approach 2 buckets budgets), or None."""
    for c, loss in measured.items():
        if math.isclose(c, budget, rel_tol=1e-3):
            return loss
    return None


def _bootstrap_multipliers(a: Study, b: Study, budgets: np.ndarray) -> np.ndarray:
    """(resamples, budgets) multipliers, A's resample i paired with B's resample i."""
    if a.thetas is None or b.thetas is None:
        return np.empty((0, budgets.size))
    size = min(len(a.thetas), len(b.thetas))
    return multipliers(a.thetas[:size], b.thetas[:size], budgets)


def _percentile(samples: np.ndarray, q: float) -> np.ndarray:
    if samples.shape[0] < 2:
        return np.full(samples.shape[1], np.nan)
    return np.nanpercentile(samples, q, axis=0)


def _ci(samples: np.ndarray, settings: FitSettings) -> list[float] | None:
    samples = samples[np.isfinite(samples)]
    if samples.size < 2:
        return None
    return [float(v) for v in np.percentile(samples, settings.alpha_tails)]


def _crossover(a: Study, b: Study, budgets: np.ndarray) -> dict:
    """Where the frontiers cross (multiplier 1) within 3 decades of the budgets, and on
    which side A is ahead."""
    grid = np.geomspace(budgets.min() / 1e3, budgets.max() * 1e3, 400)
    gap = np.log(a.frontier_loss(grid)) - np.log(b.frontier_loss(grid))
    flips = np.flatnonzero(np.sign(gap[:-1]) * np.sign(gap[1:]) < 0)
    if not flips.size:
        return {"budget": None, "within_fitted": False,
                "note": "the frontiers do not cross within 3 decades of the compared budgets"}
    i = flips[0]
    log_c = brentq(lambda x: float(np.log(a.frontier_loss(np.array([math.exp(x)]))[0]) -
                                   np.log(b.frontier_loss(np.array([math.exp(x)]))[0])),
                   math.log(grid[i]), math.log(grid[i + 1]))
    budget = math.exp(log_c)
    inside = bool(budgets.min() <= budget <= budgets.max())
    ahead = "above" if gap[i + 1] < 0 else "below"
    return {"budget": budget, "within_fitted": inside,
            "note": f"the frontiers cross at {budget:.3g} FLOPs "
                    f"({'inside' if inside else 'outside'} the compared budgets); A is ahead "
                    f"{ahead} it"}


def output_dir(a: Path, b: Path) -> Path:
    """``<A>/compare/<basename of B>``, or ``<basename of B>-<hash>`` (8 hex digits of B's
    absolute path) when that folder holds the comparison with another study of the same name:
    ``flame compare A x/study`` then ``flame compare A y/study`` keep both, and comparing
    with the same B again replaces its own folder."""
    b_dir = Path(b).resolve()
    plain = Path(a) / COMPARE_DIR / b_dir.name
    if not (plain / "compare.json").exists() or _compared_with(plain) == b_dir:
        return plain
    digest = hashlib.sha256(str(b_dir).encode("utf-8")).hexdigest()[:8]
    return plain.with_name(f"{b_dir.name}-{digest}")


def _compared_with(out: Path) -> Path | None:
    """The B (absolute) whose comparison ``out/compare.json`` holds (a compare.json older
    than its ``b_dir`` says B as it was typed: taken from here); None when it cannot say."""
    try:
        record = json.loads((out / "compare.json").read_text())
        recorded = record.get("b_dir") or record.get("b")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(recorded).resolve() if isinstance(recorded, str) and recorded else None


def write_comparison(a_path: Path, b_path: Path, bootstrap: int | None = None
                     ) -> tuple[dict, Path]:
    """Compare two fitted studies and write compare.{json,csv,png,svg}; nothing is written
    when the input is bad. ``bootstrap``: resamples of each study (None: as each was fitted)."""
    if bootstrap is not None and bootstrap < 0:
        raise ConfigError(f"--bootstrap={bootstrap}: must be >= 0 (0 = no interval)")
    a, b = load_study(a_path, "A", bootstrap), load_study(b_path, "B", bootstrap)
    result = compare(a, b)
    result["b_dir"] = str(Path(b_path).resolve())  # which B owns the folder (output_dir)
    out = output_dir(a_path, b_path)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(result["budgets"])
    write_csv(out / "compare.csv", table)
    from analysis.compare.plots import compare_figure  # matplotlib only here
    from analysis.figures import save_figure
    save_figure(compare_figure(a, b, result), out, "compare")
    atomic_write_text(out / "compare.json", dumps(result))
    return result, out

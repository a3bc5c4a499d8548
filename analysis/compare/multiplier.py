"""``flame compare A B``: the effective compute multiplier of study A over study B.

At each of A's budgets C, A reaches its optimal loss L_A(C) (Approach 2's loss frontier
``L_opt = k.C^c`` through its isoFLOP minima). B reaches that loss at
C_B = (L_A(C) / k_B)^(1/c_B); the multiplier is C_B / C (2 = B needs twice A's compute for A's
loss; < 1 = B is more efficient).
The laws cross where the two frontiers meet, C* = (k_B / k_A)^(1/(c_A - c_B)).

Both frontiers are Approach 2's loss laws refitted from each study's points with the settings
its fit.json records (so they equal its fit), and the interval is a bootstrap of both studies
at once: resample i of A with resample i of B (each study's own residual bootstrap), the
multiplier recomputed per pair. Approach 2's frontier is used, not Approach 3's, because it
is a fit to the measured minima only: inverting Approach 3's frontier needs its irreducible
loss E, which isoFLOP sweeps of a few budgets identify poorly (the interval of E spans most
of the loss on FLAME's 48 runs).

The frontier is a pure power law, so where the true frontier bends toward an irreducible loss
the per-budget multiplier drifts even when the true one is constant (two synthetic studies 2x
apart: 2.23 at the smallest budget to 1.74 at the largest, summary 2.04 [1.97, 2.14]); the
summary over the budgets is the number to read.

A budget where B would need a compute outside the budgets B's law was fitted on uses that law
beyond B's data: it is reported, marked ``extrapolated``, and left out of the summary
multiplier (the geometric mean over the other budgets). Bad input (a study not fitted, different
budgets, no overlap in loss) is a ConfigError naming the problem and the fix.

Output (read by the HTML report): ``<A>/compare/<basename of B>/{compare.json, compare.csv,
compare.png, compare.svg}``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.fit.isoflop import IsoflopFit
from analysis.fit.points import load_bare_csv, load_sweep_results, used_points
from analysis.fit.porian import fit_approach2
from analysis.fit.result import read_fit
from analysis.jsonsafe import dumps
from analysis.settings import FitSettings
from sweep.errors import ConfigError
from sweep.io import FIT_JSON, RESULTS_CSV, atomic_write_text

COMPARE_DIR = "compare"


@dataclass(frozen=True)
class Study:
    """One fitted study: where it is, its fit settings and its Approach 2 fit."""

    path: Path
    """The sweep directory (or the folder of a fitted CSV)."""
    settings: FitSettings
    """The fit settings its fit.json records."""
    iso: IsoflopFit
    """Approach 2, refitted from its points (equals its fit.json)."""

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def frontier(self) -> tuple[float, float]:
        """ln k and c of the loss law L_opt = k.C^c."""
        return math.log(self.iso.loss_law.k), self.iso.loss_law.exponent

    def used_budgets(self) -> list:
        return [b for b in self.iso.budgets if b.used]

    def used_range(self) -> np.ndarray:
        """The smallest and largest budget its frontier was fitted on."""
        budgets = [b.budget for b in self.used_budgets()]
        return np.array([min(budgets), max(budgets)])

    def frontier_loss(self, budgets: np.ndarray) -> np.ndarray:
        """Its optimal loss at ``budgets`` by its frontier law."""
        return self.iso.loss_law(budgets)


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
    iso = fit_approach2(used_points(points), settings)
    if iso.loss_law is None:
        raise ConfigError(f"{label}={path}: Approach 2 found no loss frontier ({iso.reason}); "
                          "fit it on at least 2 budgets with bracketed minima")
    return Study(path, settings, iso)


def check_pair(a: Study, b: Study) -> None:
    """Same budgets and some overlap in optimal loss, else a ConfigError."""
    ca, cb = (np.array(sorted(x.budget for x in s.iso.budgets)) for s in (a, b))
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


def compute_for_loss(loss: np.ndarray, ln_k: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Compute at which the frontier ``k.C^c`` reaches ``loss`` (broadcasts)."""
    return np.exp((np.log(loss) - ln_k) / c)


def compare(a: Study, b: Study) -> dict:
    """The multiplier per budget, its summary and interval, the crossover: compare.json."""
    check_pair(a, b)
    budgets = np.array([x.budget for x in a.used_budgets()])
    (ln_ka, ca), (ln_kb, cb) = a.frontier(), b.frontier()
    # A's optimal loss from its law (the minima smoothed), as in every bootstrap resample.
    loss_a = np.exp(ln_ka) * budgets ** ca
    multiplier = compute_for_loss(loss_a, ln_kb, cb) / budgets
    # B's law used outside the budgets it was fitted on.
    lo, hi = b.used_range()
    needed = multiplier * budgets
    extrapolated = (needed < lo * (1 - 1e-9)) | (needed > hi * (1 + 1e-9))
    samples = _bootstrap_multipliers(a, b, budgets)
    s = a.settings
    table = pd.DataFrame({
        "budget": budgets, "loss_a": loss_a,
        "loss_a_measured": [x.loss_opt for x in a.used_budgets()],
        "loss_b_law": np.exp(ln_kb) * budgets ** cb,
        "compute_b": multiplier * budgets, "multiplier": multiplier,
        "multiplier_lo": _percentile(samples, s.alpha_tails[0]),
        "multiplier_hi": _percentile(samples, s.alpha_tails[1]),
        "extrapolated": extrapolated})
    inside = ~extrapolated
    summary = math.exp(np.log(multiplier[inside]).mean()) if inside.any() else None
    summary_samples = np.exp(np.log(samples[:, inside]).mean(axis=1)) \
        if samples.size and inside.any() else np.array([])
    return {
        "a": str(a.path), "b": str(b.path), "method": "approach2 loss frontiers",
        "frontier_a": {"k": math.exp(ln_ka), "exponent": ca},
        "frontier_b": {"k": math.exp(ln_kb), "exponent": cb},
        "multiplier": summary,
        "multiplier_ci": _ci(summary_samples, s),
        "multiplier_note": "geometric mean over the budgets where B's compute lies within "
                           "B's fitted budgets" if inside.any() else
                           "every budget needs B's law beyond B's data",
        "bootstrap": int(samples.shape[0]), "confidence": s.confidence,
        "crossover": _crossover(ln_ka, ca, ln_kb, cb, budgets),
        "budgets": table.to_dict(orient="records"),
    }


def _bootstrap_multipliers(a: Study, b: Study, budgets: np.ndarray) -> np.ndarray:
    """(resamples, budgets) multipliers, A's resample i paired with B's resample i."""
    sa, sb = a.iso.samples, b.iso.samples
    if not sa or not sb:
        return np.empty((0, budgets.size))
    size = min(sa["ln_kl"].size, sb["ln_kl"].size)
    loss_a = np.exp(sa["ln_kl"][:size, None]) * budgets[None] ** sa["exp_l"][:size, None]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return compute_for_loss(loss_a, sb["ln_kl"][:size, None],
                                sb["exp_l"][:size, None]) / budgets[None]


def _percentile(samples: np.ndarray, q: float) -> np.ndarray:
    if samples.shape[0] < 2:
        return np.full(samples.shape[1], np.nan)
    return np.nanpercentile(samples, q, axis=0)


def _ci(samples: np.ndarray, settings: FitSettings) -> list[float] | None:
    samples = samples[np.isfinite(samples)]
    if samples.size < 2:
        return None
    return [float(v) for v in np.percentile(samples, settings.alpha_tails)]


def _crossover(ln_ka: float, ca: float, ln_kb: float, cb: float,
               budgets: np.ndarray) -> dict:
    """Where the frontiers cross (multiplier 1), and on which side A is ahead."""
    if math.isclose(ca, cb, rel_tol=1e-9):
        return {"budget": None, "note": "the frontiers are parallel: they do not cross"}
    budget = math.exp((ln_kb - ln_ka) / (ca - cb))
    inside = budgets.min() <= budget <= budgets.max()
    ahead = "above" if ca < cb else "below"
    return {"budget": budget, "within_fitted": bool(inside),
            "note": f"the frontiers cross at {budget:.3g} FLOPs "
                    f"({'inside' if inside else 'outside'} the compared budgets); A is ahead "
                    f"{ahead} it"}


def output_dir(a: Path, b: Path) -> Path:
    """``<A>/compare/<basename of B>``."""
    return Path(a) / COMPARE_DIR / Path(b).resolve().name


def write_comparison(a_path: Path, b_path: Path, bootstrap: int | None = None
                     ) -> tuple[dict, Path]:
    """Compare two fitted studies and write compare.{json,csv,png,svg}; nothing is written
    when the input is bad. ``bootstrap``: resamples of each study (None: as each was fitted)."""
    if bootstrap is not None and bootstrap < 0:
        raise ConfigError(f"--bootstrap={bootstrap}: must be >= 0 (0 = no interval)")
    a, b = load_study(a_path, "A", bootstrap), load_study(b_path, "B", bootstrap)
    result = compare(a, b)
    out = output_dir(a_path, b_path)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(result["budgets"])
    atomic_write_text(out / "compare.csv", table.to_csv(index=False))
    from analysis.compare.plots import compare_figure  # matplotlib only here
    from analysis.figures import save_figure
    save_figure(compare_figure(a, b, result), out, "compare")
    atomic_write_text(out / "compare.json", dumps(result))
    return result, out

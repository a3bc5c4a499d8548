"""The figures draw what the runs trained: Approach 3's curves with the runs' own tokens."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.collect import collect_sweep
from analysis.fit import fit_parametric, load_sweep_results, used_points
from analysis.fit.plots import approach3_curve
from analysis.settings import FitSettings
from jobs.cli import main
from tests.analysis.conftest import write_run


def test_approach3_curve_uses_the_runs_tokens_with_attention_flops(tmp_path):
    # flops_formula=6n_attn: a run's tokens are C / (6 N + attention), 23-87% fewer than
    # C / (6 N) on the demo family, so a curve drawn with C = 6ND misplaces every budget.
    sweep = tmp_path / "attn"
    assert main(["plan", f"sweep_dir={sweep}", "flops_formula=6n_attn"]) == 0
    plan = pd.read_csv(sweep / "plan.csv", dtype={"run_id": str})
    for row in plan.to_dict(orient="records"):
        write_run(sweep, row)
    collect_sweep(sweep)
    points = used_points(load_sweep_results(sweep / "results.csv", FitSettings(bootstrap=0)))
    n, tokens, loss = (points[c].to_numpy(float) for c in ("n", "tokens", "loss"))
    param = fit_parametric(n, tokens, loss)
    for budget in np.unique(points["budget"]):
        at = points["budget"].to_numpy() == budget
        _, curve = approach3_curve(param, n[at], tokens[at], grid=n[at])
        trained = param.predict(n[at], tokens[at])
        six_nd = param.predict(n[at], budget / (6 * n[at]))
        assert np.allclose(curve, trained, rtol=2e-3), budget
        assert (np.abs(curve - trained) < np.abs(curve - six_nd) / 5).all(), budget

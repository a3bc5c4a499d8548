"""Re-centring arithmetic (sweep/recentre.py): the law from finished budgets, the next centre."""

import math

import pytest

from sweep.family import build_family
from sweep.planner import Prior, plan
from sweep.recentre import BudgetEvidence, Law, centre, centred_prior, updated_law
from tests.sweep.test_planner import FAMILY, settings

PRIOR = Prior(k=3.0, a=0.5, span_log10=0.5)  # N_opt = 3 sqrt(C): 3e6 at 1e12


def test_no_evidence_keeps_the_prior():
    law = updated_law(PRIOR, [])
    assert (law.k, law.a) == (3.0, 0.5) and "prior" in law.source
    assert centre(law, 1e12, None) == pytest.approx(3e6)


def test_one_bracketed_budget_moves_k_through_its_optimum_and_keeps_a():
    ev = BudgetEvidence(1e12, n_opt=1e6, n_best=1.1e6, edge="")
    law = updated_law(PRIOR, [ev])
    assert law.a == 0.5 and law(1e12) == pytest.approx(1e6)
    assert centre(law, 1e14, None) == pytest.approx(1e7)  # the prior's slope from there
    assert "a from the prior" in law.source


def test_two_bracketed_budgets_take_approach2s_law():
    evidence = [BudgetEvidence(1e12, 1e6, 1e6, ""), BudgetEvidence(1e13, 4e6, 4e6, "")]
    law = updated_law(PRIOR, evidence, fitted=(2e-4, 0.6))
    assert (law.k, law.a) == (2e-4, 0.6) and "Approach 2 on 2" in law.source
    # without the fitted law (Approach 2 gave none), a stays the prior's
    assert updated_law(PRIOR, evidence).a == 0.5


def test_unbracketed_budgets_move_the_law_through_their_best_runs():
    # nothing bracketed: k through the lowest-loss runs (geometric mean), a from the prior
    evidence = [BudgetEvidence(1e12, None, 1e6, "low"), BudgetEvidence(1e14, None, 4e7, "low")]
    law = updated_law(PRIOR, evidence)
    assert law.a == 0.5 and law.k == pytest.approx(math.sqrt(1.0 * 4.0))  # k = 1 and 4


@pytest.mark.parametrize("edge, law_n, expected", [
    ("low", 5e5, 5e5), ("low", 4e6, 1e6),     # at least down to the smallest size run
    ("high", 4e6, 4e6), ("high", 5e5, 1e6),   # at least up to the largest
    ("", 4e6, 1e6)])                          # no usable parabola: its best run
def test_an_unbracketed_budget_is_centred_towards_its_edge(edge, law_n, expected):
    law = Law(k=law_n / 1e12 ** 0.5, a=0.5, source="test")
    ev = BudgetEvidence(1e12, None, 1e6, edge)
    assert centre(law, 1e12, ev) == pytest.approx(expected)


def test_centred_prior_puts_the_planners_window_on_the_centre():
    law = Law(k=1.0, a=0.45, source="test")
    prior = centred_prior(law, 1e12, 2e5, span_log10=0.3)
    assert prior.k * 1e12 ** prior.a == pytest.approx(2e5) and prior.a == 0.45
    runs = plan([1e12], build_family(FAMILY), settings(prior=prior)).runs
    assert runs and all(abs(math.log10(r.n_active / 2e5)) <= 0.3 for r in runs)


def test_bad_edge_is_refused():
    with pytest.raises(ValueError, match="edge"):
        BudgetEvidence(1e12, None, 1e6, "left")

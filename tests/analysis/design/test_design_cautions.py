"""`flame design`'s cautions about Approach 2: a design on which it is usable in few simulated
studies is flagged, and below the share at which `flame fit` withholds Approach 2's interval
(``analysis.fit.isoflop_pivot.MIN_USABLE``) the caution says no interval is to be expected."""

from __future__ import annotations

from analysis.design.command import cautions
from analysis.fit.isoflop_pivot import MIN_USABLE

PRIOR = {"shape_sd": 0.013, "warnings": []}


def _entry(usable: float) -> dict:
    return {"usable": {"approach2": usable, "approach3": 1.0}, "p_member": {}}


def test_a_rarely_usable_approach2_is_cautioned_and_its_interval_expected_withheld():
    found = cautions({"prior": PRIOR}, _entry(MIN_USABLE - 0.2), _entry(1.0))
    assert len(found) == 1 and found[0].startswith("chosen: Approach 2 was usable")
    assert "expect none" in found[0]


def test_between_the_withholding_share_and_90_percent_only_the_usable_share_is_cautioned():
    found = cautions({"prior": PRIOR}, _entry(1.0), _entry(0.75))
    assert len(found) == 1
    assert found[0].startswith("plan: Approach 2 was usable (>= 2 bracketed budgets) in only 75%")
    assert "expect none" not in found[0]
    assert cautions({"prior": PRIOR}, _entry(0.95), _entry(1.0)) == []

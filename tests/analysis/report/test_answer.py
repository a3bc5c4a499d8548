"""The report's first screen, from files alone (no browser): the headline names the approach
of its exponent, and the downstream section renders whatever accuracies an evaluation wrote
(results.csv's acc_<task> columns, downstream.json) and is absent without them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from analysis.fit.result import read_fit
from analysis.report.answer import answer_sections, downstream_section, headline_exponent

DATA = Path(__file__).parents[1] / "data" / "demo_690ed83"


def test_the_headline_and_the_answer_name_the_approach(tmp_path):
    for name in ("config.yaml", "plan.csv", "results.csv", "fit.json", "selection.csv"):
        shutil.copy(DATA / name, tmp_path / name)
    fit = read_fit(tmp_path)
    assert headline_exponent(fit) == "N_opt ∝ C^0.516 [0.384, 0.666] (Approach 3)"
    sections = answer_sections(tmp_path, fit)
    assert [s.id for s in sections] == ["answer"]  # no release, no downstream yet
    assert sections[0].notes[0].startswith("N_opt ∝ C^a, a = 0.516 [0.384, 0.666] (95%), "
                                           "Approach 3")
    picks = sections[0].items[0]
    assert [row[1].text for row in picks.rows] == ["L2-h56", "L2-h80", "L2-h80"]


def test_downstream_from_the_files_eval_writes(tmp_path):
    assert downstream_section(tmp_path, None) is None
    pd.DataFrame({"run_id": ["a", "b"], "budget": [1e11, 1e12], "member": ["L2-h8", "L2-h20"],
                  "final_val_loss": [2.1, 1.6], "flag": ["ok", "ok"],
                  "acc_demo_cloze": [0.31, 0.44], "acc_demo_cloze_stderr": [0.02, 0.02]}
                 ).to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "downstream.json").write_text(json.dumps(
        {"spearman": -0.9, "tasks": [{"task": "demo_cloze", "k": 1.2, "x0": 1.8}]}))
    section = downstream_section(tmp_path, None)
    tables = {t.id: t for t in section.items}
    acc = tables["downstream-acc-" + tmp_path.name]
    assert acc.columns == ["run_id", "budget", "member", "final_val_loss", "acc_demo_cloze",
                           "acc_demo_cloze_stderr"]
    assert [r[4].text for r in acc.rows] == ["0.31", "0.44"]
    assert tables["downstream-json-" + tmp_path.name].columns == ["task", "k", "x0"]
    assert section.notes == ["spearman: -0.9"]

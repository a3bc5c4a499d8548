"""`flame report`: a real small study (simulated trainer, cluster=local, real CLI), its page
loaded in headless Chromium: no console errors, no request leaving the file, the figures
decoded, the tables present, sortable, and traceable to their files; failed runs and an
unfitted budget shown with their reasons, and so are the runs the fit excluded; the design and
comparison sections from files in their producers' formats. Routing health from real producer
output is tested on tests/analysis/collect/test_routing.py's embedded study."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from analysis.report.html import REPORT_HTML, write_report  # noqa: E402
from analysis.report.page import records_of  # noqa: E402
from jobs.cli import main  # noqa: E402
from tests.analysis.chromium import BINARY, Chromium  # noqa: E402

pytestmark = pytest.mark.skipif(BINARY is None, reason="no chromium: `bash install.sh --test` "
                                "installs Debian's package")

# 20 runs: 5 sizes x 4 budgets. Under the simulated trainer's law the largest budget's optimum
# lies past the largest size, so its parabola is rejected ("not bracketed: the lowest loss is at
# the largest size"); two of its runs are also made to fail (the trainer refuses N = 0).
STUDY = ("trainer=simulated", "cluster=local", "cluster.poll_s=0.2", "planner.min_iters=1",
         "family.members=null", "family.grid={hidden_size:[32,48,64,96,128],num_layers:[2]}",
         "budgets.flops=[3e11,1e12,3e12,1e13]", "fit.bootstrap=50",
         "fit.target_budgets=[3e13,1e14]")
FAILING_BUDGET = 1e13
FIGURES = ("isoflop", "scaling_laws", "loss_frontier", "residuals")
# Everything the page shows about itself, in one DOM query.
PAGE_FACTS = """JSON.stringify({
  figures: Object.fromEntries(Array.from(document.querySelectorAll("figure.plot")).map(
      f => [f.id, f.querySelector("img").naturalWidth])),
  tables: Object.fromEntries(Array.from(document.querySelectorAll("figure.table")).map(
      t => [t.id, {columns: Array.from(t.querySelectorAll("th")).map(h => h.textContent),
                   rows: Array.from(t.querySelectorAll("tbody tr")).map(
                       r => Array.from(r.cells).map(c => c.getAttribute("data-sort"))),
                   source: (t.querySelector("p.source") || {}).textContent || ""}])),
  sections: Array.from(document.querySelectorAll("section")).map(s => s.id),
  text: document.body.innerText})"""


def flame(*argv: str) -> None:
    assert main(list(argv)) == 0, argv


def fail_runs(sweep: Path, budget: float, count: int) -> list[str]:
    """Make ``count`` plan rows of ``budget`` fail at once (N = 0); their run ids."""
    path = sweep / "plan.csv"
    rows = list(csv.DictReader(path.read_text().splitlines()))
    broken = [r for r in rows if float(r["budget"]) == budget][:count]
    for row in broken:
        row["n_active_flame"] = "0"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return [r["run_id"] for r in broken]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """The study run stage by stage with the real CLI; the mid-study page kept aside."""
    sweep = tmp_path_factory.mktemp("report") / "sweep"
    cli = (f"sweep_dir={sweep}", *STUDY)
    flame("plan", *cli)
    failed = fail_runs(sweep, FAILING_BUDGET, 2)
    flame("launch", *cli)
    flame("status", "--watch", "--report", *cli)  # all runs ended; nothing collected or fitted
    mid = sweep.parent / "mid.html"
    shutil.move(sweep / REPORT_HTML, mid)
    flame("collect", *cli)
    flame("fit", *cli)
    flame("report", *cli)
    return {"sweep": sweep, "failed": failed, "mid": mid}


@pytest.fixture(scope="module")
def browser():
    with Chromium(width=1280, height=1000) as chromium:
        yield chromium


def load(browser: Chromium, page: Path) -> dict:
    browser.events.clear()
    browser.open(page.resolve().as_uri())
    facts = json.loads(browser.evaluate(PAGE_FACTS))
    assert browser.errors() == []
    others = [u for u in browser.requests()
              if u != page.resolve().as_uri() and not u.startswith("data:")]
    assert others == []  # self-contained: nothing but the file and its data URIs
    return facts


def test_study_report_in_chromium(study, browser, tmp_path):
    sweep = study["sweep"]
    facts = load(browser, sweep / REPORT_HTML)
    shot = browser.screenshot(tmp_path / "report.png")
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:4] == b"\x89PNG"
    assert all(facts["figures"][f"fig-{name}"] > 300 for name in FIGURES), facts["figures"]
    tables = facts["tables"]
    assert all(t["source"].startswith("source: ") for t in tables.values())
    plan = pd.read_csv(sweep / "plan.csv", dtype={"run_id": str})
    assert len(tables["all-runs-table"]["rows"]) == len(plan) == 20
    # Failed runs, with the trainer's error and collect's flag.
    problems = tables["runs-problems"]
    cols = problems["columns"]
    assert {row[cols.index("run_id")] for row in problems["rows"]} == set(study["failed"])
    assert all(row[cols.index("state")] == "failed" and "n_active" in row[cols.index("error")]
               and row[cols.index("flag")] == "missing" for row in problems["rows"])
    # The unfitted budget, with the reason.
    budgets = tables["approach2-budgets"]
    cols = budgets["columns"]
    rejected = [r for r in budgets["rows"] if float(r[cols.index("budget")]) == FAILING_BUDGET]
    assert rejected[0][cols.index("used")] == "0"
    assert rejected[0][cols.index("reason")] == \
        "not bracketed: the lowest loss is at the largest size"
    # Numbers are fit.json's, at full precision.
    fit = json.loads((sweep / "fit.json").read_text())
    params = {r[0]: r[1] for r in tables["approach3-params"]["rows"]}
    assert float(params["alpha"]) == fit["approach3"]["alpha"]
    assert len(tables["selection-table"]["rows"]) == 2
    assert {"runs-states", "runs-cost", "study-facts", "config-budgets", "config-members",
            "approach2-laws", "extrapolation-table", "config-cluster"} <= set(tables)
    assert "FLOPs" in facts["text"] and "device-hours" in facts["text"]
    assert "routing" not in facts["sections"]  # every run's routing_status is unknown


def test_tables_sort_by_full_value(study, browser):
    load(browser, study["sweep"] / REPORT_HTML)
    column = "final_val_loss"
    script = f"""(() => {{
      const t = document.querySelector("#all-runs-table table");
      const i = Array.from(t.querySelectorAll("th")).findIndex(h => h.textContent == "{column}");
      t.querySelectorAll("th")[i].click();
      return Array.from(t.tBodies[0].rows).map(r => r.cells[i].getAttribute("data-sort"));
    }})()"""
    values = browser.evaluate(script)
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers) and len(numbers) == 18  # the 2 failed runs: blank, last
    assert values[-2:] == ["", ""]
    again = [float(v) for v in browser.evaluate(script) if v]  # a second click: descending
    assert again == sorted(numbers, reverse=True)


def test_mid_study_report_has_what_exists(study, browser):
    facts = load(browser, study["mid"])
    assert "no fit.json yet" in facts["text"] and facts["figures"] == {}
    assert {"runs-states", "runs-problems", "all-runs-table"} <= set(facts["tables"])
    assert "selection" not in facts["sections"]


def _svg(path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 2, 3], [3, 1, 2])
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def test_optional_sections_from_their_files(study, browser, tmp_path):
    """design.json and compare.json in the shapes analysis/design.py and analysis/compare.py
    write (those producers are not merged yet: the files are built here with values they can
    produce), a compare.json that is a bare list, and released_* selection columns."""
    sweep = tmp_path / "sweep"
    shutil.copytree(study["sweep"], sweep)
    selection = pd.read_csv(sweep / "selection.csv").assign(released_member="FLAME-MoE-1.7B")
    selection.to_csv(sweep / "selection.csv", index=False)
    design = {"approach": "approach3", "chosen": "grid-7x4", "screened": 40,
              "designs": [{"name": n, "runs": r, "budgets": [3e11, 1e12, 3e12, 1e13],
                           "flops": 1e15 * r, "gpu_hours": 0.01 * r, "a_true": 0.5,
                           "replications": 64,
                           "a_halfwidth": {"approach2": 0.4 / r, "approach3": 0.2 / r},
                           "a_bias": {"approach2": -0.004, "approach3": 0.001},
                           "usable": {"approach2": 1.0, "approach3": 0.97},
                           "p_member": {"3e+13": 0.72, "1e+14": 0.61}}
                          for n, r in (("plan", 20), ("grid-7x4", 28))]}
    (sweep / "design.json").write_text(json.dumps(design))
    (sweep / "compare" / "dense").mkdir(parents=True)
    (sweep / "compare" / "dense" / "compare.json").write_text(json.dumps(
        {"a": str(sweep), "b": "/sweeps/dense", "method": "approach2 loss frontiers",
         "multiplier": 1.42, "multiplier_ci": [1.21, 1.66], "bootstrap": 50,
         "budgets": [{"budget": 3e12, "loss_a": 5.1, "multiplier": 1.42, "multiplier_lo": 1.2,
                      "multiplier_hi": 1.7, "extrapolated": False}]}))
    (sweep / "compare" / "bare").mkdir(parents=True)
    (sweep / "compare" / "bare" / "compare.json").write_text(json.dumps(
        [{"budget": 3e12, "multiplier": 1.1}]))
    for path in (sweep / "figures" / "design.svg", sweep / "compare" / "dense" / "compare.svg",
                 sweep / "figures" / "release.svg"):
        _svg(path, path.stem)
    facts = load(browser, write_report(sweep))
    tables, figures = facts["tables"], facts["figures"]
    assert {"design", "compare-dense", "compare-bare"} <= set(facts["sections"])
    assert {"a_halfwidth.approach2", "p_member.3e+13"} <= set(tables["design-table"]["columns"])
    assert len(tables["design-table"]["rows"]) == 2
    assert tables["design-settings"]["rows"][0][:2] == ["approach", "approach3"]
    assert "released_member" in tables["selection-table"]["columns"]
    assert tables["compare-dense-budgets"]["rows"][0][0] == repr(3e12)
    assert tables["compare-bare-rows"]["rows"] == [[repr(3e12), "1.1"]]
    assert all(figures[f] > 0 for f in ("fig-design", "fig-compare-dense",
                                        "fig-release"))  # a figure no section knows: shown too


def test_list_shaped_design_json(tmp_path):
    """A design.json that is a bare list of designs is a table, not a crash."""
    from analysis.report.extras import design_section

    (tmp_path / "design.json").write_text(json.dumps([{"name": "plan", "runs": 20}]))
    section = design_section(tmp_path)
    assert [t.id for t in section.items] == ["design-table"]
    assert len(section.items[0].rows) == 1


def test_runs_the_fit_excluded_are_listed_with_the_fit_reason(study, browser, tmp_path):
    """A refit with fit.exclude_budgets: its runs (flag ok) are problems, with the reason."""
    sweep = tmp_path / "sweep"
    shutil.copytree(study["sweep"], sweep)
    flame("fit", f"sweep_dir={sweep}", *STUDY, "fit.exclude_budgets=[3e11]", "fit.bootstrap=0",
          "fit.figures=false")  # the runs table is what this reads (figures: the test above)
    facts = load(browser, write_report(sweep))
    problems = facts["tables"]["runs-problems"]
    cols = problems["columns"]
    excluded = {r[cols.index("run_id")]: r for r in problems["rows"]
                if r[cols.index("flag")] == "ok"}
    plan = pd.read_csv(sweep / "plan.csv", dtype={"run_id": str})
    assert set(excluded) == set(plan.loc[plan["budget"] == 3e11, "run_id"])
    assert all("fit.exclude_budgets" in r[cols.index("fit_excluded")]
               for r in excluded.values())
    assert "fit.json settings" in problems["source"]


def test_devices_per_run_follow_the_trainer_shape():
    """Megatron: trainer.nodes x trainer.gpus_per_node (cluster.gpus_per_node=0 takes it)."""
    from omegaconf import OmegaConf

    from analysis.report.runs import devices_per_run
    from jobs.cli import compose

    megatron = compose(["sweep_dir=/tmp/x", "trainer=megatron", "trainer.nodes=2",
                        "trainer.gpus_per_node=4", "cluster=slurm", "cluster.gpus_per_node=0"])
    assert devices_per_run(OmegaConf.to_container(megatron, resolve=True)) == 8
    assert devices_per_run({}) == 1  # a sweep planned before flame wrote config.yaml


def test_records_of_any_json_shape():
    rows = [{"runs": 1}, {"runs": 2}]
    assert records_of(rows) == rows
    assert records_of({"designs": rows, "note": "x"}) == rows
    assert records_of({"a": {"runs": 1}, "b": {"runs": 2}}) == [{"name": "a", "runs": 1},
                                                                {"name": "b", "runs": 2}]
    assert records_of({"n": 1}) == []


def test_report_without_a_plan_is_one_line(tmp_path, capsys):
    assert main(["report", f"sweep_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no plan.csv" in err and "flame plan" in err
    assert not (tmp_path / REPORT_HTML).exists()
    assert main(["report", "sweep_dir=null"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sweep_dir: empty" in err


def test_flame_run_writes_the_report_when_nothing_can_be_fitted(study, tmp_path):
    """jobs/study.py's finish: a fit that refuses (no usable run) still leaves the page."""
    from rich.console import Console

    from jobs.cli import compose
    from jobs.study import finish
    from sweep.errors import ConfigError

    sweep = tmp_path / "sweep"
    shutil.copytree(study["sweep"], sweep)
    (sweep / REPORT_HTML).unlink()
    (sweep / "fit.json").unlink()
    cfg = compose([f"sweep_dir={sweep}", *STUDY, "fit.include_flags=[diverged]"])
    console = Console(record=True, width=200)
    with pytest.raises(ConfigError, match="none of the 20 rows"):
        finish(sweep, cfg, console, 0.0)
    assert f"report (no fit): {sweep / REPORT_HTML}" in console.export_text()
    page = (sweep / REPORT_HTML).read_text()
    assert "no fit.json yet" in page and 'id="runs-problems"' in page


def test_a_report_failure_keeps_the_studys_outcome(study, tmp_path):
    """jobs/study.py's finish: a page that cannot be written (report.html is a directory) is
    one line, and the study's own outcome stands (here the fit's refusal: the CLI's exit 2)."""
    from rich.console import Console

    from jobs.cli import compose
    from jobs.study import finish
    from sweep.errors import ConfigError

    sweep = tmp_path / "sweep"
    shutil.copytree(study["sweep"], sweep)
    (sweep / REPORT_HTML).unlink()
    (sweep / REPORT_HTML).mkdir()
    console = Console(record=True, width=80)
    with pytest.raises(ConfigError, match="none of the 20 rows"):
        finish(sweep, compose([f"sweep_dir={sweep}", *STUDY, "fit.include_flags=[diverged]"]),
               console, 0.0)
    lines = [line for line in console.export_text().splitlines() if line.startswith("report")]
    assert len(lines) == 1 and lines[0].startswith("report: not written: ConfigError")
    assert "is a directory" in lines[0]

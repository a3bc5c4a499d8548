"""What flame writes never costs a file it should keep, through the real CLI (in process):

- ``flame report --output`` is never one of the sweep's own files, and never replaces a file
  that is not a flame report without ``--force``;
- figures are written atomically, and ``flame report`` leaves out (with one warning line naming
  it and ``flame fit``) a figure that is not a whole SVG;
- cells of the CSVs flame writes that a spreadsheet would run as formulas are neutralised,
  numbers stay numbers, a normal study's CSV is byte for byte ``DataFrame.to_csv``'s;
- ``flame compare A x/study`` then ``flame compare A y/study`` keep both comparisons.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis.collect import collect_sweep
from analysis.compare.multiplier import output_dir
from analysis.csvsafe import csv_text, neutralise
from analysis.design.synthetic import Law, isoflop_sweep
from analysis.figures import save_figure
from analysis.report.html import check_output
from sweep.errors import ConfigError
from tests.jobs.conftest import flame, make_sweep, plan_ids


def checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(out) -> str:
    """The refusal's single stderr line (exit 2, no traceback)."""
    err = out.stderr.strip()
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A planned sweep (simulated trainer), collected (no run has started), with a run folder."""
    sweep = tmp_path / "sweep"
    make_sweep(sweep, "cluster=local")
    collect_sweep(sweep)
    run = sweep / "runs" / plan_ids(sweep)[0]
    run.mkdir(parents=True)
    (run / "train.log").write_text("step 1\n")
    (sweep / "jobs").mkdir()
    (sweep / "jobs" / "worker.log").write_text("worker\n")
    return sweep


def test_report_output_is_never_a_sweep_file(sweep: Path) -> None:
    before = checksums(sweep)
    run_id = plan_ids(sweep)[0]
    # through the CLI (--force never makes a sweep file fair game) ...
    for target, force in (("results.csv", ()), ("config.yaml", ("--force",)),
                          (f"runs/{run_id}/train.log", ())):
        out = flame("report", f"sweep_dir={sweep}", "--output", str(sweep / target), *force,
                    check=False)
        assert "--output" in one_line_error(out) and "sweep directory" in out.stderr
    # ... and the rest of the sweep's files, state and folders, straight to the check
    for target in ("plan.csv", "fit.json", "selection.csv", f"runs/{run_id}/new.html",
                   "jobs/worker.log", "figures/page.html", "history/x.html", "."):
        with pytest.raises(ConfigError, match="--output"):
            check_output(sweep, sweep / target, force=True)
    assert checksums(sweep) == before
    flame("report", f"sweep_dir={sweep}")  # the default, twice: a report replaces a report
    flame("report", f"sweep_dir={sweep}")
    check_output(sweep, sweep / "other.html")  # a page of its own beside report.html


def test_report_replaces_a_foreign_file_only_with_force(sweep: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    out = flame("report", f"sweep_dir={sweep}", "--output", str(notes), check=False)
    assert "--force" in one_line_error(out)
    assert notes.read_text() == "<p>my notes</p>"
    flame("report", f"sweep_dir={sweep}", "--output", str(notes), "--force")
    page = notes.read_text()
    tag = '<meta name="generator" content="flame report">\n'
    assert tag in page
    notes.write_text(page.replace(tag, ""))  # a page from before the tag is a report too
    flame("report", f"sweep_dir={sweep}", "--output", str(notes))
    (tmp_path / "dir").mkdir()
    out = flame("report", f"sweep_dir={sweep}", "--output", str(tmp_path / "dir"), check=False)
    assert "directory" in one_line_error(out)


def test_figure_write_that_fails_leaves_the_old_figure(tmp_path: Path) -> None:
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    png, svg = save_figure(fig, tmp_path, "law")
    before = checksums(tmp_path)
    fig, ax = plt.subplots()
    ax.plot([1, 2], [4, 3])

    def killed(handle, **kwargs):  # a writer that dies half-way (a kill, a full disk)
        handle.write(b"<svg partial")
        raise OSError(28, "No space left on device")

    fig.savefig = killed
    with pytest.raises(OSError):
        save_figure(fig, tmp_path, "law")
    assert checksums(tmp_path) == before  # the old figure, and no temp file beside it
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert svg.read_text().rstrip().endswith("</svg>")


def test_report_leaves_out_a_truncated_figure(sweep: Path) -> None:
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    _, whole = save_figure(fig, sweep / "figures", "whole")
    cut = sweep / "figures" / "cut.svg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (sweep / "figures" / "cut.png").write_bytes(b"\x89PNG\r\n")
    before = checksums(sweep)
    out = flame("report", f"sweep_dir={sweep}")
    warning = out.stderr.strip()
    assert len(warning.splitlines()) == 1 and "Traceback" not in warning, warning
    assert str(cut) in warning and "flame fit" in warning and "truncated" in warning
    page = (sweep / "report.html").read_text()
    assert 'id="fig-whole"' in page and 'id="fig-cut"' not in page
    assert {k: v for k, v in checksums(sweep).items() if k != "report.html"} == before


def test_csv_cells_a_spreadsheet_would_run_are_neutralised() -> None:
    assert neutralise("\rx") == "'\rx" and neutralise(-1) == -1  # (pandas leaves \r unquoted)
    frame = pd.DataFrame({"member": ["=HYPERLINK(\"x\")", "+1+1", "-cmd", "@SUM(A1)", "\tx",
                                     "x\ty", "a-b", "'=already"],
                          "reason": ["-1.5", "-inf", "1e-3", "+2", "", None, "ok", "x"],
                          "loss": [-1.5, 2.0, np.nan, -3.0, 1.0, 1.0, 1.0, 1.0]})
    back = pd.read_csv(io.StringIO(csv_text(frame)), keep_default_na=False)
    assert list(back["member"]) == ["'=HYPERLINK(\"x\")", "'+1+1", "'-cmd", "'@SUM(A1)", "'\tx",
                                    "x\ty", "a-b", "'=already"]
    assert list(back["reason"][:5]) == ["-1.5", "-inf", "1e-3", "+2", ""]  # numbers stay
    assert csv_text(frame).splitlines()[1].endswith(",-1.5")  # a float column is untouched
    assert csv_text(back) == csv_text(frame)  # written twice: quoted once, not again


def test_collect_neutralises_only_what_needs_it(sweep: Path) -> None:
    table = collect_sweep(sweep)
    # a normal study: results.csv is exactly what pandas writes (nothing to neutralise)
    assert (sweep / "results.csv").read_text() == table.to_csv(index=False)
    with open(sweep / "plan.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["member"] = "=1+2"  # a member name someone typed into the family
    with open(sweep / "plan.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    collect_sweep(sweep)
    results = pd.read_csv(sweep / "results.csv", dtype={"run_id": str})
    assert results["member"].iloc[0] == "'=1+2"
    assert results["budget"].dtype == float  # numbers are still numbers


def _fit(csv_path: Path, sweep_dir: Path, seed: int) -> Path:
    isoflop_sweep(Law(), np.array([1e18, 3e18, 1e19, 3e19, 1e20]), seed=seed).to_csv(
        csv_path, index=False)
    flame("fit", f"results={csv_path}", f"sweep_dir={sweep_dir}", "fit.bootstrap=0",
          "fit.target_budgets=[1e20]", "fit.figures=false")
    return sweep_dir


def test_compare_with_two_studies_of_one_name_keeps_both(tmp_path: Path, monkeypatch) -> None:
    def quick(fig, out_dir, name):  # drawing is most of compare's time; test_compare draws
        plt.close(fig)
        for suffix in (".png", ".svg"):
            (Path(out_dir) / f"{name}{suffix}").write_text(str(out_dir))
    monkeypatch.setattr("analysis.figures.save_figure", quick)
    a = _fit(tmp_path / "a.csv", tmp_path / "moe", 0)
    b1 = _fit(tmp_path / "b1.csv", tmp_path / "x" / "study", 1)
    b2 = _fit(tmp_path / "b2.csv", tmp_path / "y" / "study", 2)
    flame("compare", str(a), str(b1), "--bootstrap", "0")
    first = checksums(a / "compare" / "study")
    out = flame("compare", str(a), str(b2), "--bootstrap", "0")
    folders = sorted(p.name for p in (a / "compare").iterdir())
    assert len(folders) == 2 and folders[0] == "study" and folders[1].startswith("study-")
    assert checksums(a / "compare" / "study") == first  # the first comparison is kept
    assert folders[1] in out.stdout
    second = json.loads((a / "compare" / folders[1] / "compare.json").read_text())
    assert second["b_dir"] == str(b2.resolve())
    # the same B again goes to its own folder, not a third
    assert output_dir(a, b1) == a / "compare" / "study"
    assert output_dir(a, b2) == a / "compare" / folders[1]

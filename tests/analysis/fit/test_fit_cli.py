"""`flame fit results=FILE.csv` through the CLI: where it writes, and a directory passed as
the file. The real CLI (``jobs.cli.main``, in this process: a subprocess adds only an
interpreter's start), cwd a fresh directory."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np

from analysis.design.synthetic import Law, isoflop_sweep
from tests.jobs.conftest import flame


def _flame(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return flame("fit", *args, cwd=cwd, check=False)


def _checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _default_sweep_outputs(cwd: Path) -> Path:
    """A previous fit of the demo sweep in out/demo (the default sweep_dir)."""
    demo = cwd / "out" / "demo"
    (demo / "figures").mkdir(parents=True)
    (demo / "fit.json").write_text('{"approach2": "the demo sweep\'s own fit"}\n')
    (demo / "selection.csv").write_text("budget,n_opt\n1e12,5e6\n")
    (demo / "figures" / "isoflop.png").write_bytes(b"\x89PNG demo figure")
    return demo


def test_results_without_sweep_dir_writes_beside_the_csv(tmp_path):
    demo = _default_sweep_outputs(tmp_path)
    before = _checksums(demo)
    points = isoflop_sweep(Law(), np.geomspace(1e18, 1e20, 4), per_budget=7, seed=1)
    points.to_csv(tmp_path / "mine.csv", index=False)
    done = _flame(tmp_path, "results=mine.csv", "fit.bootstrap=20")
    assert done.returncode == 0, done.stderr
    assert _checksums(demo) == before  # the demo sweep's fit, selection and figures untouched
    out = tmp_path / "mine_fit"
    assert (out / "fit.json").is_file() and (out / "selection.csv").is_file()
    assert (out / "figures" / "isoflop.png").is_file()
    assert f"wrote {Path('mine_fit') / 'fit.json'}" in done.stdout


def test_an_explicit_sweep_dir_is_still_honoured(tmp_path):
    points = isoflop_sweep(Law(), np.geomspace(1e18, 1e20, 4), per_budget=7, seed=1)
    points.to_csv(tmp_path / "mine.csv", index=False)
    done = _flame(tmp_path, "results=mine.csv", "sweep_dir=elsewhere", "fit.bootstrap=0",
                  "fit.figures=false")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "elsewhere" / "fit.json").is_file()
    assert not (tmp_path / "mine_fit").exists()


def test_results_pointing_at_a_directory_is_one_clear_error(tmp_path):
    demo = _default_sweep_outputs(tmp_path)
    before = _checksums(tmp_path)
    done = _flame(tmp_path, "results=out/demo")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0] == (f"flame fit: error: results: {Path('out/demo')} is a directory, not a "
                        f"CSV file; pass the file itself, e.g. "
                        f"results={Path('out/demo') / 'results.csv'}")
    assert _checksums(tmp_path) == before and demo.is_dir()

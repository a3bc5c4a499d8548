"""``flame eval`` on a sweep: lm-eval's results per checkpoint, acc_<task> columns and
downstream.json; what finished is never evaluated again (after a crash halfway too); bad input
exits 2 with one line and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import jobs.eval as flame_eval
from analysis.downstream.results import eval_dir
from sweep.io import CHECKPOINTS_DIR, run_dir
from sweep.records import RunRecord, write_record
from tests.jobs.conftest import flame
from tests.trainers.eval_fixtures import embedded_sweep
from trainers.embedded.eval_tasks import COMPLETION
from trainers.embedded.trainer import EmbeddedTrainer
from trainers.lm_eval_tasks import RESULTS_FILE

QUICK = ("--limit", "4", "--n-boot", "5")


def _written(sweep: Path) -> list[Path]:
    """What flame eval may write: eval folders, results.csv, downstream.json, figures."""
    found = list(sweep.glob("runs/*/eval")) + list(sweep.glob("figures"))
    return found + [p for p in (sweep / "results.csv", sweep / "downstream.json") if p.exists()]


def test_eval_scores_each_completed_run_once_and_collects(tmp_path):
    sweep = tmp_path / "sweep"
    done = embedded_sweep(sweep, completed=2)
    out = flame("eval", f"sweep_dir={sweep}", *QUICK)
    assert "0 already evaluated, 2 to evaluate" in out.stdout
    for run_id in done:
        document = json.loads((eval_dir(sweep, run_id) / RESULTS_FILE).read_text())
        assert 0 <= document["results"][COMPLETION]["acc,none"] <= 1  # lm-eval's own format
        assert document["flame"]["run_id"] == run_id and document["n-samples"][COMPLETION][
            "effective"] == 4
    results = pd.read_csv(sweep / "results.csv")
    column = f"acc_{COMPLETION}"
    assert results[column].notna().sum() == 2 and f"{column}_stderr" in results
    assert set(results.loc[results[column].notna(), "run_id"]) == set(done)
    downstream = json.loads((sweep / "downstream.json").read_text())
    assert downstream["tasks"][0]["task"] == COMPLETION and downstream["tasks"][0]["runs"] == 0
    stamp = (eval_dir(sweep, done[0]) / RESULTS_FILE).stat().st_mtime_ns
    again = flame("eval", f"sweep_dir={sweep}", *QUICK)
    assert "2 already evaluated, 0 to evaluate" in again.stdout
    assert (eval_dir(sweep, done[0]) / RESULTS_FILE).stat().st_mtime_ns == stamp


def test_a_crash_halfway_leaves_the_finished_evaluation_and_the_rerun_does_the_rest(
        tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    done = embedded_sweep(sweep, completed=2)
    real, calls = EmbeddedTrainer.evaluate, []

    def dies_second(self, target, *args, **kwargs):
        calls.append(target.run_id)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while evaluating the second checkpoint
        return real(self, target, *args, **kwargs)

    monkeypatch.setattr(EmbeddedTrainer, "evaluate", dies_second)
    with pytest.raises(KeyboardInterrupt):
        flame_eval.eval_command(_cfg(sweep), _args())
    first = eval_dir(sweep, calls[0]) / RESULTS_FILE
    assert first.is_file() and not (eval_dir(sweep, calls[1]) / RESULTS_FILE).exists()
    monkeypatch.setattr(EmbeddedTrainer, "evaluate", real)
    stamp = first.stat().st_mtime_ns
    out = flame("eval", f"sweep_dir={sweep}", *QUICK)
    assert "1 already evaluated, 1 to evaluate" in out.stdout
    assert first.stat().st_mtime_ns == stamp
    assert all((eval_dir(sweep, r) / RESULTS_FILE).is_file() for r in done)


def _cfg(sweep: Path):
    from jobs.cli import compose

    return compose([f"sweep_dir={sweep}"])


def _args(**kw):
    import argparse

    parser = argparse.ArgumentParser()
    flame_eval.eval_arguments(parser)
    return parser.parse_args(list(QUICK) + [f"--{k}={v}" for k, v in kw.items()])


def test_an_unknown_task_is_one_line_exit_2_and_nothing_written(tmp_path):
    sweep = tmp_path / "sweep"
    embedded_sweep(sweep, completed=1)
    out = flame("eval", f"sweep_dir={sweep}", "--tasks", "hellaswagg", *QUICK, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "hellaswagg" in lines[0] and "'hellaswag'" in lines[0]
    assert _written(sweep) == []


def test_a_completed_run_without_its_checkpoint_is_one_line_exit_2_and_nothing_written(
        tmp_path):
    sweep = tmp_path / "sweep"
    done = embedded_sweep(sweep, completed=2)
    (run_dir(sweep, done[1]) / CHECKPOINTS_DIR / "latest.pt").unlink()
    out = flame("eval", f"sweep_dir={sweep}", *QUICK, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and done[1] in lines[0] and "missing" in lines[0]
    assert _written(sweep) == []


def test_a_sweep_of_the_simulated_trainer_has_nothing_to_evaluate(tmp_path):
    from tests.jobs.conftest import make_sweep

    sweep = tmp_path / "sweep"
    make_sweep(sweep)
    write_record(sweep, RunRecord(run_id=flame_eval.read_plan(sweep)[0].run_id,
                                  state="completed"))
    out = flame("eval", f"sweep_dir={sweep}", check=False)
    assert out.returncode == 2 and "trainer=simulated" in out.stderr
    assert _written(sweep) == []


@pytest.mark.slow  # ~1 min: two lm-eval jobs on the local SLURM
@pytest.mark.slurm
def test_on_slurm_each_checkpoint_is_a_task_of_one_array(tmp_path, slurm_cluster):
    sweep = tmp_path / "sweep"
    done = embedded_sweep(sweep, 2, "cluster=slurm_local")
    out = flame("eval", f"sweep_dir={sweep}", "cluster=slurm_local", *QUICK, timeout=600)
    assert "submitted 2 evaluation jobs" in out.stdout, out.stdout + out.stderr
    assert all((eval_dir(sweep, r) / RESULTS_FILE).is_file() for r in done)
    assert pd.read_csv(sweep / "results.csv")[f"acc_{COMPLETION}"].notna().sum() == 2


def test_a_sweep_without_a_completed_run_is_one_line_exit_2_and_nothing_written(tmp_path):
    sweep = tmp_path / "sweep"
    embedded_sweep(sweep, completed=0)
    out = flame("eval", f"sweep_dir={sweep}", check=False)
    assert out.returncode == 2 and "no completed run" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and _written(sweep) == []

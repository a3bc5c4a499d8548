"""The executors with the scheduler faked (tests/jobs/fake_slurm.py): submit, release,
reconcile, cancel and recovery logic in milliseconds; typed job ids and the registry. The real
SLURM tests (test_slurm*.py) stay as the integration layer."""

from __future__ import annotations

import argparse
import functools
import json
import os
from pathlib import Path

import pytest

from jobs import ledger
from jobs.commands import cancel
from jobs.executors.base import CallBatch, CallOutcome, JobId
from jobs.executors.registry import executor_class, executor_for
from jobs.executors.slurm import LAUNCHES_DIR, _write_manifest, task_file, unreleased_arrays
from jobs.launch import launch_sweep
from jobs.settings import ClusterSettings
from jobs.status import poll
from jobs.sweepdir import jobs_dir
from sweep.errors import ConfigError
from tests.jobs.conftest import make_sweep, plan_ids
from tests.jobs.fake_slurm import fake_slurm


def test_job_ids_render_and_parse_in_one_place() -> None:
    for text, parsed in (("12_3", JobId("slurm", "12", 3)), ("12", JobId("slurm", "12")),
                         ("local-4711", JobId("local", "4711"))):
        assert JobId.parse(text) == parsed and str(parsed) == text
    assert JobId("slurm", "12", 3).array == JobId("slurm", "12")
    for other in (None, "", "pid-12", "in-process", "unknown", "12_x"):
        assert JobId.parse(other) is None


def test_the_registry_names_its_choices_and_loads_plugins() -> None:
    with pytest.raises(ConfigError, match=r"cluster.executor='pbs': use one of \('local', "):
        executor_class("pbs")
    with pytest.raises(ConfigError, match="cannot import tests.jobs.nowhere"):
        executor_class("tests.jobs.nowhere:Nothing")
    toy = executor_class("tests.jobs.toys:InlineExecutor")
    assert JobId.parse("inline-7_1") == JobId(toy.name, "7", 1)


def test_slurm_keys_are_checked_by_the_slurm_executor(tmp_path: Path) -> None:
    cfg = make_sweep(tmp_path, "cluster=slurm_local")
    cluster = ClusterSettings.from_cfg(cfg)
    assert executor_for(cluster).settings.max_array_size == cluster.max_array_size
    with pytest.raises(ConfigError, match="cluster.signal_delay_s=3600 is not shorter"):
        ClusterSettings.from_cfg({"cluster": {**cfg.cluster, "signal_delay_s": 3600}})


def test_launch_submits_held_arrays_records_then_releases(tmp_path: Path, monkeypatch) -> None:
    cfg = make_sweep(tmp_path, "cluster=slurm_local", "cluster.max_array_size=10")
    with fake_slurm(monkeypatch) as slurm:
        report = launch_sweep(tmp_path, cfg)
    assert len(report.submitted) == 15 and [j.tasks for j in slurm.jobs] == [10, 5]
    assert all(job.held for job in slurm.jobs)
    releases = [c for c in slurm.calls if c[:2] == ["scontrol", "release"]]
    assert releases == [["scontrol", "release", j.job_id] for j in slurm.jobs]
    # one submitit folder per array (not per task), and its sbatch logs there too
    logs = jobs_dir(tmp_path) / "logs"
    folders = sorted(p.name for p in logs.iterdir() if p.is_dir())
    assert folders == sorted(j.job_id for j in slurm.jobs)
    first = report.job_ids[0]
    assert task_file(tmp_path, first, "submitted.pkl") == logs / first.split("_")[0] / (
        f"{first}_submitted.pkl") and task_file(tmp_path, first, "submitted.pkl").is_file()
    assert f"--output={logs}/%A/%A_%a_0_log.out" in slurm.jobs[0].sbatch
    records = ledger.read_all(tmp_path)
    assert [records[rid].job_ids for rid in plan_ids(tmp_path)[:2]] == [["4200_0"], ["4200_1"]]
    assert {rec.state for rec in records.values()} == {"submitted"}
    assert unreleased_arrays(tmp_path) == []
    with fake_slurm(monkeypatch) as slurm:  # a second launch submits nothing
        assert launch_sweep(tmp_path, cfg).submitted == () and slurm.jobs == []


def test_task_files_of_older_sweeps_are_read_in_their_per_task_folders(tmp_path: Path) -> None:
    old = jobs_dir(tmp_path) / "logs" / "12_3" / "12_3_0_log.err"
    old.parent.mkdir(parents=True)
    old.write_text("old layout\n")
    assert task_file(tmp_path, "12_3", "0_log.err") == old
    assert task_file(tmp_path, "12_4", "0_log.err") == jobs_dir(tmp_path) / "logs" / "12" / (
        "12_4_0_log.err")


def test_reconcile_maps_scheduler_ends_and_requeues(tmp_path: Path, monkeypatch) -> None:
    cfg = make_sweep(tmp_path, "cluster=slurm_local")
    ids = plan_ids(tmp_path)
    with fake_slurm(monkeypatch) as slurm:
        launch_sweep(tmp_path, cfg)
        ledger.transition(tmp_path, ids[3], ledger.RUNNING, job_id="4200_3")
        slurm.queue = {"4200_3": ("PENDING", "BeginTime"), "4200_4": ("PENDING", "Priority")}
        slurm.sacct = {"4200_0": ("TIMEOUT", 60), "4200_1": ("CANCELLED by 0", 5),
                       "4200_2": ("COMPLETED", 9), "4200_3": ("RUNNING", 9)}
        status = poll(tmp_path, cfg)
    states = {run.run_id: run for run in status.runs}
    assert [states[rid].state for rid in ids[:5]] == ["timeout", "cancelled", "failed",
                                                      "submitted", "submitted"]
    assert "ended COMPLETED without the run recording its end" in \
        ledger.read(tmp_path, ids[2]).error_tail
    assert ledger.read(tmp_path, ids[3]).pending_reason == "BeginTime"  # requeued
    assert states[ids[4]].reason == "Priority"


def test_cancel_scancels_the_runs_jobs(tmp_path: Path, monkeypatch) -> None:
    cfg = make_sweep(tmp_path, "cluster=slurm_local")
    ids = plan_ids(tmp_path)
    with fake_slurm(monkeypatch) as slurm:
        launch_sweep(tmp_path, cfg)
        assert cancel(cfg, argparse.Namespace(run_ids=ids[:2], all=False)) == 0
    assert ["scancel", "4200_0", "4200_1"] in slurm.calls
    assert {ledger.read(tmp_path, rid).state for rid in ids[:2]} == {"cancelled"}


def test_a_killed_launchers_array_is_recovered_by_name(tmp_path: Path, monkeypatch) -> None:
    cfg = make_sweep(tmp_path, "cluster=slurm_local")
    ids = plan_ids(tmp_path)
    # died before sbatch: its manifest names no job, and SLURM knows none by that name
    _write_manifest(tmp_path, {"name": "flame-never", "run_ids": ids[:3], "job_id": None,
                               "released": False})
    with fake_slurm(monkeypatch) as slurm:
        report = launch_sweep(tmp_path, cfg)
    assert report.recovered == () and len(report.submitted) == 15
    assert not (jobs_dir(tmp_path) / LAUNCHES_DIR / "flame-never.json").exists()
    assert [c[0] for c in slurm.calls].count("sbatch") == 0  # sbatch goes through submitit
    assert json.loads(next((jobs_dir(tmp_path) / LAUNCHES_DIR).glob("*.json")).read_text())[
        "released"]


def test_dry_run_renders_the_arrays_a_launch_would_submit(tmp_path: Path) -> None:
    cfg = make_sweep(tmp_path, "cluster=slurm_local", "cluster.max_array_size=10")
    report = launch_sweep(tmp_path, cfg, dry_run=True)
    sbatch = [p for p in report.files if p.suffix == ".sbatch"]
    assert [p.name for p in sbatch] == ["array-0.sbatch", "array-1.sbatch"]
    assert "#SBATCH --array=0-9%2" in sbatch[0].read_text() or \
        "#SBATCH --array=0-9" in sbatch[0].read_text()


def _square(x: int) -> int:
    return x * x


def _threads() -> str | None:
    return os.environ.get("FLAME_THREADS")


def test_one_off_calls_run_here_in_order_or_in_a_pool_and_a_toy_executor_refuses(
        tmp_path: Path) -> None:
    """``Executor.run_calls`` (what `flame data` and `flame eval` submit): the local executor
    runs the calls in this process one after another, or in a pool whose processes get
    ``threads_per_job`` as FLAME_THREADS; an executor without it names itself and the fix."""
    from tests.jobs.toys import NAME

    outcomes: list[CallOutcome] = []
    local = executor_for(ClusterSettings(executor="local", parallelism=2, threads_per_job=3))
    calls = [functools.partial(_square, x) for x in range(4)]
    assert local.run_calls(CallBatch("data", tmp_path, parallel=False), calls,
                           outcomes.append) == []
    assert [(o.index, o.result, o.error) for o in outcomes] == [(i, i * i, None)
                                                                for i in range(4)]
    outcomes.clear()
    local.run_calls(CallBatch("data", tmp_path), [_threads] * 2, outcomes.append)
    assert [o.result for o in outcomes] == ["3", "3"]
    toy = executor_for(ClusterSettings(executor=NAME))
    with pytest.raises(ConfigError, match=rf"cluster.executor='{NAME}': `flame eval` runs on "
                                          "cluster=local or a SLURM cluster"):
        toy.run_calls(CallBatch("eval", tmp_path), calls, outcomes.append)


@pytest.mark.slurm
def test_asking_slurm_for_active_jobs_sets_its_client_up_first(slurm_cluster, monkeypatch
                                                               ) -> None:
    """`flame data` asks which shard jobs are still queued before it submits: on
    cluster=slurm_local without SLURM_CONF exported, squeue has no configuration until the
    executor's check exports the local cluster's (it failed so: "Could not establish a
    configuration source")."""
    monkeypatch.delenv("SLURM_CONF", raising=False)
    executor = executor_for(ClusterSettings(executor="slurm", name="slurm_local",
                                            use_local_cluster=True))
    assert executor.active_jobs(["999999_0"]) == set()

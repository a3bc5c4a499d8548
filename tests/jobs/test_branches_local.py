"""WSD cooldown branches on cluster=local (issue 14): a worker claims trunks first, never a
branch before its trunk's checkpoint at the branch step exists, polls while that trunk is
queued or training, and leaves branches of a failed trunk queued; status says why they wait,
resubmit of the trunk brings them along, cancel of the trunk cancels them. Real planner
(planner.strategy=branches), real ledger, real simulated trainer, real `flame` CLI."""

from __future__ import annotations

import argparse
import csv
import json
from contextlib import ExitStack
from pathlib import Path

from jobs import ledger
from jobs.branches import WITH_TRUNK, resubmit_set
from jobs.commands import cancel
from jobs.executors.local import ensure_local_workers
from jobs.executors.slurm import SlurmSettings, branch_arrays
from jobs.launch import launch_sweep
from jobs.settings import ClusterSettings
from jobs.status import collect, wait_until_terminal
from jobs.sweepdir import read_config
from jobs.task import WAITING, claim_lock, claim_next
from sweep.planrow import PlanRow
from tests.jobs.conftest import flame, make_sweep
from trainers.artifacts import branch_checkpoint
from trainers.run import train_run

# One member at two budgets: one trunk and two branches (steps 184 and 614 of 230 and 767).
ONE_TRUNK = ("planner.strategy=branches", "budgets.flops=[3e11,1e12]",
             "family.grid={hidden_size:[64],num_layers:[2]}")


def rows_by_role(sweep_dir: Path) -> tuple[PlanRow, list[PlanRow]]:
    with open(sweep_dir / "plan.csv", newline="") as handle:
        rows = [PlanRow.from_csv(r) for r in csv.DictReader(handle)]
    trunk, = [r for r in rows if r.role == "trunk"]
    return trunk, [r for r in rows if r.role == "branch"]


def rewrite_plan(sweep_dir: Path, edit) -> str:
    """plan.csv with ``edit(rows)`` applied (rows as csv dicts); returns the original text."""
    text = (sweep_dir / "plan.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    rows = edit(rows) or rows
    with open(sweep_dir / "plan.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return text


def claim(sweep_dir: Path, job: str, held: ExitStack) -> str | None:
    with claim_lock(sweep_dir) as registry:
        return claim_next(sweep_dir, job, registry, held)


def test_worker_claims_the_trunk_first_and_a_branch_only_from_its_checkpoint(
        tmp_path: Path) -> None:
    make_sweep(tmp_path, "cluster=local", *ONE_TRUNK)
    trunk, branches = rows_by_role(tmp_path)
    assert sorted(trunk.save_steps) == sorted(b.branch_step for b in branches)
    rewrite_plan(tmp_path, lambda rows: rows[::-1])  # branches first in plan order
    ledger.transition_many(tmp_path, [(r.run_id, ledger.SUBMITTED, None)
                                      for r in (trunk, *branches)])
    with ExitStack() as trunk_worker, ExitStack() as other:
        assert claim(tmp_path, "local-1", trunk_worker) == trunk.run_id
        # the trunk is training (its worker holds train.lock): the other worker polls
        assert claim(tmp_path, "local-2", other) == WAITING
        status = collect(tmp_path)
        assert {r.wait.line() for r in status.runs if r.wait} == {
            f"waiting for trunk {trunk.run_id}: running"}
        assert not status.all_terminal
        # the trunk trains (the real simulated trainer) and keeps its branch checkpoints
        train_run(trunk, read_config(tmp_path), tmp_path / "runs" / trunk.run_id)
        for b in branches:
            assert branch_checkpoint(tmp_path / "runs" / trunk.run_id, b.branch_step,
                                     "simulated").is_file()
        claimed = {claim(tmp_path, "local-2", other), claim(tmp_path, "local-3", other)}
        assert claimed == {b.run_id for b in branches}
        assert collect(tmp_path).blocked == 0


def test_branches_of_a_failed_trunk_stay_queued_and_workers_exit(tmp_path: Path) -> None:
    cfg = make_sweep(tmp_path, "cluster=local", *ONE_TRUNK)
    trunk, branches = rows_by_role(tmp_path)
    ledger.transition_many(tmp_path, [(r.run_id, ledger.SUBMITTED, None)
                                      for r in (trunk, *branches)])
    with ExitStack() as held:
        assert claim(tmp_path, "local-1", held) == trunk.run_id
    # the worker died while training it (its train.lock is free): no worker waits for it
    with ExitStack() as held:
        assert claim(tmp_path, "local-2", held) is None
    ledger.transition(tmp_path, trunk.run_id, ledger.FAILED, error_tail="worker exited")
    with ExitStack() as held:
        assert claim(tmp_path, "local-2", held) is None  # the worker exits ...
    assert {ledger.read(tmp_path, b.run_id).state for b in branches} == {"submitted"}
    status = collect(tmp_path)  # ... the branches stay queued, blocked, and nothing waits
    assert status.blocked == 2 and status.all_terminal
    assert {r.wait.line() for r in status.runs if r.wait} == {
        f"waiting for trunk {trunk.run_id}: failed"}
    assert ensure_local_workers(tmp_path, ClusterSettings.from_cfg(cfg)) == []


def cli_run(*argv: str) -> tuple[int, str, str]:
    """The `flame` CLI in this process (conftest's runner), stdout's whitespace folded."""
    out = flame(*argv, check=False)
    return out.returncode, " ".join(out.stdout.split()), out.stderr


def test_failed_trunk_status_and_resubmit_through_the_cli(tmp_path: Path) -> None:
    cfg = make_sweep(tmp_path, "cluster=local", "cluster.parallelism=2",
                     "cluster.poll_s=0.2", *ONE_TRUNK)
    trunk, branches = rows_by_role(tmp_path)
    cli = (f"sweep_dir={tmp_path}", "cluster=local", "cluster.parallelism=2")

    def break_trunk(rows):  # the simulated trainer refuses N = 0: the trunk fails for real
        next(r for r in rows if r["run_id"] == trunk.run_id)["n_active_flame"] = "0"
    good = rewrite_plan(tmp_path, break_trunk)
    launch_sweep(tmp_path, cfg)
    final = wait_until_terminal(tmp_path, cfg, poll_s=0.2, progress=False)
    assert final.counts["failed"] == 1 and final.counts["submitted"] == 2 and final.blocked == 2
    code, out, _ = cli_run("status", *cli)
    assert code == 0 and (f"2 branches waiting for trunk {trunk.run_id}: failed; `flame "
                          f"resubmit {trunk.run_id}` trains it again and resubmits them") in out
    code, _, err = cli_run("resubmit", branches[0].run_id, *cli)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"flame resubmit {trunk.run_id} {branches[0].run_id}" in err
    (tmp_path / "plan.csv").write_text(good)  # fixed: the trunk and its branches run
    code, out, _ = cli_run("resubmit", trunk.run_id, *cli)
    assert "reset 1 runs to planned, and 2 branches of their trunks" in out
    assert code == 0 and "submitted 3 runs" in out
    final = wait_until_terminal(tmp_path, cfg, poll_s=0.2, progress=False)
    assert final.counts["completed"] == 3, final.summary()
    trunk_rec = ledger.read(tmp_path, trunk.run_id)
    for b in branches:  # each branch started once, after its trunk's checkpoint was written
        rec = ledger.read(tmp_path, b.run_id)
        assert rec.attempts == 1
        ckpt = branch_checkpoint(tmp_path / "runs" / trunk.run_id, b.branch_step, "simulated")
        assert ckpt.stat().st_mtime <= ledger.state_path(tmp_path, b.run_id).stat().st_mtime
        assert "branching from trunk" in (tmp_path / "runs" / b.run_id / "train.log").read_text()
    assert trunk_rec.attempts == 2


def test_cancel_of_a_trunk_cancels_its_waiting_branches(tmp_path: Path, capsys) -> None:
    cfg = make_sweep(tmp_path, "cluster=local", *ONE_TRUNK)
    trunk, branches = rows_by_role(tmp_path)
    ledger.transition_many(tmp_path, [(r.run_id, ledger.SUBMITTED, None)
                                      for r in (trunk, *branches)])
    assert cancel(cfg, argparse.Namespace(run_ids=[trunk.run_id], all=False)) == 0
    assert (f"trunk {trunk.run_id}: 2 waiting branches cancelled with it (`flame resubmit "
            f"{trunk.run_id}` brings them back)") in capsys.readouterr().out
    records = ledger.read_all(tmp_path)
    for b in branches:
        assert records[b.run_id].state == "cancelled"
        assert records[b.run_id].error_tail == f"{WITH_TRUNK} {trunk.run_id}"
    rows = [trunk, *branches]  # a resubmit of the trunk brings them back
    again = resubmit_set(tmp_path, rows, records, [trunk.run_id], named=True)
    assert again.chosen == [trunk.run_id] and sorted(again.along) == sorted(
        b.run_id for b in branches)


def test_dry_run_writes_each_trunks_branches_as_a_dependent_array(tmp_path: Path) -> None:
    cfg = make_sweep(tmp_path, "cluster=slurm_local", *ONE_TRUNK)
    trunk, branches = rows_by_role(tmp_path)
    report = launch_sweep(tmp_path, cfg, dry_run=True)  # no sbatch needed for a dry run
    first, listing, second, branch_listing = (p.read_text() for p in report.files)
    assert "dependency" not in first and trunk.run_id in listing
    assert f"#SBATCH --dependency=afterok:JOB_OF_TRUNK_{trunk.run_id}" in second
    assert "#SBATCH --kill-on-invalid-dep=no" in second
    assert sorted(json.loads(branch_listing)["run_ids"]) == sorted(b.run_id for b in branches)


def test_launch_leaves_branches_of_a_cancelled_trunk_planned(tmp_path: Path, capsys) -> None:
    cfg = make_sweep(tmp_path, "cluster=local", *ONE_TRUNK)
    trunk, branches = rows_by_role(tmp_path)
    assert cancel(cfg, argparse.Namespace(run_ids=[trunk.run_id], all=False)) == 0
    report = launch_sweep(tmp_path, cfg, dry_run=True)
    assert report.submitted == () and report.skipped[branches[0].run_id] == "planned"
    assert report.warnings == (
        f"2 branches not launched, waiting for trunk {trunk.run_id}: cancelled; `flame "
        f"resubmit {trunk.run_id}` trains it again and resubmits them "
        f"({', '.join(b.run_id for b in branches)})",)
    status = collect(tmp_path)
    assert status.blocked == 2 and status.all_terminal  # nothing to wait for


def test_a_branch_whose_completed_trunk_lost_its_checkpoint_fails_naming_it(
        tmp_path: Path) -> None:
    make_sweep(tmp_path, "cluster=local", *ONE_TRUNK)
    trunk, branches = rows_by_role(tmp_path)
    trunk_dir = tmp_path / "runs" / trunk.run_id
    train_run(trunk, read_config(tmp_path), trunk_dir)
    ledger.transition(tmp_path, trunk.run_id, ledger.COMPLETED)
    first = min(branches, key=lambda b: b.branch_step)
    branch_checkpoint(trunk_dir, first.branch_step, "simulated").unlink()  # e.g. cleaned up
    ledger.transition_many(tmp_path, [(b.run_id, ledger.SUBMITTED, None) for b in branches])
    status = collect(tmp_path)
    wait, = [r.wait for r in status.runs if r.wait]
    assert wait.line() == f"waiting for trunk {trunk.run_id}: completed without the checkpoint"
    assert f"delete runs/{trunk.run_id}/state.json" in wait.fix() and status.blocked == 1
    with ExitStack() as held:  # the other branch is claimed; this one fails, naming the trunk
        assert claim(tmp_path, "local-1", held) != first.run_id
    rec = ledger.read(tmp_path, first.run_id)
    assert rec.state == "failed" and f"its trunk {trunk.run_id} completed without a " \
        f"checkpoint at iteration {first.branch_step}" in rec.error_tail


def test_branch_arrays_depend_on_a_live_trunk_only(tmp_path: Path) -> None:
    """A resubmitted branch whose trunk is done (its checkpoint there) needs no dependency; one
    whose trunk is queued depends on the trunk's task, as the ledger records it."""
    cfg = make_sweep(tmp_path, "cluster=slurm_local", *ONE_TRUNK)
    trunk, branches = rows_by_role(tmp_path)
    settings = SlurmSettings.from_cluster(ClusterSettings.from_cfg(cfg))
    ids = [b.run_id for b in branches]
    ledger.transition(tmp_path, trunk.run_id, ledger.SUBMITTED, job_id="4242_7")
    rows = [trunk, *branches]
    assert branch_arrays(tmp_path, rows, ids, settings) == [(ids, "afterok:4242_7")]
    train_run(trunk, read_config(tmp_path), tmp_path / "runs" / trunk.run_id)
    ledger.transition(tmp_path, trunk.run_id, ledger.COMPLETED)
    assert branch_arrays(tmp_path, rows, ids, settings) == [(ids, None)]

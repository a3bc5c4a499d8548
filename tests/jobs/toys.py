"""A toy executor defined outside flame's packages: it proves a new scheduler needs no change
under jobs/ (``cluster.executor=tests.jobs.toys:InlineExecutor`` names it as a plugin).

Each submission is one "array": a child process (``python -m tests.jobs.toys``) that trains its
runs one after another through ``jobs.task.train_one``, as a scheduler's array would. Its job ids
are ``inline-<pid>_<task>``; reconcile fails a run whose array process died while it was active.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

from jobs import ledger
from jobs.branches import trunks_first
from jobs.executors.base import Executor, JobId, Reconciled
from jobs.task import pid_alive, train_one
from sweep.planrow import PlanRow
from sweep.records import RunRecord

REPO = Path(__file__).resolve().parents[2]
NAME = "tests.jobs.toys:InlineExecutor"


class InlineExecutor(Executor):
    """Runs each submission as one child process training its runs in order."""

    name: ClassVar[str] = NAME
    job_prefix: ClassVar[str] = "inline-"

    @classmethod
    def settings_from(cls, cluster: object) -> None:
        return None  # no keys of its own

    def submit(self, sweep_dir: Path, rows: list[PlanRow], todo: list[str]) -> list[JobId]:
        wanted = set(todo)
        order = [row.run_id for row in trunks_first(rows) if row.run_id in wanted]
        if not order:
            return []
        child = subprocess.Popen([sys.executable, "-m", "tests.jobs.toys", str(sweep_dir),
                                  *order], cwd=REPO, stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ids = [JobId(self.name, str(child.pid), k) for k in range(len(order))]
        ledger.transition_many(sweep_dir, [(rid, ledger.SUBMITTED, str(job))
                                           for rid, job in zip(order, ids)])
        child.stdin.close()  # recorded: the child may start
        self.children = [*getattr(self, "children", []), child]
        return ids

    def reconcile(self, sweep_dir: Path, active: dict[str, RunRecord]) -> Reconciled:
        for child in getattr(self, "children", []):
            child.poll()  # reap ended children, so that pid_alive sees them gone
        changed = 0
        for run_id, job in self.jobs_of(active).items():
            if not pid_alive(job.pid()):
                changed += ledger.transition(sweep_dir, run_id, ledger.FAILED,
                                             error_tail=f"{job} ended early") is not None
        return Reconciled(changed)

    def cancel(self, sweep_dir: Path, jobs: list[tuple[str, JobId]]) -> None:
        return None  # a cancelled run is skipped by its array (its move to running fails)

    def dry_run(self, sweep_dir: Path, rows: list[PlanRow], todo: list[str],
                folder: Path) -> list[Path]:
        path = folder / "inline.json"
        path.write_text(json.dumps({"run_ids": todo}, indent=1) + "\n")
        return [path]


def _array(sweep_dir: Path, run_ids: list[str]) -> None:
    """The child: wait until the launcher recorded the submission, then train each run."""
    sys.stdin.read()
    for task, run_id in enumerate(run_ids):
        job = str(JobId(NAME, str(os.getpid()), task))
        with ledger.training_lock(sweep_dir, run_id, job) as mine:
            if not mine or ledger.transition(sweep_dir, run_id, ledger.RUNNING,
                                             job_id=job) is None:
                continue
            try:
                train_one(sweep_dir, run_id)
            except Exception:  # noqa: BLE001 - recorded as failed in state.json
                pass


if __name__ == "__main__":
    from jobs.executors.registry import executor_class

    executor_class(NAME)  # its job ids parse in this process too
    _array(Path(sys.argv[1]), sys.argv[2:])

"""What runs inside a job: mark the ledger, train through ``trainers.run.train_run``, record the
outcome. ``RunTask`` is one run (a SLURM array task); ``LocalWorker`` trains runs one after
another, claiming the next queued one from the ledger, so ``cluster=local`` never runs more
than ``parallelism`` runs at once on this machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import UncompletedJobError

from jobs import ledger
from jobs.branches import (
    NO_CHECKPOINT,
    QUEUED,
    Wait,
    has_branches,
    ready,
    sweep_trainer,
    trunk_word,
    trunks_first,
    waits,
)
from jobs.executors.base import JobId
from jobs.sweepdir import jobs_dir, plan_rows, read_config
from sweep.io import (
    SUMMARY_JSON,
    DiskFull,
    atomic_write_text,
    disk_full_cause,
    disk_is_full,
    free_space,
    naming,
    run_dir,
    spend_reserve,
)
from sweep.planrow import PlanRow
from trainers.signals import Preempted

WORKERS_JSON = "local-workers.json"
CLAIM_LOCK = "local.lock"


def _job_id() -> str:
    try:
        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:  # called outside submitit (tests, a debugger)
        return f"pid-{os.getpid()}"


def train_one(sweep_dir: Path, run_id: str) -> dict[str, Any] | None:
    """Train a run the ledger already marks ``running``; record completed/failed/timeout.

    Returns the trainer's summary, or None when it failed (the error is in state.json; SLURM
    jobs re-raise so sacct shows FAILED). A requeue (SystemExit from submitit) passes through
    and leaves the run ``running``: its next attempt resumes from the checkpoint.
    """
    from trainers.run import train_run  # the trainer's imports stay out of the launcher

    row = next((r for r in plan_rows(sweep_dir) if r.run_id == run_id), None)
    try:
        if row is None:
            raise LookupError(f"run {run_id} is not in {sweep_dir}/plan.csv (re-planned?)")
        summary = train_run(row, read_config(sweep_dir), run_dir(sweep_dir, run_id))
    except UncompletedJobError as err:  # submitit would not requeue: time limit, attempts spent
        ledger.transition(sweep_dir, run_id, ledger.TIMEOUT, error_tail=str(err))
        raise
    except Preempted as err:
        if not os.environ.get("SLURM_JOB_ID"):  # not in a SLURM job: a rerun resumes
            ledger.transition(sweep_dir, run_id, ledger.FAILED, error_tail=str(err))
            raise
        requeue_after_signal(err)
    except Exception as err:
        ledger.transition(sweep_dir, run_id, ledger.FAILED,
                          error_tail=failure_tail(err, run_dir(sweep_dir, run_id)))
        raise
    path = run_dir(sweep_dir, run_id) / SUMMARY_JSON
    text = json.dumps(summary, indent=1, default=str) + "\n"
    try:  # the outcome of a whole run: worth the sweep's ballast on a full disk
        spend_reserve(ledger.reserve_path(sweep_dir), lambda: atomic_write_text(path, text))
    except DiskFull as err:
        ledger.transition(sweep_dir, run_id, ledger.FAILED, error_tail=(
            f"trained to the end, but {err}; free space, then `flame resubmit --failed` "
            "finishes it from its last checkpoint"))
        raise
    ledger.transition(sweep_dir, run_id, ledger.COMPLETED)
    return summary


def failure_tail(err: BaseException, folder: Path) -> str:
    """What state.json keeps of a run's error (called while handling it): the traceback's
    last lines, and when the disk was full a last line that says so (the line ``flame
    status`` shows), naming the file where the error did."""
    text = ledger.tail(traceback.format_exc())
    cause = disk_full_cause(err)
    if cause is not None:
        where = cause.filename or f"a file under {folder}"
        return (f"{text}\ndisk full: {where} could not be written ({free_space(folder)}); free "
                "space, then `flame resubmit --failed` resumes it from its last checkpoint")
    if disk_is_full(folder):  # a writer that hides ENOSPC (torch.save: "file write failed")
        return (f"{text}\ndisk full ({free_space(folder)}), the likely cause: free space, "
                "then `flame resubmit --failed` resumes it from its last checkpoint")
    return text


def requeue_after_signal(err: Preempted) -> None:
    """A SLURM task's trainer stopped on a signal that no handler turned into a requeue
    (SIGTERM: submitit's handler only logs it) and saved what it could. SLURM's SIGTERM to the
    whole step comes with preemption, ``scontrol requeue`` and cancels, which end the job (it
    is ``COMPLETING`` then: SLURM requeues it or not), and with ``scancel --signal=TERM``,
    which leaves it ``RUNNING``. Running: requeue it as the time limit's USR2 does (submitit's
    handler: ``RunTask.checkpoint``, ``scontrol requeue``, exit). Ending: exit and leave the run
    ``running``; the next start resumes it, or reconcile records what SLURM did."""
    from jobs.executors.slurm_client import SchedulerError, job_state

    try:
        state = job_state(_job_id())
    except SchedulerError:
        state = None
    usr2 = signal.getsignal(signal.SIGUSR2)
    if state == "RUNNING" and callable(usr2):
        usr2(signal.SIGUSR2, None)  # requeues and exits (SystemExit) on the task with rank 0
    raise SystemExit(f"flame: {err}; job {_job_id()} is {state or 'ending'}: the run stays "
                     "running, its next start resumes")


def _global_rank() -> int:
    """This task's SLURM_PROCID (through submitit: 0 outside a job). Only task 0 of a job
    updates the ledger and writes metrics.jsonl and summary.json."""
    try:
        return int(submitit.JobEnvironment().global_rank)
    except RuntimeError:
        return 0


def run_other_node(sweep_dir: Path, run_id: str) -> None:
    """Node k > 0 of a multi-node run: run that node's launcher and end with its outcome (a
    nonzero exit raises, so sacct shows the task FAILED); task 0 records the run."""
    from trainers.registry import trainer_for

    row, config = next(r for r in plan_rows(sweep_dir) if r.run_id == run_id), read_config(
        sweep_dir)
    trainer_for(config["trainer"]).run_node(row, config, run_dir(sweep_dir, run_id))


class RunTask(submitit.helpers.Checkpointable):
    """One run as a submitit job: requeued on timeout/preemption up to ``max_attempts``."""

    def __init__(self, sweep_dir: str, run_id: str, max_attempts: int) -> None:
        self.sweep_dir = str(sweep_dir)
        self.run_id = run_id
        self.max_attempts = int(max_attempts)

    def __call__(self) -> dict[str, Any] | None:
        sweep, job_id = Path(self.sweep_dir), _job_id()
        if _global_rank() != 0:  # a multi-node run's other nodes: their launcher, nothing else
            return run_other_node(sweep, self.run_id)
        ledger.ensure_reserve(sweep)  # so a full disk cannot hide how the run ends
        # The training lock before the ledger: a second job for the same run (its state.json
        # was deleted and the run launched again) must not train it alongside the first.
        with ledger.training_lock(sweep, self.run_id, job_id) as mine:
            if not mine:
                defer_to_holder(sweep, self.run_id, job_id)
                return None
            if not branch_may_start(sweep, self.run_id):
                return None
            started = ledger.transition(sweep, self.run_id, ledger.RUNNING, job_id=job_id)
            if started is None:  # cancelled (or finished) while it waited in the queue
                return None
            return train_one(sweep, self.run_id)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission | None:
        """Called by submitit on USR2 after the trainer saved its checkpoint: requeue the same
        task unless the run was cancelled or has used its attempts (then: ``timeout``)."""
        rec = ledger.read(Path(self.sweep_dir), self.run_id) or ledger.new_record(self.run_id)
        if rec.state in ledger.TERMINAL:
            return None
        used = rec.attempts - rec.attempts_at_submit
        if used >= self.max_attempts:
            ledger.transition(Path(self.sweep_dir), self.run_id, ledger.TIMEOUT,
                              error_tail=f"time limit or preemption after {used} attempts "
                                         f"(cluster.max_attempts={self.max_attempts}); the "
                                         "checkpoint is kept: `flame resubmit --failed` resumes")
            return None
        return submitit.helpers.DelayedSubmission(self)


def branch_may_start(sweep_dir: Path, run_id: str) -> bool:
    """A SLURM task's guard: a branch starts only from its trunk's checkpoint. Its array depends
    on the trunk's task (afterok), so this fails only when the trunk's job ended ``COMPLETED``
    without the checkpoint (e.g. it ran out of attempts): the branch is then marked failed,
    naming the trunk, instead of training from nothing."""
    row = next((r for r in plan_rows(sweep_dir) if r.run_id == run_id), None)
    if row is None or row.role != "branch" or ready(sweep_dir, row, sweep_trainer(sweep_dir)):
        return True
    trunk = ledger.read(sweep_dir, row.parent)
    ledger.transition(sweep_dir, run_id, ledger.FAILED, job_id=_job_id(), error_tail=(
        f"its trunk {row.parent} ({trunk_word(trunk)}) has no checkpoint at iteration "
        f"{row.branch_step}; `flame resubmit {row.parent}` trains it again and resubmits this "
        "branch"))
    return False


def defer_to_holder(sweep_dir: Path, run_id: str, job_id: str) -> None:
    """Another process holds the run's training lock: leave the run to it, and point the
    ledger at that job (reconcile then follows the job that really trains it)."""
    holder = ledger.lock_holder(sweep_dir, run_id)
    if holder and holder != "unknown":
        ledger.adopt(sweep_dir, run_id, holder)
    print(f"flame: run {run_id} is being trained by job {holder}; job {job_id} leaves it to "
          "that job", file=sys.stderr, flush=True)


@contextmanager
def claim_lock(sweep_dir: Path) -> Iterator[Path]:
    """The sweep's local-worker lock: claims, worker exits and worker starts are serialised."""
    folder = jobs_dir(sweep_dir)
    with naming(folder / CLAIM_LOCK):  # a full disk refuses even an empty new file
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / CLAIM_LOCK, "a")
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield folder / WORKERS_JSON


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by the launcher that started it) is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_workers(path: Path) -> dict[str, str]:
    """Registry of local worker jobs: submitit job id (controller PID) -> start time."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def live_workers(path: Path) -> dict[str, str]:
    return {jid: t for jid, t in read_workers(path).items() if pid_alive(int(jid))}


WAITING = "waiting"
"""``claim_next``: nothing to claim now, but a branch waits for a trunk that is queued or
training (its checkpoint will come): the worker polls again instead of exiting."""
BRANCH_POLL_S = 0.5
"""How often a worker with only waiting branches left looks again (a ledger read per look)."""


def claim_next(sweep_dir: Path, job_id: str, registry: Path, held: ExitStack) -> str | None:
    """Under the claim lock: the first queued run (``trunks_first``, then the largest), now
    ``running`` with its training lock pushed on ``held``; ``WAITING`` when only branches
    whose trunk is queued or training are left; or None, and then this worker leaves the
    registry (so a launcher knows to start another). A queued run another process is training
    already (its lock is held) is recorded as that process's and skipped. A branch is claimed
    only once its trunk's checkpoint at its branch step exists (``jobs.branches``)."""
    states = ledger.read_all(sweep_dir)
    # Among trunks and among the others, largest first (planned FLOPs a run costs itself;
    # plan order among equals): the runs left for the end are then the short ones, so no
    # core idles long while another finishes a long run.
    queued = [row for row in trunks_first(plan_rows(sweep_dir), then=lambda r: -r.own_flops)
              if ledger.state_of(states, row.run_id) == ledger.SUBMITTED]
    blocked = branch_waits(sweep_dir, queued, states) if has_branches(queued) else {}
    for row in queued:
        run_id = row.run_id
        if run_id in blocked:
            continue
        guard = ExitStack()
        if not guard.enter_context(ledger.training_lock(sweep_dir, run_id, job_id)):
            guard.close()
            defer_to_holder(sweep_dir, run_id, job_id)
            continue
        try:
            moved = ledger.transition(sweep_dir, run_id, ledger.RUNNING, job_id=job_id)
        except BaseException:  # a full disk: the run stays queued, its lock is let go
            guard.close()
            raise
        if moved:
            held.callback(guard.close)
            return run_id
        guard.close()
    if any(wait.live and _trunk_alive(sweep_dir, wait) for wait in blocked.values()):
        return WAITING
    workers = read_workers(registry)
    worker = JobId.parse(job_id)
    workers.pop(worker.job if worker is not None else job_id, None)
    atomic_write_text(registry, json.dumps(workers, indent=1) + "\n")
    return None


def branch_waits(sweep_dir: Path, queued: list[PlanRow],
                 states: dict[str, ledger.RunRecord]) -> dict[str, Wait]:
    """The queued branches that may not start yet. One whose trunk ended ``completed`` without
    the checkpoint it needs can never start: it is marked failed, naming the trunk."""
    found = waits(sweep_dir, queued, states)
    for run_id, wait in list(found.items()):
        if wait.trunk_state == NO_CHECKPOINT:
            ledger.transition(sweep_dir, run_id, ledger.FAILED, error_tail=(
                f"its trunk {wait.trunk} completed without a checkpoint at iteration "
                f"{wait.step}; `flame resubmit {wait.trunk} {run_id}` trains both again"))
            del found[run_id]
    return found


def _trunk_alive(sweep_dir: Path, wait: Wait) -> bool:
    """A queued trunk will be claimed by a worker (trunks come first); a running one is alive
    while some process holds its training lock (a worker that died holds none: reconcile then
    marks the trunk failed, and waiting for it would never end)."""
    return wait.trunk_state == QUEUED or ledger.lock_holder(sweep_dir, wait.trunk) is not None


class StopWorker(BaseException):
    """SIGTERM reached a local worker while it trained a run (raised from its handler: at the
    trainer's next step boundary, after the checkpoint, or at once outside the step loop). A
    BaseException, as KeyboardInterrupt is: no trainer's ``except Exception`` swallows it."""


STOPPED_REASON = ("its local worker stopped on SIGTERM after a checkpoint; the next worker "
                  "(`flame launch`) resumes it")
"""The run's ``pending_reason`` when a SIGTERM sent it back to the queue."""


class LocalWorker:
    """A local job that trains queued runs of one sweep until none is left, or until SIGTERM:
    then its run saves a checkpoint at the next step boundary and goes back to ``submitted``
    (another worker, or the next ``flame launch``, resumes it) and the worker exits."""

    def __init__(self, sweep_dir: str, threads: int) -> None:
        self.sweep_dir = str(sweep_dir)
        self.threads = int(threads)
        self.stopping = False
        self.training = False

    def _on_sigterm(self, signum: int, frame: object) -> None:
        """Replaces submitit's handler, which only logs SIGTERM ("Bypassing signal SIGTERM"), so
        the worker went on through the whole queue. While training the trainer defers the
        signal (``trainers.signals``) and calls this after its checkpoint."""
        first, self.stopping = not self.stopping, True
        if self.training and first:  # once: SIGTERM to the group comes twice (and forwarded)
            raise StopWorker()

    def __call__(self) -> list[str]:
        os.environ["FLAME_THREADS"] = str(self.threads)
        os.environ.pop("SLURM_CPUS_PER_TASK", None)  # a launcher inside an allocation
        sweep, job_id, done = Path(self.sweep_dir), str(JobId("local", _job_id())), []
        ledger.ensure_reserve(sweep)  # so a full disk cannot hide how its runs end
        with _sigterm_seen(self._on_sigterm) as seen:
            while not (self.stopping or seen()):
                with ExitStack() as held:  # the claimed run's training lock, until trained
                    try:
                        with claim_lock(sweep) as registry:
                            run_id = claim_next(sweep, job_id, registry, held)
                    except DiskFull:  # nothing can be claimed: the queue waits for space
                        break
                    if run_id is None:
                        return done
                    if run_id == WAITING:  # only branches of a trunk still training are left
                        time.sleep(BRANCH_POLL_S)
                        continue
                    if not self._train(sweep, run_id, job_id):
                        break
                done.append(run_id)
        try:
            leave_registry(sweep, job_id)
        except DiskFull:  # the registry keeps a dead pid: live_workers skips it
            pass
        return done

    def _train(self, sweep: Path, run_id: str, job_id: str) -> bool:
        """Train one claimed run; False when the worker must stop (SIGTERM, its time limit)."""
        if self.stopping:  # SIGTERM while it claimed the run
            ledger.requeued(sweep, run_id, job_id, STOPPED_REASON)
            return False
        self.training = True
        try:
            train_one(sweep, run_id)
        except StopWorker:
            ledger.requeued(sweep, run_id, job_id, STOPPED_REASON)
            return False
        except UncompletedJobError:  # this worker hit its time limit: stop claiming
            return False
        except Exception as err:  # recorded in the run's state.json; go on with the next run
            if disk_full_cause(err) is not None or disk_is_full(sweep):
                return False  # unless the disk is full: the next runs would fail as this one
        finally:
            self.training = False
        return True


def leave_registry(sweep_dir: Path, job_id: str) -> None:
    """Drop this worker from the sweep's registry (it exits with runs still queued)."""
    with claim_lock(sweep_dir) as registry:
        workers = read_workers(registry)
        worker = JobId.parse(job_id)
        if workers.pop(worker.job if worker is not None else job_id, None) is not None:
            atomic_write_text(registry, json.dumps(workers, indent=1) + "\n")


@contextmanager
def _sigterm_seen(handler: Any) -> Iterator[Any]:
    """Install ``handler`` for SIGTERM and yield a function telling whether a SIGTERM arrived
    at all. A trainer defers SIGTERM while it trains and drops one still pending after its
    last step (the run is complete), so the handler alone would miss it; the interpreter's
    wakeup fd sees every signal, whichever handler runs."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    previous = signal.signal(signal.SIGTERM, handler)
    old_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)

    def seen() -> bool:
        try:
            return signal.SIGTERM in os.read(read, 512)
        except BlockingIOError:
            return False

    try:
        yield seen
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGTERM, previous)
        os.close(read)
        os.close(write)

"""The SLURM executor: each group of runs is one held sbatch array, submitted through submitit.

Crash-safe: each array is written down first in a manifest (``<sweep>/jobs/launches/<name>.json``),
submitted *held* under that unique job name, its id recorded in the manifest and the runs'
ledgers, and only then released. A launcher killed at any point leaves either a manifest without
a job (nothing to do), or a held job the next launcher finds by name (``squeue``/``sacct
--name``), records and releases (``recover``): no run is lost and none is submitted twice.
Every SLURM option goes through submitit's own parameters (``slurm_partition``, ...); the few
client calls flame makes itself (sacct, squeue, scancel, release) are ``slurm_client``'s.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import submitit

from jobs import ledger
from jobs.branches import trunks_first, waits
from jobs.executors import slurm_client as client
from jobs.executors.base import CallBatch, CallOutcome, Executor, JobId, Reconciled
from jobs.resources import job_resources, mem_option
from jobs.settings import ClusterSettings
from jobs.sweepdir import jobs_dir
from jobs.task import RunTask
from sweep.errors import ConfigError
from sweep.io import atomic_write_text
from sweep.planrow import PlanRow
from sweep.records import RunRecord

LAUNCHES_DIR = "launches"
LOGS_DIR = "logs"
JOB_FOLDER = "%A"
"""submitit's folder under ``logs/``: one per array (``%A``, the array's job id; a plain job's
own id), holding every task's pickles and logs (``<job>_<task>_0_log.err``). One folder per
task (``%j``, as older sweeps have) cost a directory creation per run at submit, a tenth of a
10,000-run launch. Old sweeps' per-task folders are still read (``task_file``)."""
BACKEND = "slurm"


@dataclass(frozen=True)
class SlurmSettings:
    """The ``cluster`` group's keys the SLURM executor uses (``from_cluster``)."""

    name: str
    """The cluster config's name (for messages)."""
    timeout_min: int
    """Wall-time limit of one attempt, whole minutes."""
    max_attempts: int
    """Starts of one submission, requeues included, before the run is marked ``timeout``."""
    use_local_cluster: bool = False
    """With no ``SLURM_CONF`` in the environment, use ``flame cluster up``'s cluster."""
    partition: str | None = None
    """``--partition`` (None = the cluster's default)."""
    account: str | None = None
    """``--account``."""
    qos: str | None = None
    """``--qos``."""
    gpus_per_node: int = 0
    """GPUs per node of a job."""
    cpus_per_task: int = 1
    """CPUs per task (one task per node)."""
    nodes: int = 1
    """Nodes per job, one task each."""
    request_gpus: bool = True
    """Ask for ``gpus_per_node`` GPUs (false on a CPU-only cluster)."""
    mem_gb: float | None = None
    """Memory per node in GB (0 = all of it, --mem=0; None = the partition's default)."""
    signal_delay_s: int = 120
    """USR2 this many seconds before the time limit: checkpoint and requeue."""
    array_parallelism: int = 256
    """Tasks of one array running at once (%N)."""
    max_array_size: int = 1000
    """Tasks per sbatch array."""
    setup: tuple[str, ...] = ()
    """Shell lines run before each job."""
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    """Any other sbatch option (submitit's ``slurm_additional_parameters``)."""

    def __post_init__(self) -> None:
        if self.signal_delay_s >= 60 * self.timeout_min:
            raise ConfigError(f"cluster.signal_delay_s={self.signal_delay_s} is not shorter than "
                              f"cluster.timeout_min={self.timeout_min} minutes; lower it")

    @classmethod
    def from_cluster(cls, cluster: ClusterSettings) -> SlurmSettings:
        """The SLURM keys of a validated ``cluster`` group, CPUs and memory per task derived
        from the node's shape where unset (``jobs.resources.job_resources``)."""
        resources = job_resources(cluster)
        return cls(name=cluster.name, timeout_min=cluster.timeout_min,
                   max_attempts=cluster.max_attempts, use_local_cluster=cluster.use_local_cluster,
                   partition=cluster.partition, account=cluster.account, qos=cluster.qos,
                   gpus_per_node=cluster.gpus_per_node, cpus_per_task=resources.cpus_per_task,
                   nodes=cluster.nodes, request_gpus=cluster.request_gpus,
                   mem_gb=resources.mem_gb,
                   signal_delay_s=cluster.signal_delay_s,
                   array_parallelism=cluster.array_parallelism,
                   max_array_size=cluster.max_array_size, setup=tuple(cluster.setup),
                   additional_parameters=dict(cluster.additional_parameters))


# --- submitit parameters and executors ------------------------------------------------------

def slurm_parameters(settings: SlurmSettings, name: str, hold: bool = True,
                     dependency: str | None = None) -> dict[str, Any]:
    """AutoExecutor parameters of one array. ``hold``: submitted held, released by the launcher
    once the ledger records the job id, so a launcher killed in between leaves nothing
    running that the ledger does not know. ``dependency``: sbatch's ``--dependency`` (a branch
    array's ``afterok:<trunk job>_<task>``), with ``--kill-on-invalid-dep=no`` so that a failed
    trunk leaves its branches pending (``DependencyNeverSatisfied``) on every cluster, whatever
    its ``DependencyParameters``."""
    extra = dict(settings.additional_parameters)
    if hold:
        extra["hold"] = True
    if dependency:
        extra.update(dependency=dependency, kill_on_invalid_dep="no")
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": settings.timeout_min,
        "nodes": settings.nodes,  # one task per node: each runs that node's launcher
        "tasks_per_node": 1,
        "cpus_per_task": settings.cpus_per_task,
        "slurm_signal_delay_s": settings.signal_delay_s,
        "slurm_array_parallelism": settings.array_parallelism,
        # srun does not inherit --cpus-per-task on SLURM 22.05-23.02 (jobs/resources.py)
        "slurm_setup": [f"export SRUN_CPUS_PER_TASK={settings.cpus_per_task}",
                        *settings.setup],
        "slurm_additional_parameters": extra,
    }
    if settings.gpus_per_node and settings.request_gpus:
        params["gpus_per_node"] = settings.gpus_per_node
    if settings.mem_gb is not None:  # 0: all of each node's memory (--mem=0)
        extra["mem"] = mem_option(settings.mem_gb)
    for key in ("partition", "account", "qos"):
        if getattr(settings, key):
            params[f"slurm_{key}"] = getattr(settings, key)
    return params


def slurm_executor(settings: SlurmSettings, folder: Path, name: str, hold: bool = True,
                   dependency: str | None = None) -> submitit.AutoExecutor:
    """An executor whose ``batch()`` submits one SLURM array named ``name``."""
    # submitit stops requeuing after this many timeouts; the ledger's cap must decide first
    executor = submitit.AutoExecutor(folder=folder / JOB_FOLDER, cluster="slurm",
                                     slurm_max_num_timeout=settings.max_attempts + 1)
    executor.update_parameters(**slurm_parameters(settings, name, hold, dependency))
    return executor


class DryRunSlurmExecutor(submitit.SlurmExecutor):
    """submitit's SlurmExecutor on a machine without SLURM, for ``flame launch --dry-run``: its
    constructor refuses to exist without ``srun`` on PATH (SlurmExecutor.__init__ checks
    ``affinity()``), though writing an sbatch file needs none. Never submits."""

    @classmethod
    def affinity(cls) -> int:
        return 1


def sbatch_text(settings: SlurmSettings, folder: Path, name: str, dependency: str | None,
                count: int) -> str:
    """The sbatch file of an array of ``count`` tasks, as a launch would submit it.

    The one place flame uses submitit's private API (hence ``submitit<1.6`` in pyproject.toml):
    submitit has no public "render the sbatch file without submitting". The text comes from
    ``_make_sbatch_string`` (what ``SlurmExecutor._make_submission_file_text`` calls), fed the
    parameters ``slurm_executor`` sets, translated as ``AutoExecutor.update_parameters`` does
    (``_convert_parameters``: timeout_min -> time, ...): so the file is the one a launch submits.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    inner = DryRunSlurmExecutor(folder=folder / JOB_FOLDER,
                                max_num_timeout=settings.max_attempts + 1)
    params = slurm_parameters(settings, name, hold=False, dependency=dependency)
    generic = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    inner.update_parameters(**inner._convert_parameters(generic),
                            **{k[len("slurm_"):]: v for k, v in params.items()
                               if k.startswith("slurm_")})
    return _make_sbatch_string(command=inner._submitit_command_str, folder=inner.folder,
                               map_count=count, **inner.parameters)


# --- which arrays: one order for the launch and the dry run ---------------------------------

def shape(row: PlanRow, settings: SlurmSettings) -> tuple:
    """A run's resource shape: runs of one shape share an array. One shape per cluster config
    today; the hook for per-member resources (GPUs, time limit) later."""
    return (settings.gpus_per_node, settings.cpus_per_task, settings.timeout_min)


def _groups(rows: list[PlanRow], todo: list[str], settings: SlurmSettings) -> list[list[str]]:
    """``todo`` split by resource shape (in the order of ``rows``), then into arrays of at most
    ``max_array_size``."""
    wanted, by_shape = set(todo), {}
    for row in rows:
        if row.run_id in wanted:
            by_shape.setdefault(shape(row, settings), []).append(row.run_id)
    size = settings.max_array_size
    return [ids[i:i + size] for ids in by_shape.values() for i in range(0, len(ids), size)]


def arrays(sweep_dir: Path, rows: list[PlanRow], todo: list[str], settings: SlurmSettings,
           dry_run: bool = False) -> Iterator[tuple[list[str], str | None]]:
    """The arrays a launch of ``todo`` submits, in order, with their sbatch dependency: trunks
    and independent runs first (trunks lead their arrays: the first tasks to start), then the
    branches, one array per trunk that depends on the trunk's task (``branch_arrays``). A
    generator: the branches' arrays are made once the earlier ones were taken (submitted), so
    their dependency names a job id the ledger already holds."""
    branch = {row.run_id for row in rows if row.role == "branch"}
    for group in _groups(trunks_first(rows), [rid for rid in todo if rid not in branch],
                         settings):
        yield group, None
    later = [rid for rid in todo if rid in branch]
    if later:
        yield from branch_arrays(sweep_dir, rows, later, settings, dry_run)


def branch_arrays(sweep_dir: Path, rows: list[PlanRow], todo: list[str],
                  settings: SlurmSettings, dry_run: bool = False
                  ) -> list[tuple[list[str], str | None]]:
    """The branches of ``todo`` as arrays with their sbatch dependency: one array per trunk
    still queued or training, ``afterok:<its task>`` (sbatch takes one dependency per
    submission, for all the tasks of an array: hence one array per trunk, not one for all
    branches); branches whose trunk checkpoint exists already in arrays without one.
    ``dry_run``: a trunk not submitted yet is named in place of its job id."""
    records = ledger.read_all(sweep_dir)
    by_id = {row.run_id: row for row in rows}
    found = waits(sweep_dir, [by_id[rid] for rid in todo], records)
    by_dependency: dict[str | None, list[str]] = {}
    for run_id in todo:
        dependency = None
        if run_id in found:  # trunk queued or training (launch held back the others)
            trunk = found[run_id].trunk
            job = JobId.parse(records[trunk].last_job_id) if trunk in records else None
            if found[run_id].live and job is not None and job.backend == BACKEND:
                dependency = f"afterok:{job}"
            elif dry_run:
                dependency = f"afterok:JOB_OF_TRUNK_{trunk}"
        by_dependency.setdefault(dependency, []).append(run_id)
    return [(group, dependency) for dependency, ids in by_dependency.items()
            for group in _groups(rows, ids, settings)]


# --- manifests: what makes a launch crash-safe ----------------------------------------------

def unreleased_arrays(sweep_dir: Path) -> list[str]:
    """Names of arrays a killed launcher left held (the next ``flame launch`` releases them)."""
    folder = jobs_dir(sweep_dir) / LAUNCHES_DIR
    if not folder.is_dir():
        return []
    return [p.stem for p in sorted(folder.glob("*.json"))
            if not json.loads(p.read_text()).get("released")]


def _manifest_path(sweep_dir: Path, name: str) -> Path:
    return jobs_dir(sweep_dir) / LAUNCHES_DIR / f"{name}.json"


def _write_manifest(sweep_dir: Path, manifest: dict) -> None:
    atomic_write_text(_manifest_path(sweep_dir, manifest["name"]),
                      json.dumps(manifest, indent=1) + "\n")


def task_ids(job: JobId, count: int) -> list[JobId]:
    """The tasks of an array of ``count`` (a one-task array is submitted as a plain job)."""
    return [job] if count == 1 else [JobId(BACKEND, job.job, i) for i in range(count)]


def submit_array(sweep_dir: Path, settings: SlurmSettings, group: list[str],
                 dependency: str | None = None) -> list[JobId]:
    """Submit one held array (manifest first), record its tasks, release it."""
    name = f"flame-{group[0]}" if len(group) == 1 else f"flame-{uuid.uuid4().hex[:12]}"
    manifest = {"name": name, "run_ids": group, "job_id": None, "released": False,
                "sweep_dir": str(sweep_dir), "created_at": ledger.now()}
    if dependency:
        manifest["dependency"] = dependency
    _write_manifest(sweep_dir, manifest)
    executor = slurm_executor(settings, jobs_dir(sweep_dir) / LOGS_DIR, name,
                              dependency=dependency)
    with executor.batch():
        jobs = [executor.submit(RunTask(str(sweep_dir), rid, settings.max_attempts))
                for rid in group]
    ids = [JobId.parse(job.job_id) for job in jobs]
    manifest["job_id"] = ids[0].job
    _write_manifest(sweep_dir, manifest)
    ledger.transition_many(sweep_dir, [(rid, ledger.SUBMITTED, str(job))
                                       for rid, job in zip(group, ids)])
    try:
        client.release(manifest["job_id"])
    except client.SchedulerError as err:  # held and recorded: the next launch releases it
        raise ConfigError(_held_message(manifest, err)) from None
    manifest["released"] = True
    _write_manifest(sweep_dir, manifest)
    return ids


# ``scontrol release`` errors that mean nothing is left held: the job already ended, or
# SLURM no longer knows it (reconcile then deals with its runs). Any other error (a timeout,
# slurmctld restarting) may be transient: the array stays held and the next launch retries.
NOTHING_HELD = ("already finished", "invalid job id", "not held", "already released")


def _held_message(manifest: dict, err: Exception) -> str:
    return (f"array {manifest['name']} (job {manifest['job_id']}, "
            f"{len(manifest['run_ids'])} runs) is submitted but still held: `scontrol release` "
            f"failed ({' '.join(str(err).split())}); run `flame launch` again to release it")


def recover_manifests(sweep_dir: Path, warnings: list[str] | None = None) -> list[str]:
    """Finish what a killed launcher left: find each unreleased array by its name, record its
    runs as submitted, release it. An array whose job never reached SLURM is forgotten (its
    runs are still ``planned``); one whose job files are missing is cancelled. An array whose
    release fails for another reason than "nothing held" stays unreleased (a line is added to
    ``warnings``) and the next launch tries again."""
    recovered: list[str] = []
    folder = jobs_dir(sweep_dir) / LAUNCHES_DIR
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        manifest = json.loads(path.read_text())
        if manifest.get("released"):
            continue
        job_id = manifest.get("job_id") or client.find_by_name(manifest["name"])
        if job_id is None:
            path.unlink()
            continue
        tasks = [str(t) for t in task_ids(JobId(BACKEND, job_id), len(manifest["run_ids"]))]
        if not all(task_file(sweep_dir, t, "submitted.pkl").exists() for t in tasks):
            client.scancel([job_id])  # killed inside submitit, before it stored the tasks
            path.unlink()
            continue
        manifest["job_id"] = job_id
        _write_manifest(sweep_dir, manifest)
        recovered += ledger.transition_many(
            sweep_dir, [(rid, ledger.SUBMITTED, task)
                        for rid, task in zip(manifest["run_ids"], tasks)])
        try:
            client.release(job_id)
        except client.SchedulerError as err:
            if not any(text in str(err).lower() for text in NOTHING_HELD):
                if warnings is not None:
                    warnings.append(_held_message(manifest, err))
                continue
        manifest["released"] = True
        _write_manifest(sweep_dir, manifest)
    return recovered


# --- what the ledger missed ------------------------------------------------------------------

FORGOTTEN_AFTER_S = 600.0
"""A job neither sacct nor squeue knows this long after the run's last ledger change is gone
(its cluster's state was reset, or accounting purged it): the run is marked failed."""

_RUNNING = client.QueueEntry(client.S_RUNNING, "None")


def task_file(sweep_dir: Path, task: JobId | str, suffix: str) -> Path:
    """submitit's file ``<task>_<suffix>`` of an array task (``12_3``) or plain job, in its
    array's folder (``JOB_FOLDER``), or in an older sweep's per-task folder where that exists."""
    logs, task = jobs_dir(sweep_dir) / LOGS_DIR, str(task)
    path = logs / task.split("_")[0] / f"{task}_{suffix}"
    old = logs / task / f"{task}_{suffix}"
    return old if not path.exists() and old.exists() else path


def _stderr_tail(sweep_dir: Path, job: JobId) -> str | None:
    path = task_file(sweep_dir, job, "0_log.err")
    try:
        return ledger.tail(path.read_text(errors="replace"))
    except OSError:
        return None


def reconcile_slurm(sweep_dir: Path, active: dict[str, RunRecord],
                    jobs: dict[str, JobId]) -> Reconciled:
    """One ``sacct`` call (ends: time-limit kills, cancels, node failures, failing setup lines)
    and one ``squeue`` call (jobs pending again after a requeue, and why) for the whole sweep.
    ``jobs``: the SLURM job of each run of ``active``."""
    active = {rid: rec for rid, rec in active.items() if rid in jobs}
    infos = client.job_states(jobs.values())
    queue = client.queue_entries() if active else {}
    changed = _forgotten(sweep_dir, active, jobs, infos) + _requeued(sweep_dir, active, jobs,
                                                                       queue)
    pending = {rid: queue[str(job)].reason for rid, job in jobs.items()
               if queue.get(str(job), _RUNNING).state == client.PENDING}
    for run_id, job in jobs.items():
        if str(job) in queue:  # slurmctld still holds it (a node failure's requeue): not
            continue           # ended, whatever accounting's latest record says
        info = infos.get(str(job))
        new = client.SACCT_TO_LEDGER.get(info.state) if info else None
        if new not in ledger.TERMINAL:
            continue
        tail = _stderr_tail(sweep_dir, job)
        if new == ledger.COMPLETED:  # the task records this itself before its job ends
            new = ledger.FAILED
            tail = f"job {job} ended COMPLETED without the run recording its end\n{tail}"
        note = f"scheduler: job {job} {info.state}"
        if ledger.transition(sweep_dir, run_id, new, error_tail=f"{note}\n{tail or ''}"):
            changed += 1
    return Reconciled(changed, pending)


def _requeued(sweep_dir: Path, active: dict[str, RunRecord], jobs: dict[str, JobId],
              queue: dict[str, client.QueueEntry]) -> int:
    """A ``running`` run whose job squeue shows pending again (a node failure or ``scontrol
    requeue`` put it back) goes back to ``submitted``. ``active`` was read before squeue was
    asked: a run whose task started since then has one more attempt and is left alone."""
    changed = 0
    for run_id, rec in active.items():
        entry = queue.get(str(jobs[run_id]))
        if rec.state == ledger.RUNNING and entry is not None and entry.state == client.PENDING:
            changed += ledger.requeued(sweep_dir, run_id, str(jobs[run_id]), entry.reason,
                                       attempts=rec.attempts)
    return changed


def _forgotten(sweep_dir: Path, active: dict[str, RunRecord], jobs: dict[str, JobId],
               infos: dict) -> int:
    """Fail active runs whose job the scheduler has no record of (else they wait forever)."""
    unknown = [rid for rid, rec in active.items() if str(jobs[rid]) not in infos
               and ledger.seconds_between(rec.updated_at, None) > FORGOTTEN_AFTER_S]
    if not unknown:
        return 0
    queued = client.queued_jobs()  # slurmdbd can lag or be down while slurmctld has the job
    changed = 0
    for run_id in unknown:
        job = jobs[run_id]
        if job.job in queued:
            continue
        note = (f"scheduler: no record of job {job} in sacct or squeue "
                f"{FORGOTTEN_AFTER_S:.0f} s after its last change (cluster state reset or "
                "accounting purged); `flame resubmit --failed` submits it again")
        changed += ledger.transition(sweep_dir, run_id, ledger.FAILED, error_tail=note) is not None
    return changed


# --- the executor ------------------------------------------------------------------------------

class SlurmExecutor(Executor):
    """Runs on a SLURM cluster: held arrays, released once the ledger holds their ids."""

    name: ClassVar[str] = BACKEND
    job_prefix: ClassVar[str] = ""

    def __init__(self, cluster: ClusterSettings) -> None:
        super().__init__(cluster)
        self.settings = self.settings_from(cluster)

    @classmethod
    def settings_from(cls, cluster: ClusterSettings) -> SlurmSettings:
        return SlurmSettings.from_cluster(cluster)

    def check(self) -> None:
        client.ensure_client(self.settings.name, self.settings.use_local_cluster)

    def recover(self, sweep_dir: Path, warnings: list[str]) -> list[str]:
        return recover_manifests(sweep_dir, warnings)

    def submit(self, sweep_dir: Path, rows: list[PlanRow], todo: list[str]) -> list[JobId]:
        job_ids: list[JobId] = []
        for group, dependency in arrays(sweep_dir, rows, todo, self.settings):
            job_ids += submit_array(sweep_dir, self.settings, group, dependency)
        return job_ids

    def reconcile(self, sweep_dir: Path, active: dict[str, RunRecord]) -> Reconciled:
        self.check()
        return reconcile_slurm(sweep_dir, active, self.jobs_of(active))

    def cancel(self, sweep_dir: Path, jobs: list[tuple[str, JobId]]) -> None:
        client.scancel(str(job) for _, job in jobs if job.backend == BACKEND)

    def withdraw(self, sweep_dir: Path, run_ids: list[str]) -> None:
        """scancel the jobs of queued branches before they are reset: each depends on a trunk
        job that failed, so it would never start, and the resubmit gives it a fresh
        dependency."""
        records = ledger.read_all(sweep_dir)
        queued = {rid: rec for rid, rec in records.items()
                  if rid in set(run_ids) and rec.state == ledger.SUBMITTED}
        client.scancel(str(job) for job in self.jobs_of(queued).values())

    def notes(self, sweep_dir: Path) -> list[str]:
        held = unreleased_arrays(sweep_dir)
        return [f"{len(held)} arrays are still held (a launcher was killed, or its `scontrol "
                "release` failed): `flame launch` records and releases them"] if held else []

    def dry_run(self, sweep_dir: Path, rows: list[PlanRow], todo: list[str],
                folder: Path) -> list[Path]:
        files = []
        logs = jobs_dir(sweep_dir) / LOGS_DIR
        for k, (group, dependency) in enumerate(arrays(sweep_dir, rows, todo, self.settings,
                                                       dry_run=True)):
            text = sbatch_text(self.settings, logs, f"flame-dry-run-{k}", dependency, len(group))
            sbatch, listing = folder / f"array-{k}.sbatch", folder / f"array-{k}.json"
            atomic_write_text(sbatch, text)
            atomic_write_text(listing, json.dumps({"run_ids": group}, indent=1) + "\n")
            files += [sbatch, listing]
        return files

    def describe(self, job: JobId) -> str:
        return f"SLURM job {job}"

    def describe_batch(self, job_ids: list[str]) -> str:
        return f"SLURM array {job_ids[0].split('_')[0]}, {self.settings.name}"

    def active_jobs(self, job_ids: list[str]) -> set[str]:
        self.check()  # squeue needs the client set up (SLURM_CONF of the local cluster)
        queued = client.queued_jobs()
        return {job for job in job_ids if job.split("_")[0] in queued}

    def run_calls(self, batch: CallBatch, calls: list[Callable[[], Any]],
                  ended: Callable[[CallOutcome], None],
                  submitted: Callable[[list[str]], None] = lambda ids: None) -> list[str]:
        """One array, released at once (no ledger to record first), of one-node jobs with
        ``batch.gpus_per_node`` GPUs (None: the cluster's nodes and GPUs); waits for each job
        in turn if ``batch.wait``, reporting a failed job's error rather than raising."""
        self.check()
        settings = self.settings if batch.gpus_per_node is None else dataclasses.replace(
            self.settings, nodes=1, gpus_per_node=batch.gpus_per_node)
        executor = slurm_executor(settings, batch.folder, batch.job_name, hold=False)
        with executor.batch():
            jobs = [executor.submit(call) for call in calls]
        ids = [str(job.job_id) for job in jobs]
        submitted(ids)
        if batch.wait:
            for index, job in enumerate(jobs):
                try:
                    ended(CallOutcome(index, job.result()))
                except Exception as err:  # noqa: BLE001 - one failed job is reported, the rest go on
                    ended(CallOutcome(index, error=" ".join(str(err).split())[-300:]))
        return ids

"""A fake SLURM for the executor's unit tests, after submitit's own ``mocked_slurm()``
(submitit/slurm/test_slurm.py): ``sbatch`` (through submitit's ``CommandFunction``), and the
client calls flame makes itself (``sacct``, ``squeue``, ``scancel``, ``scontrol``), answered
from a table the test sets. No daemon, no subprocess: milliseconds per test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import patch


@dataclass
class FakeJob:
    """One submitted job (an array when ``tasks`` > 1)."""

    job_id: str
    name: str
    tasks: int
    held: bool
    dependency: str | None
    sbatch: str


@dataclass
class FakeSlurm:
    """The scheduler's state: submitted jobs, sacct and squeue lines, the calls made."""

    next_id: int = 4200
    jobs: list[FakeJob] = field(default_factory=list)
    sacct: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Task id (``12_3``) -> (state, elapsed seconds)."""
    queue: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Task id -> (state, reason) as squeue shows it."""
    calls: list[list[str]] = field(default_factory=list)

    def sbatch(self, path: str) -> str:
        text = Path(path).read_text()
        array = re.search(r"#SBATCH --array=0-(\d+)", text)
        dependency = re.search(r"#SBATCH --dependency=(\S+)", text)
        job = FakeJob(str(self.next_id), re.search(r"#SBATCH --job-name=(\S+)", text)[1],
                      int(array[1]) + 1 if array else 1, "#SBATCH --hold" in text,
                      dependency[1] if dependency else None, text)
        self.next_id += 1
        self.jobs.append(job)
        for task in self.tasks_of(job):
            self.queue[task] = ("PENDING", "JobHeldUser" if job.held else "Priority")
        return f"Submitted batch job {job.job_id}\n"

    def tasks_of(self, job: FakeJob) -> list[str]:
        return [job.job_id] if job.tasks == 1 else [f"{job.job_id}_{i}"
                                                     for i in range(job.tasks)]

    def run(self, cmd: list[str], timeout: float = 60) -> str:
        """flame's own client calls (``slurm_client._run``)."""
        self.calls.append(list(cmd))
        program = cmd[0]
        if program == "scontrol":
            return ""
        if program == "sacct":
            return "".join(f"{task}|{state}|{elapsed}\n"
                           for task, (state, elapsed) in self.sacct.items())
        if program == "squeue" and "%i|%T|%r" in cmd:
            return "".join(f"{task}|{state}|{reason}\n"
                           for task, (state, reason) in self.queue.items())
        if program == "squeue":
            return "".join(f"{task.split('_')[0]}\n" for task in self.queue)
        if program == "scancel":
            for job in cmd[1:]:
                self.queue = {t: v for t, v in self.queue.items()
                              if t != job and t.split("_")[0] != job}
            return ""
        raise AssertionError(f"unexpected SLURM call {cmd}")

    def command_function(self, command: list[str], *args: object, **kwargs: object):
        """submitit's ``CommandFunction(cmd)()``: only sbatch reaches it here."""
        assert command[0] == "sbatch", command
        return lambda: self.sbatch(command[-1])


@contextmanager
def fake_slurm(monkeypatch) -> Iterator[FakeSlurm]:
    """Patch sbatch (submitit), srun's presence (submitit's executor checks it) and flame's
    client calls; ``SLURM_CONF`` set so that ``cluster.use_local_cluster`` looks no further."""
    fake = FakeSlurm()
    monkeypatch.setenv("SLURM_CONF", "/nonexistent/fake-slurm.conf")
    known = {"sbatch", "srun", "sacct", "squeue", "scancel", "scontrol"}
    with patch("submitit.core.utils.CommandFunction", new=fake.command_function), \
            patch("shutil.which", new=lambda name, *a, **k: f"/fake/{name}"
                  if name in known else None), \
            patch("jobs.executors.slurm_client._run", new=fake.run):
        yield fake

"""A full disk, on a real one: a small tmpfs mounted for each test (skipped, saying why, where
this machine cannot mount one: not root, or no CAP_SYS_ADMIN in a container).

What a full disk must not do: stop the commands that only read (status, the report to
stdout), leave a traceback or a half-written file, or hide why a run failed (its worker could
not record the error, and status later called it "killed?")."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from jobs import ledger
from jobs.status import wait_until_terminal
from jobs.task import LocalWorker
from sweep.io import DiskFull, atomic_write_text
from tests.jobs.conftest import flame, make_sweep, plan_ids

DISK_SIZE = "4m"
INODES = 2000  # so a full disk refuses new files too, not only new bytes
PAGE = os.sysconf("SC_PAGE_SIZE")  # tmpfs's unit of space


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DictConfig]:
    """One plan (15 runs of the simulated trainer) the tests copy: planning costs a second."""
    sweep = tmp_path_factory.mktemp("planned") / "s"
    return sweep, make_sweep(sweep)


@pytest.fixture
def sweep(disk: Path, planned: tuple[Path, DictConfig]) -> Path:
    """The plan, copied onto the small disk."""
    return Path(shutil.copytree(planned[0], disk / "s"))


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh tmpfs of ``DISK_SIZE``, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs to fill needs root and mount(8)")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},nr_inodes={INODES}",
                           "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"this machine cannot mount a tmpfs: {' '.join(made.stderr.split())}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)  # still busy


def fill(mount: Path, leave: int = 0, inodes: bool = True) -> None:
    """Fill the file system at ``mount``: every byte but ``leave``, then every inode (unless
    not ``inodes``: files may still be made, with nothing in them)."""
    filler = mount / "filler"
    filler.mkdir(exist_ok=True)
    fd = os.open(filler / "bytes", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for block in (1 << 16, PAGE):  # 64 KiB, then pages
            try:
                while os.write(fd, b"\0" * block):
                    pass
            except OSError as err:
                assert err.errno == errno.ENOSPC
        if leave:
            os.ftruncate(fd, os.fstat(fd).st_size - leave)
    finally:
        os.close(fd)
    if inodes:
        with pytest.raises(OSError) as refused:
            for i in range(INODES + 1):
                (filler / str(i)).touch()
        assert refused.value.errno == errno.ENOSPC
    assert os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize <= leave + PAGE


def free(mount: Path) -> None:
    """Give the space back."""
    subprocess.run(["rm", "-rf", str(mount / "filler")], check=True)


def tree(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with its content's hash: what must not change."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        out[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def launched(sweep: Path) -> list[str]:
    """Queue every run of the plan in the ledger, as launch does, without starting workers."""
    ids = plan_ids(sweep)
    ledger.transition_many(sweep, [(rid, ledger.SUBMITTED, None) for rid in ids])
    return ids


def test_read_only_commands_work_on_a_full_disk_and_write_nothing(
        disk: Path, sweep: Path, caplog: pytest.LogCaptureFixture) -> None:
    ids = launched(sweep)
    ledger.transition(sweep, ids[0], ledger.RUNNING, job_id=f"local-{dead_pid()}")
    ledger.transition(sweep, ids[1], ledger.RUNNING, job_id="local-1")
    ledger.transition(sweep, ids[1], ledger.COMPLETED)
    fill(disk)
    before = tree(sweep)

    # The run of a dead worker is a failure status would record: it cannot, and says so.
    status = flame("status", f"sweep_dir={sweep}")
    assert "running" in status.stdout and "completed" in status.stdout
    assert "could not be recorded" in caplog.text and "disk full" in caplog.text
    assert "the disk is full" in status.stdout  # why no worker serves the queue
    page = flame("report", "--output", "-", f"sweep_dir={sweep}")
    assert page.stdout.startswith("<!DOCTYPE html>") and ids[1] in page.stdout
    assert tree(sweep) == before


def test_a_refused_write_names_its_file_in_one_line_and_leaves_no_part(disk: Path,
                                                                      sweep: Path) -> None:
    ids = launched(sweep)
    ledger.transition(sweep, ids[0], ledger.RUNNING, job_id="local-1")
    ledger.transition(sweep, ids[0], ledger.COMPLETED)
    fill(disk)
    before = tree(sweep)
    for argv, written in ((["collect"], "results.csv"), (["report"], "report.html"),
                          (["cancel", "--all"], "state.json")):
        out = flame(*argv, f"sweep_dir={sweep}", check=False)
        line = one_line(out.stderr)
        assert out.returncode == 1, out
        assert f"flame {argv[0]}: error: {sweep}/" in line and written in line, line
        assert "disk full" in line and "0 bytes free" in line, line
        assert tree(sweep) == before, argv  # no partial file, no temp file left


def test_a_run_whose_disk_fills_while_training_says_disk_full(
        disk: Path, sweep: Path, planned: tuple[Path, DictConfig]) -> None:
    ids = launched(sweep)
    ledger.ensure_reserve(sweep)  # what every worker sets aside as it starts
    fill(disk, leave=3 * PAGE, inodes=False)  # room to claim a run and start it, not to train it

    assert LocalWorker(str(sweep), 1)() == []  # it trained nothing, and stopped
    records = ledger.read_all(sweep)
    failed = [rid for rid in ids if records[rid].state == ledger.FAILED]
    assert len(failed) == 1, {rid: r.state for rid, r in records.items()}
    reason = records[failed[0]].error_tail.splitlines()[-1]
    assert reason.startswith(f"disk full: {sweep}/runs/{failed[0]}/"), reason
    assert "flame resubmit --failed" in reason
    assert sum(r.state == ledger.SUBMITTED for r in records.values()) == len(ids) - 1
    shown = flame("status", f"sweep_dir={sweep}").stdout
    assert f"{failed[0]} failed" in shown and "disk full" in shown
    with pytest.raises(DiskFull):  # `flame run`'s wait: no new worker to fail the same way
        wait_until_terminal(sweep, planned[1], poll_s=0.1, progress=False)

    free(disk)  # space again: the failed run resumes, the queue drains
    assert ledger.reset(sweep, failed[0], frozenset({ledger.FAILED}))
    ledger.transition(sweep, failed[0], ledger.SUBMITTED)
    assert sorted(LocalWorker(str(sweep), 1)()) == sorted(ids)
    assert {r.state for r in ledger.read_all(sweep).values()} == {ledger.COMPLETED}


def test_status_records_a_worker_dead_on_a_full_disk_as_a_full_disk(disk: Path,
                                                                    sweep: Path) -> None:
    ids = launched(sweep)
    ledger.transition(sweep, ids[0], ledger.RUNNING, job_id=f"local-{dead_pid()}")
    ledger.ensure_reserve(sweep)
    fill(disk)
    flame("status", f"sweep_dir={sweep}")
    record = ledger.read(sweep, ids[0])
    assert record.state == ledger.FAILED, record
    assert "on a full disk" in record.error_tail and "killed?" not in record.error_tail


def test_an_atomic_write_on_a_full_disk_names_the_file_and_keeps_the_old_one(
        disk: Path) -> None:
    path = disk / "state.json"
    atomic_write_text(path, "old\n")
    fill(disk)
    with pytest.raises(DiskFull) as refused:
        atomic_write_text(path, "new " * 10000)
    assert refused.value.errno == errno.ENOSPC and refused.value.filename == str(path)
    assert str(refused.value).startswith(f"{path}: disk full (")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "state.json"]


def test_a_checkpoint_torch_cannot_write_names_its_file(disk: Path) -> None:
    """torch.save turns the disk's ENOSPC into a RuntimeError of its own ("unexpected pos"):
    still a DiskFull naming the checkpoint, so the run's error says disk full."""
    import torch

    from sweep.io import atomic_writer

    path = disk / "latest.pt"
    fill(disk, leave=64 << 10, inodes=False)
    with pytest.raises(DiskFull) as refused, atomic_writer(path) as handle:
        torch.save({"w": torch.zeros(1 << 16)}, handle)  # 256 KiB
    assert refused.value.filename == str(path) and not path.exists()

"""Bad inputs through the real CLI (``jobs.cli.main``), one table.

Most cases call the CLI in this process (``tests.jobs.conftest.flame``: the same ``main``, its
output captured, an uncaught exception a traceback on stderr and exit 1, as the interpreter
gives); the cases in ``REAL_PROCESS`` run ``python -m jobs.cli`` as a process of its own, so
that the table also holds for a real interpreter's start, exit code and streams.

Each case prepares a sweep directory, runs one command on it and checks:
- ``error`` cases: exit 2, exactly one line on stderr naming what is wrong and the fix, no
  traceback, and every file of the sweep directory byte-identical (sha256) before and after;
- ``warn`` cases (the command goes on with the sweep's other runs): exit 0, exactly one
  warning line on stderr naming the broken file and the fix, no traceback, every file of the
  sweep byte-identical after (the broken one included: flame never rewrites it), except the
  launcher's own files under ``<sweep>/jobs/`` (its lock names its holder, a dry run writes
  its plan there).

To add a case, append a ``Case`` to ``CASES``: a setup (what the sweep looks like before),
the command line (``{sweep}`` is replaced by the sweep directory) and the texts stderr must
contain. Set ``env`` for the environment (e.g. a PATH without SLURM).
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs import ledger
from jobs.executors.base import JobId
from jobs.launch import launch_sweep
from jobs.status import wait_until_terminal
from jobs.task import pid_alive
from tests.jobs.conftest import BUDGETS_15, GRID_FAMILY, flame, make_sweep, plan_ids

LOCAL = "cluster=local"


# ---- setups: what the sweep directory holds before the command -------------------------------

def nothing(sweep: Path, shared: Path) -> None:
    """No sweep directory at all."""


def planned(sweep: Path, shared: Path) -> None:
    """A planned sweep of 15 runs (simulated trainer), never launched (planned once, copied
    for each case, its config.yaml's sweep_dir set to the copy's)."""
    template = shared / "planned"
    if not template.exists():
        make_sweep(template, LOCAL)
    shutil.copytree(template, sweep)
    config = sweep / "config.yaml"
    config.write_text(config.read_text().replace(f"sweep_dir: {template}\n",
                                                 f"sweep_dir: {sweep}\n", 1))


def completed(sweep: Path, shared: Path) -> None:
    """The same sweep launched locally and finished (built once, copied for each case)."""
    template = shared / "completed"
    if not template.exists():
        cfg = make_sweep(template, LOCAL, "cluster.parallelism=2")
        launch_sweep(template, cfg)
        assert wait_until_terminal(template, cfg, poll_s=0.2,
                                   progress=False).counts["completed"] == 15
        workers_gone(template)
    shutil.copytree(template, sweep)


def workers_gone(sweep: Path, timeout: float = 30) -> None:
    """Wait for the sweep's local workers to exit: after its last run a worker still leaves
    the registry (jobs/.local-workers.json, through a temporary file) and writes submitit's
    result, so a copy taken before could miss a file or meet a half-renamed one."""
    pids = {JobId.parse(job).pid() for record in ledger.read_all(sweep).values()
            for job in record.job_ids}
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"local workers {sorted(pids)} still alive"
        time.sleep(0.1)


def one_state_json_truncated(sweep: Path, shared: Path) -> None:
    """A finished sweep whose 4th run's state.json was cut short (a disk filled mid-write)."""
    completed(sweep, shared)
    path = sweep / "runs" / plan_ids(sweep)[3] / "state.json"
    path.write_bytes(path.read_bytes()[:40])


def run_id_escapes_runs_dir(sweep: Path, shared: Path) -> None:
    """plan.csv edited by hand: a run_id that would make a path outside <sweep>/runs/."""
    planned(sweep, shared)
    rows = list(csv.DictReader((sweep / "plan.csv").read_text().splitlines()))
    rows[1]["run_id"] = "../../x"
    with open(sweep / "plan.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def submitted_to_slurm(sweep: Path, shared: Path) -> None:
    """Three runs recorded as submitted to SLURM (the jobs themselves do not matter: the
    command must stop before it asks the scheduler)."""
    planned(sweep, shared)
    for k, run_id in enumerate(plan_ids(sweep)[:3]):
        ledger.transition(sweep, run_id, ledger.SUBMITTED, job_id=f"424242_{k}", strict=True)


def plan_column_renamed(sweep: Path, shared: Path) -> None:
    """plan.csv edited by hand: the hidden_size column renamed."""
    planned(sweep, shared)
    text = (sweep / "plan.csv").read_text()
    header, rest = text.split("\n", 1)
    (sweep / "plan.csv").write_text(header.replace(",hidden_size,", ",hidden,") + "\n" + rest)


def fit_json(text: str) -> Callable[[Path, Path], None]:
    """A planned sweep whose fit.json holds ``text`` (garbage, a JSON list)."""
    def setup(sweep: Path, shared: Path) -> None:
        planned(sweep, shared)
        (sweep / "fit.json").write_text(text)
    return setup


def state_json_is_a_folder(sweep: Path, shared: Path) -> None:
    """A finished sweep where a folder stands for the 4th run's state.json."""
    completed(sweep, shared)
    path = sweep / "runs" / plan_ids(sweep)[3] / "state.json"
    path.unlink()
    path.mkdir()


def run_folder_is_a_file(sweep: Path, shared: Path) -> None:
    """A finished sweep where a file stands for the 4th run's folder."""
    completed(sweep, shared)
    folder = sweep / "runs" / plan_ids(sweep)[3]
    shutil.rmtree(folder)
    folder.write_text("not a folder\n")


def no_slurm_env(tmp: Path) -> dict[str, str]:
    """A PATH without sbatch/scancel (a laptop, a compute node without the client)."""
    empty = tmp / "empty-bin"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty), "SLURM_CONF": ""}


# ---- the table -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path, Path], None]
    argv: tuple[str, ...]
    stderr_has: tuple[str, ...]
    """Texts the one stderr line must contain (the field or file, and the fix)."""
    kind: str = "error"
    """``error`` (exit 2, nothing written) or ``warn`` (exit 0, the other runs go on)."""
    stdout_has: tuple[str, ...] = ()
    env: Callable[[Path], dict[str, str]] | None = None


TRUNCATED = ("runs/", "state.json is unreadable", "delete it to reset run")
REAL_PROCESS = frozenset({"status/truncated-state", "launch-slurm/no-sbatch",
                          "plan/sweep-dir-unwritable", "launch/no-controller"})
"""Cases run as a process of their own: a warning, an error, an environment without SLURM."""
CASES = [
    # item 3: one unreadable state.json: the command goes on with the other runs, names it
    Case("status/truncated-state", one_state_json_truncated, ("status", LOCAL), TRUNCATED,
         "warn", ("corrupt", "completed")),
    Case("status-watch/truncated-state", one_state_json_truncated, ("status", "--watch", LOCAL),
         TRUNCATED, "warn", ("runs finished 14/15", "corrupt")),
    Case("launch/truncated-state", one_state_json_truncated, ("launch", LOCAL), TRUNCATED,
         "warn", ("submitted 0 runs", "skipped 14 completed", "skipped 1 corrupt")),
    Case("launch-dry-run/truncated-state", one_state_json_truncated,
         ("launch", "--dry-run", LOCAL), TRUNCATED, "warn", ("skipped 1 corrupt",)),
    Case("cancel-all/truncated-state", one_state_json_truncated, ("cancel", "--all", LOCAL),
         TRUNCATED, "warn", ("cancelled 0 runs",)),
    Case("resubmit-failed/truncated-state", one_state_json_truncated,
         ("resubmit", "--failed", LOCAL), TRUNCATED, "warn", ("nothing to resubmit",)),
    # item 10: watching a sweep nothing was launched for would wait forever
    Case("status-watch/never-launched", planned, ("status", "--watch", LOCAL),
         ("never launched", "--watch would wait forever", "flame launch")),
    # item 8: a run_id that is not a plain id is refused before anything is written
    *[Case(f"{'-'.join(argv)}/run-id-path", run_id_escapes_runs_dir, (*argv, LOCAL),
           ("plan.csv", "run_id '../../x'", "re-plan"))
      for argv in (("launch",), ("launch", "--dry-run"), ("status",), ("cancel", "--all"),
                   ("resubmit", "--failed"))],
    # item 5: cancel on SLURM without the SLURM client: the ledger is not touched
    Case("cancel-slurm/no-sbatch", submitted_to_slurm, ("cancel", "--all", "cluster=slurm"),
         ("`sbatch` is not on PATH", "flame cluster up"), env=no_slurm_env),
    Case("launch-slurm/no-sbatch", planned, ("launch", "cluster=slurm"),
         ("`sbatch` is not on PATH",), env=no_slurm_env),
    # issue 26 item 12: ordinary mistakes in a sweep's files, one line each
    Case("status/plan-column-renamed", plan_column_renamed, ("status", LOCAL),
         ("plan.csv", "lacks ['hidden_size']", "restore the column", "flame plan")),
    *[Case(f"{argv[0]}/fit-json-{name}", fit_json(text), argv, ("fit.json", why, "flame fit"))
      for name, text, why in (("garbage", "{not json", "not a readable fit.json"),
                              ("list", "[1, 2]", "not a fit.json"))
      for argv in (("report",), ("compare", "{sweep}", "{sweep}"))],
    Case("fit/no-target-budgets", planned, ("fit", "fit.target_budgets=[]"),
         ("fit.target_budgets=[]", "e.g. fit.target_budgets=[1e21]")),
    Case("fit/target-budget-overflows", planned, ("fit", "fit.target_budgets=[1e308]"),
         ("fit.target_budgets=[1e+308]", "in (0, 1e+35]")),
    *[Case(f"{'-'.join(argv)}/{setup.__name__}", setup, (*argv, LOCAL), ("/runs/", why,
           "delete it to reset run"), "warn", out)
      for setup, why in ((state_json_is_a_folder, "state.json is unreadable (a folder"),
                         (run_folder_is_a_file, "is unreadable (a file stands where run"))
      for argv, out in ((("status",), ("corrupt",)), (("launch",), ("skipped 1 corrupt",)))],
    # launch takes every setting from config.yaml; what changes results is
    # refused naming the key, checked against the sweep's own trainer; so is a re-plan
    Case("launch/other-trainer", planned, ("launch", "trainer=embedded"),
         ("trainer=embedded", "planned with trainer=simulated", "plan a new sweep_dir")),
    Case("launch-dry-run/result-key", planned, ("launch", "--dry-run", "training.lr=0.01"),
         ("training.lr=0.01 differs from the plan's 0.003", "would change the runs' results",
          "--replan")),
    Case("launch-dry-run/sweep-trainer-key", planned, ("launch", "--dry-run",
                                                       "trainer.noise=0.1"),
         ("trainer.noise=0.1 differs from the plan's 0.005", "--replan")),
    Case("launch/other-experiment", planned, ("launch", "experiment=demo"),
         ("experiment=demo", "planned as experiment demo_grid", "drop experiment=")),
    Case("launch/not-a-launch-key", planned, ("launch", "fit.bootstrap=10"),
         ("fit.bootstrap=10", "not a launch setting")),
    *[Case(f"plan/replan-names-{name}", completed,
           ("plan", f"trainer={trainer}", "planner.min_iters=1", *GRID_FAMILY, BUDGETS_15,
            LOCAL, *more), ("pass --replan", f"changed: {changed}"))
      for name, trainer, more, changed in (
          ("lr", "simulated", ("training.lr=0.01",), "training.lr: 0.003 -> 0.01"),
          ("trainer", "embedded", (), "trainer.name: 'simulated' -> 'embedded'"))],
    # the threshold that flags picks far from the optimum
    Case("fit/pick-distance-not-positive", planned, ("fit", "fit.max_pick_distance_decades=0"),
         ("fit.max_pick_distance_decades=0", "flame fit --help")),
]


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path (locks and all)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-input-templates")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, shared: Path) -> None:
    sweep = tmp_path / "sweep"
    case.setup(sweep, shared)
    before = checksums(sweep)
    argv = [a.replace("{sweep}", str(sweep)) for a in case.argv]
    out = flame(argv[0], f"sweep_dir={sweep}", *argv[1:], check=False,
                env=case.env(tmp_path) if case.env else None,
                subprocess_=case.id in REAL_PROCESS)
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1, out.stderr
    for text in case.stderr_has:
        assert text in lines[0], (text, lines[0])
    for text in case.stdout_has:
        assert text in out.stdout, (text, out.stdout)
    after = checksums(sweep)
    if case.kind == "error":
        assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
        assert after == before  # nothing written, nothing lost
    else:
        assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
        assert lines[0].startswith("flame: warning: ")
        ours = [k for k in before if not k.startswith("jobs/")]
        assert {k: after.get(k) for k in ours} == {k: before[k] for k in ours}  # untouched
        assert all(k.startswith("jobs/") for k in set(after) - set(before)), after


# ---- config and command-line mistakes (item 7): the command's own sweep_dir argument ---------

@dataclass(frozen=True)
class ConfigCase:
    """A command line that must stop with one line before writing anything."""

    id: str
    argv: tuple[str, ...]
    """``{tmp}`` is replaced by the test's directory (which holds a planned sweep ``s``)."""
    stderr_has: tuple[str, ...]
    env: Callable[[Path], dict[str, str]] | None = None


def no_slurm_conf_env(tmp: Path) -> dict[str, str | None]:
    """sbatch on PATH, but no slurm.conf and no controller: a login node set up wrongly
    (None: the variable is removed)."""
    return {"SLURM_CONF": None}


SIM = "trainer=simulated"
CONFIG_CASES = [
    ConfigCase("plan/budget-no-member-lists", ("plan", SIM, "sweep_dir={tmp}/new",
                                               "budgets.flops=[5e10]"),
               ("budgets.flops", "no family member runs at 5e+10")),
    ConfigCase("plan/scalar-budgets", ("plan", SIM, "sweep_dir={tmp}/new", "budgets.flops=1e11"),
               ("budgets.flops", "takes a list", "[...]")),
    ConfigCase("plan/budget-not-a-number", ("plan", SIM, "sweep_dir={tmp}/new",
                                            "budgets.flops=[abc]"),
               ("budgets.flops[0]", "'abc'")),
    ConfigCase("plan/unknown-key-in-null-prior", ("plan", SIM, "sweep_dir={tmp}/new",
                                                  "planner.prior={k:1,a:0.5,spn:1}"),
               ("planner.prior.spn", "no such field")),
    ConfigCase("plan/sweep-dir-is-a-file", ("plan", SIM, "sweep_dir={tmp}/s/plan.csv"),
               ("sweep_dir=", "is a file")),
    ConfigCase("plan/sweep-dir-unwritable", ("plan", SIM, "sweep_dir=/proc/flame-sweep"),
               ("sweep_dir=/proc/flame-sweep", "cannot create files")),
    ConfigCase("plan/sweep-dir-null", ("plan", SIM, "sweep_dir=null"), ("sweep_dir: empty",)),
    ConfigCase("plan/sweep-dir-empty", ("plan", SIM, "sweep_dir="), ("sweep_dir: empty",)),
    ConfigCase("plan/unknown-key", ("plan", SIM, "sweep_dir={tmp}/new", "cluster.bogus=1"),
               ("unknown config key 'cluster.bogus'",)),
    ConfigCase("launch/no-controller", ("launch", "sweep_dir={tmp}/s", "cluster=slurm_h100"),
               ("cluster=slurm_h100", "SLURM controller does not answer"),
               env=no_slurm_conf_env),
    ConfigCase("run-no-wait/no-controller", ("run", "--no-wait", SIM, "sweep_dir={tmp}/s",
                                             "cluster=slurm_h100"),
               ("SLURM controller does not answer",), env=no_slurm_conf_env),
    # issue 26 item 9: what the trainer would refuse in every run is refused at plan time
    ConfigCase("plan/negative-lr", ("plan", SIM, "sweep_dir={tmp}/new", "training.lr=-1"),
               ("training.lr=-1.0", "must be > 0")),
    ConfigCase("plan/odd-head-dim", ("plan", SIM, "sweep_dir={tmp}/new",
                                     "family.members=[{name:m12,hidden_size:12,"
                                     "num_attention_heads:4},{hidden_size:16}]"),
               ("member 'm12'", "12/4 = 3 is odd", "num_attention_heads=3")),
    ConfigCase("fit/sweep-dir-unreadable", ("fit", "sweep_dir=/proc/x"),
               ("results", "/proc/x/results.csv does not exist")),
    ConfigCase("fit/results-is-a-directory", ("fit", "results={tmp}/s", "sweep_dir={tmp}/fit"),
               ("results", "is a directory")),
    # issue 26 item 16: a branch whose data runs into another epoch than its trunk's
    ConfigCase("plan/branch-past-one-epoch", (
        "plan", "experiment=megatron_smoke", "planner.strategy=branches", "sweep_dir={tmp}/new",
        "budgets.flops=[1.25e15,2e16]", "family.members=[{num_layers:4,hidden_size:256,"
        "micro_batch_size:4,budgets:[1.25e15,2e16]}]"),
        ("planner.strategy=branches: branch", "reads 1 epoch of the train split of mock data",
         "2 epochs", "planner.strategy=independent")),
]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c.id for c in CONFIG_CASES])
def test_config_mistake(case: ConfigCase, tmp_path: Path) -> None:
    make_sweep(tmp_path / "s", LOCAL)
    before = checksums(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in case.argv]
    out = flame(*argv, check=False, env=case.env(tmp_path) if case.env else None,
                subprocess_=case.id in REAL_PROCESS, cwd=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1, out.stderr
    for text in case.stderr_has:
        assert text in lines[0], (text, lines[0])
    assert checksums(tmp_path) == before  # nothing written anywhere, nothing lost

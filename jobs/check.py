"""``flame check``: one short job on one node of the real cluster, before the sweep spends GPU
hours, that reports what would fail.

The job is the sweep's own (the same cluster config, sbatch options, setup lines, trainer,
recipe and environment; ``flame check --dry-run`` writes its sbatch next to the sweep's dry
run), on one node and a short time limit, training one of the sweep's models (the smallest, or
``--run``) for a few iterations with the real Megatron (here, in tests, the stand-in). It runs
as a sweep of one run under ``<sweep_dir>/check/`` through the same launch path as every run,
with two additions:

- the job first runs ``jobs/check_probe.py`` with ``trainer.python`` (a setup line; with
  ``cluster=local``, flame runs it on this machine before the run): imports,
  TransformerEngine, dataset helpers, GPUs, the corpus files, the data cache, the checkpoint
  directory's write rate, the tokenizer as the job loads it;
- once the run has logged iteration ``--signal-at``, flame sends the job USR2 as SLURM does
  before a time limit (``scancel --signal=USR2``): the run must save, requeue, resume from its
  checkpoint and complete (signal delivery, checkpoint write and load).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from conf.study import config_yaml
from jobs import ledger
from jobs.executors.registry import executor_class, executor_for
from jobs.executors.slurm import SlurmExecutor
from jobs.launch import launch_sweep
from jobs.resources import signal_lead_s
from jobs.settings import ClusterSettings
from jobs.status import poll
from jobs.sweepdir import plan_rows, read_config
from sweep.errors import ConfigError
from sweep.io import TRAIN_LOG, atomic_write_text, run_dir
from sweep.planrow import PlanRow
from sweep.schema import literal
from trainers.logformat import parse_lines
from trainers.readers import lines
from trainers.registry import trainer_for
from trainers.site import disk_estimate

CHECK_DIR = "check"
PROBE_JSON = "probe.json"
PROBE = Path(__file__).with_name("check_probe.py")


def check_arguments(parser: argparse.ArgumentParser) -> None:
    """``flame check``'s own flags."""
    parser.add_argument("--dry-run", action="store_true",
                        help="write the check job's sbatch and launch.sh, submit nothing")
    parser.add_argument("--run", default=None,
                        help="the plan's run whose model the check trains (default: the "
                             "smallest model)")
    parser.add_argument("--iters", type=int, default=10, help="iterations to train (10)")
    parser.add_argument("--signal-at", type=int, default=4,
                        help="send USR2 once this iteration is logged (0: no signal)")
    parser.add_argument("--time-min", type=int, default=30,
                        help="the check job's time limit, minutes (30)")
    parser.add_argument("--write-mb", type=int, default=1024,
                        help="MB the probe writes to measure the checkpoint directory (1024)")
    parser.add_argument("--wait-s", type=float, default=3600,
                        help="give up waiting after this many seconds (3600)")


@dataclasses.dataclass(frozen=True)
class CheckPlan:
    """The check's sweep: its directory, run and settings."""

    sweep_dir: Path
    """``<sweep_dir>/check``."""
    row: PlanRow
    """The one run it trains."""
    config: dict[str, Any]
    """Its config.yaml: the sweep's, on one node, evaluating once."""
    cfg: DictConfig
    """The composed config launch_sweep takes (the cluster with the probe's setup line)."""


def choose_row(rows: list[PlanRow], run_id: str | None) -> PlanRow:
    """``--run``'s row, else the smallest model's (the cheapest few iterations)."""
    if run_id:
        found = [r for r in rows if r.run_id.startswith(run_id)]
        if len(found) != 1:
            raise ConfigError(f"--run {run_id}: {len(found)} runs of the plan match; give one "
                              "run_id (or a prefix of exactly one)")
        return found[0]
    return min(rows, key=lambda r: (r.counts["n_total_exact"], r.run_id))


def check_row(row: PlanRow, iters: int) -> PlanRow:
    """The run as an independent run of ``iters`` iterations (a trunk's or a branch's model
    trains the same; the check's run never loads another's checkpoint)."""
    tokens = iters * row.global_batch_size * row.arch.seq_length
    return dataclasses.replace(row, train_iters=iters, tokens=tokens, role="", parent="",
                               branch_step=0, warmup_iters=0, save_steps=())


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """The sweep's config for the check: one node, an evaluation at the end of a few batches,
    a line per iteration (none of this is a result anyone keeps)."""
    trainer = dict(config["trainer"])
    trainer.update(nodes=1, evaluations_per_run=1, eval_interval=None, log_interval=1,
                   eval_iters=2)
    return {**config, "trainer": trainer}


def shared_caches(config: dict[str, Any], sweep_dir: Path) -> dict[str, Any]:
    """The sweep's data and tokenizer caches, named explicitly: the check's run lives under
    check/, and must read and fill the caches the sweep's runs will use."""
    from trainers import megatron

    m = megatron.megatron_config(config)
    probe_dir = sweep_dir / "runs" / "_"
    trainer = {**config["trainer"], "data_cache_path": megatron.data_cache_dir(m, probe_dir),
               "tokenizer_cache": megatron.tokenizer_cache_dir(m, probe_dir)}
    return {**config, "trainer": trainer}


def probe_line(check_dir: Path, row: PlanRow, config: dict[str, Any], gpus: int,
               write_mb: int) -> str:
    """The setup line that runs the probe with Megatron's interpreter (never fails the job)."""
    from trainers import megatron

    m = megatron.megatron_config(config)
    rdir = run_dir(check_dir, row.run_id)
    words = [m.python or "python", str(PROBE), "--out", str(check_dir / PROBE_JSON),
             "--megatron", m.megatron_path, "--gpus", str(gpus),
             "--checkpoints", str(rdir / "checkpoints"), "--write-mb", str(write_mb)]
    if not m.mock_data:
        words += ["--data-cache", megatron.data_cache_dir(m, rdir),
                  "--data-path", *(m.data_path or [])]
    if m.tokenizer_model and not m.mock_data and m.tokenizer_type == "HuggingFaceTokenizer":
        words += ["--tokenizer", m.tokenizer_model,
                  "--hub-cache", megatron.tokenizer_cache_dir(m, rdir)]
    out = shlex.quote(str(check_dir / PROBE_JSON))  # once: not again after the requeue
    return f"[ -f {out} ] || " + " ".join(shlex.quote(w) for w in words) + " || true"


def plan_check(sweep_dir: Path, cfg: DictConfig, args: argparse.Namespace) -> CheckPlan:
    """Write ``<sweep_dir>/check/``'s plan.csv and config.yaml; the cfg that launches it."""
    sweep_dir = Path(sweep_dir).resolve()
    config = read_config(sweep_dir)
    if getattr(trainer_for(config.get("trainer") or {}), "site_notes", None) is None:
        raise ConfigError(f"trainer.name={(config.get('trainer') or {}).get('name')!r}: the "
                          "sweep's trainer runs no job to check (flame check checks "
                          "trainer=megatron sweeps)")
    if args.iters < 2 or not 0 <= args.signal_at < args.iters:
        raise ConfigError(f"--iters {args.iters} --signal-at {args.signal_at}: give iters >= 2 "
                          "and 0 <= signal-at < iters")
    row = check_row(choose_row(plan_rows(sweep_dir), args.run), args.iters)
    check_dir = sweep_dir / CHECK_DIR
    config = check_config({**shared_caches(config, sweep_dir), "sweep_dir": str(check_dir)})
    cluster = ClusterSettings.from_cfg(cfg).with_trainer(config["trainer"])
    gpus = cluster.gpus_per_node if cluster.request_gpus else 0
    setup = [*cluster.setup, probe_line(check_dir, row, config, gpus, args.write_mb)]
    timeout = min(cluster.timeout_min, args.time_min)
    # the sweep's time-limit signal (its largest checkpoint's lead), not the check run's
    estimate = disk_estimate(plan_rows(sweep_dir), read_config(sweep_dir),
                             [r.run_id for r in plan_rows(sweep_dir)])
    lead = signal_lead_s(cluster.signal_delay_s, estimate.largest_gb if estimate else 0.0,
                         cluster.checkpoint_write_gb_s)
    composed = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    composed.sweep_dir = str(check_dir)
    composed.cluster.setup = setup
    composed.cluster.timeout_min = timeout
    composed.cluster.signal_delay_s = lead
    composed.cluster.max_attempts = max(3, int(composed.cluster.get("max_attempts", 3)))
    composed.cluster.array_parallelism = 1
    composed.trainer = OmegaConf.create(literal(config["trainer"]))  # the sweep's: data
    check_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(check_dir / "config.yaml", config_yaml(config))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=PlanRow.columns())
    writer.writeheader()
    writer.writerow(row.to_csv())
    atomic_write_text(check_dir / "plan.csv", out.getvalue())
    return CheckPlan(check_dir, row, config, composed)


def reset(check_dir: Path, run_id: str) -> None:
    """A fresh check: the previous check's run directory, ledger entry and probe go."""
    import shutil

    for path in (run_dir(check_dir, run_id), check_dir / "jobs"):
        shutil.rmtree(path, ignore_errors=True)
    (check_dir / PROBE_JSON).unlink(missing_ok=True)


def check(cfg: DictConfig, args: argparse.Namespace) -> int:
    """``flame check``: plan, submit and follow the check job; print what would fail."""
    sweep_dir = Path(cfg.sweep_dir).resolve()
    plan = plan_check(sweep_dir, cfg, args)
    reset(plan.sweep_dir, plan.row.run_id)
    dry_run = bool(getattr(args, "dry_run", False))
    report = launch_sweep(plan.sweep_dir, plan.cfg, dry_run=dry_run, overrides=[],
                          executor=executor_for(ClusterSettings.from_cfg(plan.cfg)))
    if dry_run:
        print(f"flame check (dry run): would submit 1 job training {plan.row.run_id} "
              f"({plan.row.member}) for {plan.row.train_iters} iterations on one node")
        for path in report.files:
            print(f"  wrote {path}")
        return 0
    slurm = issubclass(executor_class(plan.cfg.cluster.executor), SlurmExecutor)
    if not slurm:  # no sbatch setup lines there: the probe runs here, where the job runs
        subprocess.run(["bash", "-c", plan.cfg.cluster.setup[-1]], check=False)
    print(f"flame check: job {', '.join(report.job_ids)} trains {plan.row.run_id} "
          f"({plan.row.member}) for {plan.row.train_iters} iterations on one node")
    state, signalled = follow(plan, args.signal_at if slurm else 0, args.wait_s)
    findings = report_lines(plan, state, signalled, args.signal_at if slurm else 0)
    for ok, line in findings:
        print(f"  {'ok  ' if ok else 'FAIL'} {line}")
    failed = [line for ok, line in findings if not ok]
    print("flame check: " + ("nothing found that would fail" if not failed else
                             f"{len(failed)} problems; fix them before `flame launch`"))
    return 0 if not failed else 1


def follow(plan: CheckPlan, signal_at: int, wait_s: float) -> tuple[str, bool]:
    """Wait for the check run to end, sending USR2 once ``signal_at`` is logged; its final
    state and whether the signal was sent."""
    deadline, signalled = time.monotonic() + wait_s, False
    log = run_dir(plan.sweep_dir, plan.row.run_id) / TRAIN_LOG
    while time.monotonic() < deadline:
        poll(plan.sweep_dir, plan.cfg)  # reconcile: a job that died unseen ends the wait
        record = ledger.read_all(plan.sweep_dir).get(plan.row.run_id)
        if record is not None and record.state in ledger.TERMINAL:
            return record.state, signalled
        if signal_at and not signalled and record is not None and _logged(log) >= signal_at:
            subprocess.run(["scancel", "--signal=USR2", record.job_ids[-1]], check=False,
                           capture_output=True)
            signalled = True
        time.sleep(1.0)
    return "timed out waiting", signalled


def _logged(log: Path) -> int:
    parsed = parse_lines(lines(log))
    return max((r["iteration"] for r in parsed.train), default=0)


def report_lines(plan: CheckPlan, state: str, signalled: bool, signal_at: int
                 ) -> list[tuple[bool, str]]:
    """(ok, line) per finding: the probe's, then the Megatron run's."""
    out: list[tuple[bool, str]] = []
    probe = plan.sweep_dir / PROBE_JSON
    if probe.is_file():
        found = json.loads(probe.read_text())
        out += [(c["ok"], f"{c['check']}: {c['detail']}") for c in found["checks"]]
        out[0:0] = [(True, f"node {found['host']}, {found['python']}")]
    else:
        out.append((False, f"probe: no {probe} (the job never started, or trainer.python "
                           "cannot run there); see the check's jobs/logs"))
    rdir = run_dir(plan.sweep_dir, plan.row.run_id)
    text = "\n".join(lines(rdir / TRAIN_LOG))
    record = ledger.read_all(plan.sweep_dir).get(plan.row.run_id)
    if state == ledger.COMPLETED:
        out.append((True, f"Megatron: trained {plan.row.train_iters} iterations and validated"))
    else:
        tail = (record.error_tail or "").strip().splitlines()[-3:] if record else []
        out.append((False, f"Megatron: the run ended {state}: {' | '.join(tail) or 'see '}"
                           f"{rdir / TRAIN_LOG}"))
    saved = "saved checkpoint" in text or (rdir / "checkpoints").is_dir()
    out.append((saved, "checkpoint: " + ("saved and " if saved else "none saved") +
                ("loaded" if "loading distributed checkpoint" in text else "not loaded")))
    if signal_at:
        requeued = bool(record and record.attempts >= 2)
        handled = "exiting program after receiving SIGTERM" in text
        ok = signalled and handled and requeued and state == ledger.COMPLETED
        exited = "saved and exited" if handled else "did not exit on it"
        out.append((ok, f"signal: USR2 {'sent' if signalled else 'never sent'} at iteration "
                        f">= {signal_at}; Megatron {exited}; "
                        f"{'requeued and resumed' if requeued else 'not requeued'}"))
    return out


__all__ = ["check", "check_arguments", "plan_check", "choose_row", "check_row", "CHECK_DIR"]

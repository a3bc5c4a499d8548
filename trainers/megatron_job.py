"""launch.sh inside a job: one launcher per node, each writing its own log, signals forwarded
to the ranks, and the outcome (completed, preempted, failed) decided from Megatron-LM's own
evidence. Line numbers are core_v0.16.1's (55ac708): ``T`` = megatron/training/training.py,
``G`` = megatron/training/global_vars.py, ``U`` = megatron/training/utils.py.

Logs, one per node: Megatron prints its training and validation lines on the LAST rank only
(print_rank_last, U:425-431; T:2088, T:3279-3281), and torchrun's static rendezvous numbers
the ranks node by node in SLURM_NODEID order (``--node_rank``; trainers.megatron says why not
c10d), so they are on the last node; rank 0's lines (checkpoints, start-up, print_rank_0, U:394-401)
are on node 0. The last node's launcher writes ``train.log`` (the one flame parses, as for one
node and for every sweep before per-node logs); node k < last writes ``train.node<k>.log``.
No two nodes append to one file. A node k > 0 writes ``train.node<k>.exit`` (its exit code
and the job attempt) after its launcher ends; node 0, which decides the outcome, waits for the
others' before it parses train.log, whose final lines may still be in flight from another node.

Signals: SLURM's USR2 (``--signal``, before the time limit) reaches every process of the step
and launch.sh ignores it; the task forwards SIGTERM (Megatron's ``--exit-signal``) to the ranks.
SLURM's SIGTERM (preemption, ``scontrol requeue``, ``scancel --signal=TERM``) reaches every
process of the step directly: torchrun answers it by stopping its workers and exiting non-zero
(torch/distributed/elastic/agent/server/api.py, SignalException -> ``_shutdown``); a rank
whose handler is installed saves at the next iteration and exits 0 (T:2322-2337, 3021-3030).
Megatron installs the handler only in set_global_variables (G:113-114, after the tokenizer is
built), so a signal during start-up kills the rank (Python's default action) and torchrun
exits non-zero. Whatever the exit code, a run that got a signal and is not complete is
preempted, never failed: the signal is handed on (submitit's requeue for USR2; for SIGTERM,
``Preempted`` for the job to requeue) and the next start resumes from the newest checkpoint.

Complete means Megatron's final validation at ``train_iters``. A signal at the last iteration
saves and exits without it (T:2322-2337 return True, then T:3021-3030 sys.exit before
T:1068-1107): that run is preempted too, and its requeued start loads iteration
``train_iters``, trains nothing and evaluates. A run that reaches ``train_iters`` without a
signal and without a final validation (no validation split, --exit-interval at the end)
completes with ``final_val_loss`` null and ``no_final_validation`` saying why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.io import CHECKPOINTS_DIR, METRICS_JSONL, TRAIN_LOG, atomic_write_text
from sweep.planrow import PlanRow
from trainers.logformat import ParsedLog, parse_lines
from trainers.megatron import (
    megatron_config,
    metrics_from_log,
    reached,
    tracker_iteration,
    trunk_stops,
    write_launch,
)
from trainers.readers import LAUNCH_MARK
from trainers.signals import DeferredSignals, Preempted

NODE_LOG = "train.node{node}.log"
NODE_EXIT = "train.node{node}.exit"
NODE_WAIT_S = 120.0
"""How long node 0 waits for another node's exit record before it parses train.log."""
COMPLETED, PREEMPTED, FAILED = "completed", "preempted", "failed"
NO_FINAL = ("Megatron-LM printed no validation at iteration {iters}: it evaluates after "
            "training only with a validation set (training.py:1068, 3401-3403) and only when "
            "no exit condition ended training at the last iteration (--exit-interval, "
            "--exit-duration-in-mins: training.py:2370-2412, 3021-3030)")


@dataclass(frozen=True)
class Launch:
    """One run of this node's launcher."""

    code: int
    """launch.sh's exit status (torchrun's; negative: killed by that signal)."""
    signum: int | None
    """The signal this task received while (or just after) it ran, if any."""


def node_log(run_dir: Path, node: int, nodes: int) -> Path:
    """Node ``node``'s log: ``train.log`` on the last node (Megatron's training and validation
    lines, print_rank_last), ``train.node<k>.log`` on the others."""
    return Path(run_dir) / (TRAIN_LOG if node == nodes - 1 else NODE_LOG.format(node=node))


def this_node() -> int:
    """SLURM_NODEID (launch.sh's --node_rank); 0 outside SLURM."""
    return int(os.environ.get("SLURM_NODEID", "0") or 0)


def attempt() -> str:
    """This start of the job: job id and SLURM's restart count (a requeue starts it again)."""
    return f"{os.environ.get('SLURM_JOB_ID', 'local')}.{os.environ.get('SLURM_RESTART_COUNT', '0')}"


def outcome(code: int, signalled: bool, done: int, train_iters: int, has_final: bool) -> str:
    """completed | preempted | failed, from the launcher's exit status, whether a signal came,
    the iteration reached and whether the final validation was printed. A signal makes any
    incomplete end a preemption (a rank killed in start-up, torchrun stopped by SLURM's
    SIGTERM, Megatron's save-and-exit, a signal at the last iteration before the final
    validation); without one, a non-zero exit or an exit short of ``train_iters`` fails."""
    if signalled and not (done >= train_iters and has_final):
        return PREEMPTED
    if code != 0 and not signalled:
        return FAILED
    return COMPLETED if done >= train_iters else FAILED


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the ranks torchrun started), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _forward(launcher: int) -> None:
    """SIGTERM (Megatron's --exit-signal) to the ranks; to the launcher if none started yet.
    Not to torchrun itself once its ranks run: its agent would stop them and SIGKILL them
    after its shutdown timeout, which could cut a checkpoint short; not to the ranks'
    DataLoader workers, which would die and fail the rank."""
    for pid in _children(launcher) or [launcher]:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def run_launcher(script: Path, log: Path, signals: DeferredSignals) -> Launch:
    """Run launch.sh once, appending its output to this node's ``log`` after a line that marks
    the start (``readers.LAUNCH_MARK``: where a new Megatron process begins)."""
    with open(log, "ab") as out:
        out.write(f"{LAUNCH_MARK} on node {this_node()}, job {attempt()}, "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        out.flush()
        proc = subprocess.Popen(["bash", str(script)], stdout=out, stderr=subprocess.STDOUT,
                                cwd=script.parent, start_new_session=True)
        got = None
        while proc.poll() is None:
            if signals.pending is not None and got is None:
                got = signals.pending
                _forward(proc.pid)
            time.sleep(0.2)
    return Launch(proc.returncode, got if got is not None else signals.pending)


def _stopped_at_a_save_step(spec: PlanRow, cfg: Mapping[str, Any], run_dir: Path) -> bool:
    """Whether a segmented trunk's launch ended at one of its stops (then it goes on)."""
    return tracker_iteration(run_dir) in trunk_stops(spec, megatron_config(cfg))


def run_segments(row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path,
                 signals: DeferredSignals, log: Path) -> Launch:
    """launch.sh, again after each stop of a segmented trunk, until it ends otherwise."""
    spec, script = PlanRow.of(row), write_launch(row, cfg, run_dir)
    launch = run_launcher(script, log, signals)
    while launch.code == 0 and launch.signum is None and \
            _stopped_at_a_save_step(spec, cfg, run_dir):
        launch = run_launcher(script, log, signals)  # the trunk's next segment
    return launch


def wait_for_nodes(run_dir: Path, nodes: int, timeout_s: float = NODE_WAIT_S) -> dict[int, int]:
    """The exit codes the other nodes recorded for this job attempt, waiting up to
    ``timeout_s`` for them (an absent node is left out)."""
    deadline, codes = time.monotonic() + timeout_s, {}
    while True:
        for node in range(1, nodes):
            if node not in codes and (rec := _read_exit(run_dir, node)) is not None:
                codes[node] = rec
        if len(codes) == nodes - 1 or time.monotonic() >= deadline:
            return codes
        time.sleep(0.5)


def _read_exit(run_dir: Path, node: int) -> int | None:
    try:
        rec = json.loads((Path(run_dir) / NODE_EXIT.format(node=node)).read_text())
    except (OSError, ValueError):
        return None
    return int(rec["code"]) if rec.get("attempt") == attempt() else None


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


def train(row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path,
          signals: DeferredSignals) -> dict[str, Any]:
    """Node 0's task (SLURM_PROCID 0): run this node's launcher, forward a deferred signal to
    the ranks as SIGTERM, then decide from Megatron's own evidence (``outcome``)."""
    spec, run_dir, m = PlanRow.of(row), Path(run_dir), megatron_config(cfg)
    began = time.time()
    own_log = node_log(run_dir, this_node(), m.nodes)
    launch = run_segments(row, cfg, run_dir, signals, own_log)
    others = wait_for_nodes(run_dir, m.nodes) if m.nodes > 1 and launch.signum is None else {}
    signum = launch.signum if launch.signum is not None else signals.pending
    parsed = parse_lines(open(run_dir / TRAIN_LOG, errors="replace")) \
        if (run_dir / TRAIN_LOG).is_file() else ParsedLog()
    records = metrics_from_log(parsed, spec.global_batch_size, spec.arch.seq_length)
    atomic_write_text(run_dir / METRICS_JSONL, "".join(json.dumps(r) + "\n" for r in records))
    done = reached(parsed, run_dir)
    finals = [v for v in parsed.validation if v["final"] and v["iteration"] >= spec.train_iters]
    code = launch.code or next((c for c in others.values() if c), 0)
    verdict = outcome(code, signum is not None, done, spec.train_iters, bool(finals))
    if verdict == PREEMPTED:
        saved = tracker_iteration(run_dir)
        signals.pending = signum  # hand it on even if it came after the launcher ended
        signals.deliver(saved)  # USR2: submitit's handler requeues and exits from here
        raise Preempted(signum, saved)  # SIGTERM ("bypass" returned): the job requeues
    if verdict == FAILED:
        if code != 0:
            raise RuntimeError(f"Megatron-LM exited with {code}"
                               f"{' (another node)' if not launch.code else ''}; end of "
                               f"{own_log.name}:\n{_tail(own_log)}")
        raise RuntimeError(f"Megatron-LM exited 0 at iteration {done} of {spec.train_iters} "
                           f"without a signal (no final validation, checkpoint tracker at "
                           f"{tracker_iteration(run_dir)}); see {TRAIN_LOG}")
    missing = [s for s in spec.save_steps
               if not (run_dir / CHECKPOINTS_DIR / f"iter_{s:07d}").is_dir()]
    if missing:  # a trunk's branches need these; Megatron saved elsewhere (or they were removed)
        raise RuntimeError(f"trunk {spec.run_id} completed without checkpoints at its branch "
                           f"steps {missing} (checkpoints/iter_NNNNNNN); see {TRAIN_LOG}")
    summary = {"trainer": "megatron",
               "final_val_loss": finals[-1]["lm loss value"] if finals else None,
               "iterations": done, "tokens": spec.tokens, "wall_s": time.time() - began}
    if not finals:
        summary["no_final_validation"] = NO_FINAL.format(iters=spec.train_iters)
    return summary


def run_node(row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path) -> None:
    """Another node's task of a multi-node run (SLURM_PROCID > 0): run its launcher only,
    forwarding signals to its ranks, and record its exit code for node 0; no ledger, no
    metrics, no summary (node 0 writes them). A non-zero exit without a signal raises (sacct
    shows the task FAILED); after a signal node 0 decides."""
    run_dir, node, m = Path(run_dir), this_node(), megatron_config(cfg)
    with DeferredSignals() as signals:
        launch = run_segments(row, cfg, run_dir, signals, node_log(run_dir, node, m.nodes))
    atomic_write_text(run_dir / NODE_EXIT.format(node=node),
                      json.dumps({"attempt": attempt(), "code": launch.code,
                                  "signal": launch.signum}) + "\n")
    if launch.code != 0 and launch.signum is None:
        raise RuntimeError(f"Megatron-LM (node {node}'s launcher) exited with {launch.code}")

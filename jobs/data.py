"""``flame data``: a jsonl/parquet corpus -> megatron-core indexed datasets and a manifest.

One job per corpus file (``trainers.tokenize``), on the cluster's executor: ``cluster=local``
runs them here, ``cluster.parallelism`` at a time (each with ``cluster.threads_per_job``
tokenizer threads); a SLURM cluster gets one array (submitit, requeued on time limit or
preemption: a shard restarts from scratch, under a temporary name). Whichever job finishes
the last shard writes ``<out>/manifest.json`` (``trainers.corpus_manifest``); so does
``flame data`` itself when it finds every shard done. Running it again finishes only what is
missing. Every check of the input (corpus, shards, tokenizer, output) comes before anything is
written.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from omegaconf import DictConfig

from jobs.executors.base import CallBatch, CallOutcome, Executor
from jobs.executors.registry import executor_for
from jobs.settings import ClusterSettings
from sweep.errors import ConfigError
from sweep.io import atomic_write_text
from trainers.corpus_manifest import (
    MANIFEST_JSON,
    Manifest,
    TokenizerInfo,
    make_manifest,
    write_manifest,
)
from trainers.tokenize import (
    STATE_DIR,
    SUFFIXES,
    ShardSpec,
    check_shard,
    corpus_files,
    done_record,
    load_tokenizer,
    recorded_settings,
    settings_key,
    tokenizer_file,
    write_shard,
)

JOBS_JSON = "jobs.json"


@dataclass(frozen=True)
class DataPlan:
    """What ``flame data`` was asked, checked: every shard and the settings."""

    corpus: str
    """The corpus (file or directory), absolute."""
    out: str
    """The output directory, absolute."""
    tokenizer: str
    """The tokenizer as given (tokenizer.json, a directory, or a hub id)."""
    eod_token: str | None
    """The end-of-document token given (None: the tokenizer's eos token)."""
    text_field: str
    """The jsonl key / parquet column holding the text."""
    info: TokenizerInfo
    """The loaded tokenizer's identity."""
    shards: tuple[ShardSpec, ...]
    """One per corpus file, sorted."""

    def done(self) -> list[Any]:
        """Each shard's record when complete, else None."""
        key = settings_key(self.info, self.text_field)
        return [done_record(spec, key) for spec in self.shards]

    def finish(self) -> Manifest | None:
        """Write manifest.json when every shard is done; returns it (None if not yet)."""
        records = self.done()
        if any(r is None for r in records):
            return None
        manifest = make_manifest(records, self.info, self.text_field, self.corpus)
        write_manifest(Path(self.out), manifest)
        return manifest


def data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", help="a .jsonl, .jsonl.gz or .parquet file, or a directory "
                                         "of them (one shard each)")
    parser.add_argument("--out", help="output directory (shards, manifest.json); not inside "
                                      "the corpus")
    parser.add_argument("--tokenizer", help="a tokenizer.json, a directory holding one (e.g. "
                                            "EleutherAI/pythia-12b's files), or a hub id")
    parser.add_argument("--text-field", default="text",
                        help="the jsonl key / parquet column of the text (default: text)")
    parser.add_argument("--eod-token", default=None,
                        help="token ending each document (default: the tokenizer's eos token, "
                             "else <|endoftext|>)")
    parser.add_argument("--wait", action="store_true",
                        help="on SLURM: wait for the shard jobs and write the manifest")


def plan_data(corpus: str | None, out: str | None, tokenizer: str | None,
              text_field: str = "text", eod_token: str | None = None) -> DataPlan:
    """Every check of the input, nothing written: a ConfigError naming the flag otherwise."""
    for flag, value in (("--corpus", corpus), ("--out", out), ("--tokenizer", tokenizer)):
        if not value:
            raise ConfigError(f"{flag}: not given; `flame data --corpus DIR --out DIR "
                              "--tokenizer tokenizer.json`")
    root = Path(str(corpus)).expanduser().resolve()
    target = Path(str(out)).expanduser().resolve()
    if not root.exists():
        raise ConfigError(f"--corpus={corpus}: no such file or directory")
    if root.is_dir() and (target == root or root in target.parents):
        raise ConfigError(f"--out={out} is inside the corpus {root}; write it elsewhere (a "
                          "later run would read the shards as corpus files)")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--out={out} is a file; give a directory")
    files = corpus_files(root)
    if not files or not files[0].name.endswith(SUFFIXES):
        raise ConfigError(f"--corpus={corpus}: no {', '.join(SUFFIXES)} files there")
    local = tokenizer_file(str(tokenizer))
    if local is not None:  # jobs may start in another directory
        tokenizer = str(Path(str(tokenizer)).expanduser().resolve())
    tok, info = load_tokenizer(str(tokenizer), eod_token)
    del tok
    specs = tuple(_spec(root, file, target) for file in files)
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.prefix in seen:
            raise ConfigError(f"--corpus: {seen[spec.prefix]} and {spec.source_name} would be "
                              f"one shard {spec.prefix}; rename one")
        seen[spec.prefix] = spec.source_name
    key = settings_key(info, text_field)
    for spec in specs:
        check_shard(Path(spec.source), text_field)
        found = recorded_settings(spec)
        if found is not None and found != key:
            raise ConfigError(f"--out={out} holds {spec.prefix} made with another tokenizer or "
                              "text field; give a new --out (or remove the old shards)")
    return DataPlan(str(root), str(target), str(tokenizer), eod_token, text_field, info, specs)


def _spec(root: Path, file: Path, out: Path) -> ShardSpec:
    rel = file.relative_to(root) if root.is_dir() else Path(file.name)
    stem = next(rel.name[:-len(s)] for s in SUFFIXES if rel.name.endswith(s))
    # tools/preprocess_data.py's naming: <output-prefix>_<json key>_document
    prefix = (rel.parent / f"{stem}_text_document").as_posix()
    return ShardSpec(str(file), rel.as_posix(), str(out), prefix, file.stat().st_size)


def save_plan(plan: DataPlan) -> str:
    """``<out>/.flame-data/plan-<key>.json`` (once per distinct plan); returns the key. Jobs
    read the plan from there: an array of N shards pickles N small tasks, not N plans."""
    text = json.dumps(dataclasses.asdict(plan), sort_keys=True, indent=1) + "\n"
    key = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = Path(plan.out) / STATE_DIR / f"plan-{key}.json"
    if not path.is_file():
        atomic_write_text(path, text)
    return key


def load_plan(out: str, key: str) -> DataPlan:
    """The plan ``save_plan`` wrote under ``key``."""
    data = json.loads((Path(out) / STATE_DIR / f"plan-{key}.json").read_text())
    return DataPlan(**{**data, "info": TokenizerInfo(**data["info"]),
                       "shards": tuple(ShardSpec(**s) for s in data["shards"])})


class ShardTask(submitit.helpers.Checkpointable):
    """One shard as a job: tokenise it, then write the manifest if it was the last."""

    def __init__(self, out: str, key: str, index: int) -> None:
        self.out = out
        self.key = key
        self.index = index

    def __call__(self) -> dict[str, Any]:
        # the tokenizer's thread pool starts on first use: size it to the job's CPUs first
        # (FLAME_THREADS: a local pool's share of the cores, as runs get it)
        threads = os.environ.get("FLAME_THREADS") or os.environ.get("SLURM_CPUS_PER_TASK")
        if threads:
            os.environ["RAYON_NUM_THREADS"] = str(threads)
        plan = load_plan(self.out, self.key)
        tok, info = load_tokenizer(plan.tokenizer, plan.eod_token)
        if info.sha256 != plan.info.sha256:
            raise ConfigError(f"--tokenizer={plan.tokenizer}: changed since `flame data` "
                              "planned these jobs; run it again")
        shard = write_shard(plan.shards[self.index], tok, info, plan.text_field)
        plan.finish()
        return dataclasses.asdict(shard)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Time limit or preemption: start the shard again (its partial files are dropped)."""
        return submitit.helpers.DelayedSubmission(self)


def run_shards(plan: DataPlan, todo: list[int], executor: Executor, wait: bool) -> bool:
    """The shard jobs through the cluster's executor (one job each, no GPUs); shards whose
    earlier job is still queued or running are left to it. False when jobs were left
    running (submitted to a scheduler, not waited for)."""
    state = Path(plan.out) / STATE_DIR
    recorded = _read_jobs(state)
    active = executor.active_jobs(list(recorded.values()))
    todo = [i for i in todo if recorded.get(plan.shards[i].prefix) not in active]
    if not todo:
        print("every missing shard has a job queued or running; the manifest appears when "
              "the last one ends")
        return False
    key = save_plan(plan)
    jobs: list[str] = []

    def submitted(ids: list[str]) -> None:
        jobs.extend(ids)
        recorded.update({plan.shards[i].prefix: job for i, job in zip(todo, ids)})
        atomic_write_text(state / JOBS_JSON, json.dumps(recorded, indent=1) + "\n")
        print(f"submitted {len(ids)} shard jobs ({executor.describe_batch(ids)}); the "
              f"last to finish writes {Path(plan.out) / MANIFEST_JSON}")

    def ended(outcome: CallOutcome) -> None:
        if outcome.error is not None:
            print(f"shard {plan.shards[todo[outcome.index]].prefix}: job "
                  f"{jobs[outcome.index]} failed: {outcome.error}", file=sys.stderr)
        else:
            _report(outcome.result, outcome.index + 1, len(todo))

    batch = CallBatch("data", state / "logs", gpus_per_node=0, wait=wait,
                      label=Path(plan.out).name)
    executor.run_calls(batch, [ShardTask(plan.out, key, i) for i in todo], ended, submitted)
    return wait or not jobs


def _report(shard: dict[str, Any], k: int, n: int) -> None:
    print(f"[{k}/{n}] {shard['prefix']}: {shard['documents']:,} documents, "
          f"{shard['tokens']:,} tokens", flush=True)


def _read_jobs(state: Path) -> dict[str, str]:
    try:
        return json.loads((state / JOBS_JSON).read_text())
    except (OSError, ValueError):
        return {}


def data(cfg: DictConfig, args: argparse.Namespace) -> int:
    """`flame data --corpus ... --out ... --tokenizer ...`: tokenise what is missing."""
    executor = executor_for(ClusterSettings.from_cfg(cfg))
    plan = plan_data(args.corpus, args.out, args.tokenizer, args.text_field, args.eod_token)
    todo = [i for i, record in enumerate(plan.done()) if record is None]
    print(f"{len(plan.shards)} shards, {len(plan.shards) - len(todo)} done already; "
          f"tokenizer {plan.tokenizer} ({plan.info.vocab_size} ids, eod "
          f"{plan.info.eod_token!r} = {plan.info.eod})", flush=True)
    ended = run_shards(plan, todo, executor, bool(args.wait)) if todo else True
    manifest = plan.finish()
    if manifest is None:
        return 1 if ended else 0  # jobs left running write it when the last one ends
    path = Path(plan.out) / MANIFEST_JSON
    print(f"wrote {path}: {len(manifest.shards)} shards, {manifest.documents:,} documents, "
          f"{manifest.tokens:,} tokens, fingerprint {manifest.fingerprint[:19]}")
    print(f"train on it: trainer=megatron trainer.data_path={path} "
          f"trainer.tokenizer_model=<the same tokenizer>")
    return 0

"""`flame data`: the demo's corpus (the embedded trainer's standard-library sources, as jsonl
and parquet shards) tokenised with a BPE tokenizer trained here by the `tokenizers` package,
into shards Megatron reads and a manifest `trainer=megatron` takes as `trainer.data_path`;
run ids follow the corpus's content, not its path; bad input exits 2 with one line and writes
nothing; a shard job stopped half-way leaves nothing a run could read, and a rerun finishes
only what is missing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from conf.study import plan_from_cfg
from jobs.cli import compose
from tests.jobs.conftest import flame
from trainers import megatron, tokenize
from trainers.corpus_manifest import MANIFEST_JSON, read_manifest
from trainers.embedded.data import stdlib_files
from trainers.settings import trainer_config

EOD = "<|endoftext|>"
MEGATRON = ("experiment=megatron_smoke", "trainer=megatron", "trainer.mock_data=false")


def demo_texts(count: int = 24) -> list[str]:
    """The first ``count`` documents of the demo's corpus (trainers/embedded/data.py)."""
    return [f.read_text(errors="replace") for f in stdlib_files()[:count]]


def write_corpus(root: Path, docs: list[str]) -> Path:
    """Two jsonl shards (one in a subdirectory) and a parquet shard."""
    (root / "part").mkdir(parents=True)
    with open(root / "a.jsonl", "w") as handle:
        handle.writelines(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs[0::3]))
    with open(root / "part" / "b.jsonl", "w") as handle:
        handle.writelines(json.dumps({"text": d}) + "\n\n" for d in docs[1::3])
    pq.write_table(pa.table({"text": docs[2::3]}), root / "c.parquet")
    return root


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo corpus, a tokenizer trained on it (no download), and `flame data`'s output."""
    base = tmp_path_factory.mktemp("data")
    docs = demo_texts()
    corpus = write_corpus(base / "corpus", docs)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(docs, trainers.BpeTrainer(
        vocab_size=500, special_tokens=[EOD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    (base / "tok").mkdir()
    tok.save(str(base / "tok" / "tokenizer.json"))
    out = base / "out"
    result = flame("data", f"--corpus={corpus}", f"--out={out}",
                   f"--tokenizer={base / 'tok'}", "cluster=local", "cluster.parallelism=1")
    assert "3 shards, 0 done already" in result.stdout
    return {"base": base, "corpus": corpus, "out": out, "tok": base / "tok"}


def run_ids(sweep: Path, data_path: Path | str) -> list[str]:
    cfg = compose([f"sweep_dir={sweep}", *MEGATRON, f"trainer.data_path={data_path}"])
    return [run.run_id for run in plan_from_cfg(cfg)[0].runs]


def test_shards_hold_what_the_tokenizer_gives_and_megatron_reads_them(demo):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    manifest = read_manifest(demo["out"] / MANIFEST_JSON)
    tok = Tokenizer.from_file(str(demo["tok"] / "tokenizer.json"))
    eod = tok.token_to_id(EOD)
    assert [s.source for s in manifest.shards] == ["a.jsonl", "c.parquet", "part/b.jsonl"]
    assert manifest.data_path == ["1.0", "a_text_document", "1.0", "c_text_document",
                                  "1.0", "part/b_text_document"]  # FLAME: weight 1.0 each
    assert manifest.tokenizer.eod == eod and manifest.tokenizer.dtype == "uint16"
    docs = demo_texts()
    by_source = {"a.jsonl": docs[0::3], "part/b.jsonl": docs[1::3], "c.parquet": docs[2::3]}
    for shard in manifest.shards:
        prefix = demo["out"] / shard.prefix
        for suffix in (".bin", ".idx"):  # the recorded hashes are the files'
            digest = hashlib.sha256(Path(f"{prefix}{suffix}").read_bytes()).hexdigest()
            assert digest == getattr(shard, f"{suffix[1:]}_sha256")
        dataset = IndexedDataset(str(prefix))  # megatron-core's own reader
        want = [tok.encode(d, add_special_tokens=False).ids + [eod]
                for d in by_source[shard.source]]
        assert len(dataset) == shard.documents == len(want)
        assert [list(dataset[i]) for i in range(len(dataset))] == want
        assert shard.tokens == sum(map(len, want))
    assert manifest.tokens == sum(s.tokens for s in manifest.shards)


def test_megatron_takes_the_manifest_as_data_path(demo, tmp_path):
    cfg = compose([f"sweep_dir={tmp_path / 'sweep'}", *MEGATRON,
                   f"trainer.data_path={demo['out'] / MANIFEST_JSON}"])
    m = trainer_config(cfg.trainer)
    shards = [str(demo["out"] / p) for p in ("a_text_document", "c_text_document",
                                               "part/b_text_document")]
    assert m.data_path == [w for s in shards for w in ("1.0", s)]
    assert m.data_fingerprint == read_manifest(demo["out"] / MANIFEST_JSON).fingerprint
    row = plan_from_cfg(cfg)[0].runs[0].to_row(plan_from_cfg(cfg)[1])
    argv = megatron.argv_of(row, cfg, tmp_path / "run")
    at = argv.index("--data-path")
    assert argv[at + 1:at + 7] == m.data_path
    # the directory names the manifest too
    assert trainer_config({**cfg.trainer, "data_path": str(demo["out"])}).data_path == m.data_path


def test_run_ids_follow_the_corpus_not_its_path(demo, tmp_path):
    before = run_ids(tmp_path / "s1", demo["out"] / MANIFEST_JSON)
    moved = tmp_path / "moved"
    shutil.copytree(demo["out"], moved)
    assert run_ids(tmp_path / "s2", moved / MANIFEST_JSON) == before
    # another corpus: one document changed
    docs = demo_texts()
    docs[4] = docs[4] + "\n# one more line\n"
    other = write_corpus(tmp_path / "corpus2", docs)
    flame("data", f"--corpus={other}", f"--out={tmp_path / 'out2'}",
          f"--tokenizer={demo['tok']}", "cluster=local", "cluster.parallelism=1")
    changed = run_ids(tmp_path / "s3", tmp_path / "out2" / MANIFEST_JSON)
    assert len(changed) == len(before) and not set(changed) & set(before)
    # a launch may point at the moved corpus, not at another one (nor at one first named there)
    launch = ("launch", "--dry-run", *MEGATRON, f"sweep_dir={tmp_path / 's3'}")
    flame("plan", *launch[2:], f"trainer.data_path={tmp_path / 'out2' / MANIFEST_JSON}")
    refused = flame(*launch, f"trainer.data_path={moved / MANIFEST_JSON}", check=False)
    assert refused.returncode == 2 and "data_fingerprint=" in refused.stderr
    moved2 = shutil.move(tmp_path / "out2", tmp_path / "out2_moved")
    flame(*launch, f"trainer.data_path={moved2}")


def test_a_stopped_shard_job_leaves_nothing_readable_and_a_rerun_finishes_it(demo, tmp_path,
                                                                           monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(demo["out"], out)
    (out / MANIFEST_JSON).unlink()
    keep = {p: p.stat().st_mtime_ns for p in out.glob("[ac]_text_document.*")}
    for path in out.glob("part/b_text_document.*"):
        path.unlink()
    # a job killed after renaming the .bin but before the .idx and the shard's record
    real_replace, calls = os.replace, []

    def stop_after_bin(src, dst):
        calls.append(dst)
        if str(dst).endswith(".idx"):
            raise KeyboardInterrupt  # as SIGINT would, mid-rename
        real_replace(src, dst)

    monkeypatch.setattr(tokenize.os, "replace", stop_after_bin)
    with pytest.raises(KeyboardInterrupt):
        flame("data", f"--corpus={demo['corpus']}", f"--out={out}",
              f"--tokenizer={demo['tok']}", "cluster=local", "cluster.parallelism=1")
    monkeypatch.undo()
    assert not (out / MANIFEST_JSON).exists()
    assert not (out / "part" / "b_text_document.idx").exists()  # no pair a run could read
    assert not (out / "part" / "b_text_document.shard.json").exists()
    # what a SIGKILL leaves besides: a temporary file no *.bin glob matches
    (out / "part" / "b_text_document.bin.partial-host-1").write_bytes(b"\0" * 10)
    result = flame("data", f"--corpus={demo['corpus']}", f"--out={out}",
                   f"--tokenizer={demo['tok']}", "cluster=local", "cluster.parallelism=1")
    assert "3 shards, 2 done already" in result.stdout and "[1/1] part/b_text_document" in \
        result.stdout
    assert {p: p.stat().st_mtime_ns for p in keep} == keep  # the others untouched
    assert not list(out.rglob("*.partial-*"))
    assert read_manifest(out / MANIFEST_JSON).fingerprint == \
        read_manifest(demo["out"] / MANIFEST_JSON).fingerprint


def _corrupt_parquet(corpus: Path) -> None:
    (corpus / "c.parquet").write_bytes(b"PAR1 not really")


def _empty_shard(corpus: Path) -> None:
    (corpus / "c.parquet").unlink()
    (corpus / "c.jsonl").write_text("\n\n")


def _bad_line(corpus: Path) -> None:  # found only by the job, mid-shard
    with open(corpus / "part" / "b.jsonl", "a") as handle:
        handle.write("{not json\n")


def _out_of_another_tokenizer(corpus: Path) -> None:
    record = {"shard": {}, "settings": {"tokenizer_sha256": "another"}, "source_bytes": 1}
    (corpus.parent / "out").mkdir()
    (corpus.parent / "out" / "a_text_document.shard.json").write_text(json.dumps(record))


@pytest.mark.parametrize("case, prepare, argv, says", [
    ("no corpus", None, ["--corpus={base}/nope"], "--corpus="),
    ("unreadable shard", _corrupt_parquet, [], "c.parquet: unreadable"),
    ("empty shard", _empty_shard, [], "c.jsonl: empty"),
    ("bad line", _bad_line, [], "b.jsonl:"),
    ("tokenizer does not load", None, ["--tokenizer={base}/corpus/a.jsonl"], "does not load"),
    ("output inside the corpus", None, ["--out={base}/corpus/tokens"], "inside the corpus"),
    ("output of another tokenizer", _out_of_another_tokenizer, [], "another tokenizer"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(demo, tmp_path, case, prepare,
                                                           argv, says):
    base = tmp_path
    write_corpus(base / "corpus", demo_texts(9))
    if prepare:
        prepare(base / "corpus")
    before = {p: p.read_bytes() for p in base.rglob("*") if p.is_file()}
    given = {a.split("=")[0]: a.format(base=base) for a in argv}
    args = {"--corpus": f"--corpus={base / 'corpus'}", "--out": f"--out={base / 'out'}",
            "--tokenizer": f"--tokenizer={demo['tok']}", **given}
    result = flame("data", *args.values(), "cluster=local", "cluster.parallelism=1",
                   check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and says in lines[0], result.stderr
    if prepare is not _bad_line:  # checked before anything is written
        assert {p: p.read_bytes() for p in base.rglob("*") if p.is_file()} == before, case
        return
    # found by the shard's job: the shards done before it stay (a rerun keeps them); of the
    # bad one nothing is left, and there is no manifest
    assert not list(base.rglob("b_text_document*")) and not list(base.rglob("*.partial-*"))
    assert not (base / "out" / MANIFEST_JSON).exists()


def test_dtype_is_megatron_cores():
    from megatron.core.datasets.indexed_dataset import DType

    for vocab in (500, 50277, 65499, 65500, 128256):
        assert tokenize._optimal_dtype(vocab) == DType.optimal_dtype(vocab)
    assert np.dtype(tokenize._optimal_dtype(50277)).name == "uint16"


def test_slurm_gets_one_array_of_the_missing_shards_and_its_last_task_writes_the_manifest(
        demo, tmp_path, monkeypatch):
    """On a fake SLURM (tests/jobs/fake_slurm.py): the shard jobs are one array with no GPUs,
    a rerun leaves queued shards to their jobs, a task stopped by its time limit asks to be
    requeued, and the task that finishes the last shard writes the manifest."""
    from submitit.core.utils import DelayedSubmission

    from tests.jobs.fake_slurm import fake_slurm

    out = tmp_path / "out"
    argv = ("data", f"--corpus={demo['corpus']}", f"--out={out}", f"--tokenizer={demo['tok']}",
            "cluster=slurm", "cluster.gpus_per_node=8", "cluster.cpus_per_task=4")
    with fake_slurm(monkeypatch) as fake:
        first = flame(*argv)
        assert "submitted 3 shard jobs" in first.stdout and len(fake.jobs) == 1
        sbatch = fake.jobs[0].sbatch
        assert "--array=0-2" in sbatch and "--cpus-per-task=4" in sbatch
        assert "gpu" not in sbatch and not fake.jobs[0].held
        again = flame(*argv)  # all three still queued: nothing submitted twice
        assert "every missing shard has a job queued" in again.stdout and len(fake.jobs) == 1
        tasks = sorted((out / ".flame-data" / "logs").glob("*/*_submitted.pkl"))
        assert len(tasks) == 3
        task = DelayedSubmission.load(tasks[0])
        assert isinstance(task.function.checkpoint(), DelayedSubmission)  # requeue on USR2
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
        monkeypatch.setenv("RAYON_NUM_THREADS", "1")  # the task sets it: restored after
        task.result()  # the first shard's job runs
        assert not (out / MANIFEST_JSON).exists()
        fake.queue.clear()  # the other two died unseen: a rerun submits just those
        flame(*argv)
        assert "--array=0-1" in fake.jobs[1].sbatch
        for path in sorted((out / ".flame-data" / "logs").glob(f"{fake.jobs[1].job_id}/"
                                                              "*_submitted.pkl")):
            DelayedSubmission.load(path).result()
    assert read_manifest(out / MANIFEST_JSON).fingerprint == \
        read_manifest(demo["out"] / MANIFEST_JSON).fingerprint


@pytest.mark.slurm
@pytest.mark.slow
def test_on_the_local_slurm_a_requeued_shard_job_still_ends_in_the_same_manifest(
        demo, tmp_path, slurm_cluster):
    """The real local SLURM: the array runs, `scontrol requeue` of a running task starts its
    shard again, and the last task writes the same manifest as the local run."""
    import subprocess
    import time

    out = tmp_path / "out"
    flame("data", f"--corpus={demo['corpus']}", f"--out={out}", f"--tokenizer={demo['tok']}",
          "cluster=slurm_local")
    job = json.loads((out / ".flame-data" / "jobs.json").read_text())["a_text_document"]
    try:
        deadline = time.monotonic() + 120
        while "RUNNING" not in subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"],
                                              capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, "the shard job never started"
            time.sleep(0.2)
        subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True)
        deadline = time.monotonic() + 300
        while not (out / MANIFEST_JSON).exists():
            assert time.monotonic() < deadline, "no manifest after the requeue"
            time.sleep(1)
    finally:
        subprocess.run(["scancel", job.split("_")[0]], capture_output=True)
    restarts = subprocess.run(["sacct", "-n", "-X", "-D", "-j", job, "-o", "State"],
                              capture_output=True, text=True).stdout.split()
    assert "REQUEUED" in restarts, restarts  # it did start twice
    assert read_manifest(out / MANIFEST_JSON).fingerprint == \
        read_manifest(demo["out"] / MANIFEST_JSON).fingerprint
    assert not list(out.rglob("*.partial-*"))

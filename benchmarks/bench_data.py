"""`flame data`'s shard job against its ceiling: tokens per second per core of the whole job
(read jsonl, parse, encode, write the megatron-core .bin/.idx, hash, rename, record) and of the
tokenizer's own batch encode (``encode_batch_fast``, the same batches of the same text already
in memory), in the same run on the same threads. Target: the job >= 70% of the ceiling.
Per core = per CPU-second of the process (``time.process_time``, every thread counted), so
the ratio holds on a busy machine; wall-clock seconds are shown beside.

    .venv/bin/python benchmarks/bench_data.py [--threads 1] [--tokenizer tokenizer.json]
                                              [--files 0] [--repeats 3]

Text: the demo's corpus (the standard library's sources, trainers/embedded/data.py), written
as 4 jsonl shards. Tokenizer: a byte-level BPE of 8,000 ids trained on that text here, or the
one --tokenizer names (e.g. EleutherAI/pythia-12b's tokenizer.json, docs/data.md). Each side
runs --repeats times, alternating; the best of each is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="tokenizer threads (cores)")
    parser.add_argument("--tokenizer", default=None, help="a tokenizer.json (default: train one)")
    parser.add_argument("--files", type=int, default=0, help="corpus files to use (0: all)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # before the tokenizer's thread pool starts: both sides get the same cores
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)

    from rich.console import Console
    from rich.table import Table
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from trainers import tokenize
    from trainers.embedded.data import stdlib_files

    files = stdlib_files()[:args.files or None]
    docs = [f.read_text(errors="replace") for f in files]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.tokenizer:
            tok_path = Path(args.tokenizer)
        else:
            tok = Tokenizer(models.BPE())
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.train_from_iterator(docs, trainers.BpeTrainer(
                vocab_size=8000, special_tokens=[tokenize.DEFAULT_EOD],
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
            tok_path = root / "tokenizer.json"
            tok.save(str(tok_path))
        (root / "corpus").mkdir()
        for k in range(4):
            with open(root / "corpus" / f"shard_{k}.jsonl", "w") as handle:
                handle.writelines(json.dumps({"text": d}) + "\n" for d in docs[k::4])
        tok, info = tokenize.load_tokenizer(str(tok_path))
        tokenize._encode_into  # noqa: B018 - imported below, outside the timings
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder  # noqa: F401

        specs = [tokenize.ShardSpec(str(p), p.name, str(root / "out"), p.stem,
                                    p.stat().st_size)
                 for p in sorted((root / "corpus").glob("*.jsonl"))]
        texts = [d for spec in specs for d in tokenize.texts(Path(spec.source), "text")]
        batches = list(tokenize.batches(iter(texts)))
        ceiling, job, tokens = [], [], 0
        for _ in range(args.repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            count = sum(len(e.ids) for b in batches
                        for e in tok.encode_batch_fast(b, add_special_tokens=False))
            ceiling.append((time.process_time() - cpu, time.perf_counter() - wall))
            for spec in specs:  # a fresh output each time: the job does its whole work
                for path in Path(spec.out).glob(f"{spec.prefix}.*"):
                    path.unlink()
            wall, cpu = time.perf_counter(), time.process_time()
            shards = [tokenize.write_shard(spec, tok, info, "text") for spec in specs]
            job.append((time.process_time() - cpu, time.perf_counter() - wall))
            tokens = sum(s.tokens - s.documents for s in shards)  # without the EOD ids
            assert tokens == count, (tokens, count)

    best_ceiling, best_job = min(ceiling), min(job)
    rate_ceiling, rate_job = tokens / best_ceiling[0], tokens / best_job[0]
    table = Table(title=f"tokens per CPU-second ({args.threads} thread(s), "
                        f"{sum(map(len, docs)) / 1e6:.1f} M characters, {tokens:,} tokens, "
                        f"vocab {info.vocab_size:,})")
    for column in ("", "CPU s", "wall s", "tokens/s/core", "share of ceiling"):
        table.add_column(column, justify="right")
    table.add_row("tokenizer encode_batch_fast (ceiling)", f"{best_ceiling[0]:.2f}",
                  f"{best_ceiling[1]:.2f}", f"{rate_ceiling:,.0f}", "100%")
    table.add_row("flame data shard job", f"{best_job[0]:.2f}", f"{best_job[1]:.2f}",
                  f"{rate_job:,.0f}", f"{rate_job / rate_ceiling:.1%}")
    Console().print(table)
    print(f"target >= 70% of the ceiling: {'met' if rate_job >= 0.7 * rate_ceiling else 'MISSED'}")


if __name__ == "__main__":
    main()

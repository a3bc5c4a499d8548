"""Tokenise one corpus file into a megatron-core indexed dataset (``flame data``'s shard job).

What Megatron-LM's own ``tools/preprocess_data.py --append-eod`` writes (core_v0.16.1,
55ac708: ``Encoder.encode`` lines 92-114, ``process_json_file`` 152-195): per document the
text field's token ids (``HuggingFaceTokenizer.text_to_ids``: no special tokens added,
megatron/core/tokenizers/text/libraries/huggingface_tokenizer.py:244-250) then the eos
token's id (its ``eod``, :306-310), one sequence per document, in a .bin of
``DType.optimal_dtype(vocab_size)``. Two differences, both on purpose: a document with no
tokens is skipped (preprocess_data adds it as a document of no sequence), and documents are
encoded in batches with the ``tokenizers`` library itself (Rust, no ``transformers``).

Crash-safe: a shard is written under temporary names (``<prefix>.bin.partial-<job>``, which
no ``*.bin`` glob and no Megatron run picks up), renamed into place (.bin, then .idx), and
only then is its record ``<prefix>.shard.json`` written: a shard counts as done when that
record matches the files beside it. A job killed at any point leaves no pair a run could read,
and the next run of ``flame data`` writes that shard again, and only it.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import socket
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sweep.errors import ConfigError
from sweep.io import atomic_write_text, exclusive_lock
from trainers.corpus_manifest import Shard, TokenizerInfo
from trainers.mcore_datasets import datasets_package

SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
RECORD = ".shard.json"
STATE_DIR = ".flame-data"  # the plan, locks and job logs, inside the output
BATCH_CHARS = 1 << 22  # text per encode_batch call: enough for every thread, bounded memory
DEFAULT_EOD = "<|endoftext|>"  # GPT-2 / GPT-NeoX (pythia)'s end of text


# --- the tokenizer --------------------------------------------------------------------------

def tokenizer_file(spec: str) -> Path | None:
    """The tokenizer.json ``spec`` names (the file, or a directory holding it); None for a
    model hub id (``owner/name`` that is no local path)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path / "tokenizer.json"
    hub_id = spec.count("/") == 1 and not spec.startswith((".", "/", "~"))
    return None if hub_id and not path.exists() else path


def load_tokenizer(spec: str, eod_token: str | None = None) -> tuple[Any, TokenizerInfo]:
    """A ``tokenizers.Tokenizer`` and what the manifest records of it, or a ConfigError."""
    from tokenizers import Tokenizer

    file = tokenizer_file(spec)
    try:
        tok = Tokenizer.from_file(str(file)) if file else Tokenizer.from_pretrained(spec)
    except Exception as err:  # noqa: BLE001 - the library raises plain Exceptions
        where = f"{file} does not load" if file else "not found on the model hub or its cache"
        raise ConfigError(f"--tokenizer={spec}: {where} ({' '.join(str(err).split())[:160]}); "
                          "give a tokenizer.json or a directory holding one") from None
    token = eod_token or _eos_token(file) or DEFAULT_EOD
    eod = tok.token_to_id(token)
    if eod is None:
        raise ConfigError(f"--eod-token={token!r}: not in the tokenizer's vocabulary; name the "
                          "token that ends a document (the tokenizer's eos token)")
    vocab = tok.get_vocab_size(with_added_tokens=True)
    info = TokenizerInfo(source=spec, sha256=hashlib.sha256(tok.to_str().encode()).hexdigest(),
                         vocab_size=vocab, eod_token=token, eod=eod,
                         dtype=np.dtype(_optimal_dtype(vocab)).name)
    return tok, info


def _optimal_dtype(vocab_size: int) -> type:
    """megatron-core's ``DType.optimal_dtype`` (indexed_dataset.py): uint16 below 65500 ids,
    else int32 (restated: importing megatron.core costs seconds; a test compares the two)."""
    return np.uint16 if vocab_size < 65500 else np.int32


def _eos_token(file: Path | None) -> str | None:
    """The eos token that ``transformers`` (so Megatron's HuggingFaceTokenizer) would take:
    tokenizer_config.json's, else special_tokens_map.json's, beside the tokenizer.json."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = file.parent / name if file else None
        if path is not None and path.is_file():
            eos = json.loads(path.read_text()).get("eos_token")
            eos = eos.get("content") if isinstance(eos, dict) else eos
            if isinstance(eos, str) and eos:
                return eos
    return None


# --- the corpus -------------------------------------------------------------------------------

def corpus_files(corpus: Path) -> list[Path]:
    """The corpus's shards: the file itself, or every .jsonl/.jsonl.gz/.parquet under the
    directory (hidden ones aside), sorted by path."""
    if corpus.is_file():
        return [corpus]
    return sorted(p for p in corpus.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)
                  and not any(part.startswith(".") for part in p.relative_to(corpus).parts))


def texts(path: Path, text_field: str) -> Iterator[str]:
    """Each document's text of one shard; a malformed one is a ConfigError naming it."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(path)
        if text_field not in handle.schema_arrow.names:
            raise ConfigError(f"{path}: no column {text_field!r} (it has "
                              f"{', '.join(handle.schema_arrow.names)}); set --text-field")
        for batch in handle.iter_batches(columns=[text_field], batch_size=4096):
            yield from (t for t in batch.column(0).to_pylist() if t)
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)[text_field]
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{path}:{n}: not a JSON object with a {text_field!r} field; "
                                  "fix the line, or set --text-field") from None
            if not isinstance(text, str):
                raise ConfigError(f"{path}:{n}: {text_field!r} is not a string")
            if text:
                yield text


def check_shard(path: Path, text_field: str) -> None:
    """Before any job: the shard is readable and holds a document (a ConfigError otherwise)."""
    try:
        first = next(texts(path, text_field), None)
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise ConfigError(f"{path}: unreadable ({err.__class__.__name__}: "
                          f"{' '.join(str(err).split())[:120]}); fix or remove it") from None
    except Exception as err:  # noqa: BLE001 - pyarrow's errors: not a parquet file
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{path}: unreadable ({' '.join(str(err).split())[:120]}); fix or "
                          "remove it") from None
    if first is None:
        raise ConfigError(f"{path}: empty (no document with text in {text_field!r}); remove it "
                          "from the corpus")


def batches(docs: Iterator[str], chars: int = BATCH_CHARS) -> Iterator[list[str]]:
    """Documents in lists of about ``chars`` characters."""
    batch: list[str] = []
    size = 0
    for doc in docs:
        batch.append(doc)
        size += len(doc)
        if size >= chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# --- one shard ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardSpec:
    """One shard job: which file, where its dataset goes, with which settings."""

    source: str
    """The corpus file (absolute)."""
    source_name: str
    """Its path relative to the corpus (the manifest's ``source``)."""
    out: str
    """The output directory."""
    prefix: str
    """The dataset's prefix, relative to ``out``."""
    source_bytes: int
    """The corpus file's size when the job was planned (a changed file is tokenised again)."""

    def path(self, suffix: str) -> Path:
        return Path(self.out) / f"{self.prefix}{suffix}"


def settings_key(info: TokenizerInfo, text_field: str) -> dict[str, Any]:
    """What makes two shards of one file differ: recorded with each shard."""
    return {"tokenizer_sha256": info.sha256, "eod": info.eod, "dtype": info.dtype,
            "text_field": text_field, "version": 1}


def done_record(spec: ShardSpec, key: dict[str, Any]) -> Shard | None:
    """The shard's record when it is complete for these settings (files beside it at the
    recorded sizes), else None."""
    try:
        data = json.loads(spec.path(RECORD).read_text())
        shard = Shard(**data["shard"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (data.get("settings") != key or data.get("source_bytes") != spec.source_bytes
            or shard.prefix != spec.prefix):
        return None
    for suffix, size in ((".bin", shard.bin_bytes), (".idx", shard.idx_bytes)):
        file = spec.path(suffix)
        if not file.is_file() or file.stat().st_size != size:
            return None
    return shard


def recorded_settings(spec: ShardSpec) -> dict[str, Any] | None:
    """The settings a shard record beside ``spec`` was made with, if any."""
    try:
        return json.loads(spec.path(RECORD).read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        return None


def shard_lock(spec: ShardSpec) -> AbstractContextManager[None]:
    """One writer per shard (two jobs for one shard: the second waits, then finds it done)."""
    return exclusive_lock(Path(spec.out) / STATE_DIR / "locks" /
                          (spec.prefix.replace("/", "__") + ".lock"))


def write_shard(spec: ShardSpec, tok: Any, info: TokenizerInfo, text_field: str) -> Shard:
    """Tokenise ``spec.source`` into ``spec.prefix``.bin/.idx (see the module's docstring)."""
    key = settings_key(info, text_field)
    with shard_lock(spec):
        done = done_record(spec, key)
        if done is not None:
            return done
        spec.path(RECORD).unlink(missing_ok=True)
        for stale in Path(spec.out).glob(f"{glob.escape(spec.prefix)}.*.partial-*"):
            stale.unlink(missing_ok=True)  # a killed job's: we hold the shard's lock
        tag = f".partial-{socket.gethostname()}-{os.getpid()}"
        bin_tmp, idx_tmp = Path(f"{spec.path('.bin')}{tag}"), Path(f"{spec.path('.idx')}{tag}")
        bin_tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            documents, tokens, bin_sha = _encode_into(spec, tok, info, text_field, bin_tmp,
                                                      idx_tmp)
            idx_sha = hashlib.sha256(idx_tmp.read_bytes()).hexdigest()
            shard = Shard(prefix=spec.prefix, source=spec.source_name, documents=documents,
                          tokens=tokens, bin_bytes=bin_tmp.stat().st_size,
                          idx_bytes=idx_tmp.stat().st_size, bin_sha256=bin_sha,
                          idx_sha256=idx_sha)
            os.replace(bin_tmp, spec.path(".bin"))
            os.replace(idx_tmp, spec.path(".idx"))
        finally:
            bin_tmp.unlink(missing_ok=True)
            idx_tmp.unlink(missing_ok=True)
        atomic_write_text(spec.path(RECORD), json.dumps(
            {"shard": asdict(shard), "settings": key, "source_bytes": spec.source_bytes},
            indent=1) + "\n")
        return shard


def _encode_into(spec: ShardSpec, tok: Any, info: TokenizerInfo, text_field: str,
                 bin_path: Path, idx_path: Path) -> tuple[int, int, str]:
    """Documents, tokens and the .bin's SHA-256 (of the bytes written, as written)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # megatron-core's notes about TransformerEngine, Apex
        datasets_package()
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    dtype = np.dtype(info.dtype)
    builder = IndexedDatasetBuilder(str(bin_path), dtype=dtype.type)
    digest, counts = hashlib.sha256(), [0, 0]
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets: ~15% faster

    def add(encodings: list[Any]) -> None:
        for encoding in encodings:
            ids = encoding.ids
            if not ids:
                continue
            doc = np.empty(len(ids) + 1, dtype=dtype)
            doc[:-1] = ids
            doc[-1] = info.eod
            digest.update(doc.tobytes())
            builder.add_document(doc, [doc.size])
            counts[0] += 1
            counts[1] += doc.size

    # The tokenizer releases the GIL: batch k+1 is encoded (on its own threads) while this
    # thread parses the next text and writes batch k, so only encoding holds up the job.
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for batch in batches(texts(Path(spec.source), text_field)):
            ahead = pool.submit(encode, batch, add_special_tokens=False)
            if pending is not None:
                add(pending.result())
            pending = ahead
        if pending is not None:
            add(pending.result())
    builder.finalize(str(idx_path))
    return counts[0], counts[1], digest.hexdigest()

"""The embedded trainer's data: a real text corpus, byte-tokenised once into megatron-core's
indexed dataset (.bin/.idx), read through megatron-core's ``GPTDataset`` with a train/valid split.

Default corpus: the ``.py`` sources of the Python standard library that ships with the
interpreter (``sysconfig.get_paths()["stdlib"]``; ``pydoc_data/topics.py`` carries the language
reference's text), minus the directories that Linux distributions split into separate packages
(test suites, tkinter, idlelib, ...), so the same Python version gives the same corpus
everywhere: on CPython 3.11.7, 511 files, 508 non-empty documents, 10,027,224 byte tokens
(EOD markers included). Files are sorted, then
shuffled with a fixed seed before writing, so the validation documents (a contiguous range in
Megatron's split) are a random sample of modules rather than the alphabetical tail.

Byte-level tokens (vocabulary 256, id = UTF-8 byte) need no trained tokenizer; byte 0 (NUL never
occurs in text) ends each document as Megatron's EOD. A user can point ``trainer.data.paths`` at
their own text or jsonl (a ``text`` field per line) files or globs.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import shutil
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sweep.errors import ConfigError
from sweep.io import exclusive_lock
from trainers.mcore_datasets import datasets_package
from trainers.settings import DataConfig

EOD = 0
VOCAB = 256
FORMAT_VERSION = 1
# Parts of the standard library that distributions ship separately or not at all.
STDLIB_EXCLUDED = frozenset({"test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3",
                             "distutils", "ensurepip", "site-packages", "dist-packages",
                             "__phello__", "__pycache__"})


def cache_root(cache_dir: str | None) -> Path:
    """Where tokenised corpora live: ``trainer.cache_dir``, else ~/.cache/flame/data."""
    if cache_dir:
        return Path(cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "flame" / "data"


@functools.lru_cache(maxsize=1)  # the interpreter's own library: walked once per process
def stdlib_files() -> list[Path]:
    """The default corpus's files, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        # Excluded folders are not entered (test/ alone holds a third of the library's files)
        top = folder == str(root)
        dirs[:] = [d for d in dirs if d not in STDLIB_EXCLUDED
                   and not (top and d.startswith("config-"))]
        files += [Path(folder, name) for name in names if name.endswith(".py")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def user_files(patterns: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        found = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not found:
            raise ConfigError(f"trainer.data.paths: {pattern!r} matches no file; give text "
                              "or .jsonl files (or globs) that exist")
        files += [Path(f) for f in found if Path(f).is_file()]
    return files


def documents(files: Sequence[Path]) -> Iterator[bytes]:
    """Each text file is one document; each jsonl line's ``text`` is one."""
    for path in files:
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as handle:
                for n, line in enumerate(handle, 1):
                    if line.strip():
                        try:
                            yield json.loads(line)["text"].encode("utf-8")
                        except (ValueError, KeyError, TypeError):
                            raise ConfigError(f"{path}:{n}: not a JSON object with a 'text' "
                                              "field; fix the line or remove the file") from None
        else:
            yield path.read_bytes()


@dataclass(frozen=True)
class Corpus:
    """A tokenised corpus on disk (megatron-core indexed dataset) and what is in it."""

    prefix: str
    """Path prefix of ``<prefix>.bin`` / ``<prefix>.idx``."""
    documents: int
    """Number of documents."""
    tokens: int
    """Number of tokens (EOD markers included)."""
    source: str
    """Where the text came from."""


# Corpora this process prepared, by their files' identities (path, size, mtime): a worker that
# trains run after run reads and hashes the text once, not once per run (~0.5 s each).
_PREPARED: dict[tuple, Corpus] = {}


def _signature(files: Sequence[Path], cfg: DataConfig, cache_dir: str | None) -> tuple:
    stats = tuple((str(f), s.st_size, s.st_mtime_ns) for f in files for s in [f.stat()])
    return (stats, cfg.seed, str(cache_root(cache_dir)))


def prepare_corpus(cfg: DataConfig, cache_dir: str | None = None) -> Corpus:
    """Tokenise the corpus once into the cache (keyed by its content) and return it."""
    files = user_files(cfg.paths) if cfg.paths else list(stdlib_files())
    signature = _signature(files, cfg, cache_dir)
    known = _PREPARED.get(signature)
    if known is not None and Path(known.prefix + ".bin").exists():
        return known
    _PREPARED[signature] = corpus = _prepare(files, cfg, cache_dir)
    return corpus


def _prepare(files: Sequence[Path], cfg: DataConfig, cache_dir: str | None) -> Corpus:
    docs = [d.replace(b"\0", b"") for d in documents(files)]
    docs = [d for d in docs if d]
    if not docs:
        raise ConfigError("trainer.data.paths: the files hold no text")
    digest = hashlib.sha256(f"v{FORMAT_VERSION}:{cfg.seed}".encode())
    for doc in docs:
        digest.update(len(doc).to_bytes(8, "little"))
        digest.update(doc)
    key = digest.hexdigest()[:16]
    directory = cache_root(cache_dir) / key
    stdlib = sysconfig.get_paths()["stdlib"]
    source = ", ".join(cfg.paths) if cfg.paths else f"python stdlib {stdlib}"
    meta_path = directory / "corpus.json"
    if not meta_path.exists():
        _write_corpus(directory, docs, cfg.seed, source)
    meta = json.loads(meta_path.read_text())
    return Corpus(str(directory / "corpus"), meta["documents"], meta["tokens"], meta["source"])


def _write_corpus(directory: Path, docs: list[bytes], seed: int, source: str) -> None:
    datasets_package()
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    order = np.random.RandomState(seed).permutation(len(docs))
    builder = IndexedDatasetBuilder(str(staging / "corpus.bin"), dtype=np.uint16)
    tokens = 0
    for i in order:
        ids = np.frombuffer(docs[i] + bytes([EOD]), dtype=np.uint8).astype(np.uint16)
        # lengths must be the real length: [0] makes GPTDataset hang (notes/README.md)
        builder.add_document(ids, [len(ids)])  # takes arrays too (np.array(x, dtype))
        tokens += len(ids)
    builder.finalize(str(staging / "corpus.idx"))
    (staging / "corpus.json").write_text(json.dumps(
        {"documents": len(docs), "tokens": tokens, "source": source, "vocab": VOCAB}))
    try:
        os.rename(staging, directory)  # atomic: concurrent jobs race, one wins
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (directory / "corpus.json").exists():
            raise


class _ByteVocab:
    """What GPTDataset asks of a tokenizer: vocab size and the end-of-document id (no pad id,
    so Megatron uses -1, which never occurs)."""

    vocab_size = VOCAB
    eod = EOD
    # MegatronDataset hashes its config (tokenizer included) into the sample-index cache key.
    unique_identifiers = {"class": "flame.bytes", "vocab_size": VOCAB, "eod": EOD}


def build_datasets(corpus: Corpus, cfg: DataConfig, seq_length: int, train_samples: int,
                   valid_samples: int) -> tuple[Any, Any]:
    """megatron-core GPTDatasets (train, valid) of ``seq_length`` tokens (+1 for the labels)."""
    datasets_package()
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    config = GPTDatasetConfig(
        random_seed=cfg.seed, sequence_length=seq_length, blend=([corpus.prefix], None),
        split=cfg.split, path_to_cache=str(Path(corpus.prefix).parent / "indices"),
        tokenizer=_ByteVocab(), reset_position_ids=False, reset_attention_mask=False,
        eod_mask_loss=False, create_attention_mask=False)
    # GPTDataset writes its .npy sample indices non-atomically; two jobs building the same
    # index at once must not read each other's half-written files.
    with exclusive_lock(Path(corpus.prefix).parent / "indices.lock"):
        train, valid, _ = BlendedMegatronDatasetBuilder(
            GPTDataset, [train_samples, valid_samples, 0], lambda: True, config).build()
    if valid is None or len(valid) < valid_samples:
        raise ConfigError(f"trainer.data.split={cfg.split!r}: the validation split has "
                          f"{0 if valid is None else len(valid)} sequences, fewer than the "
                          f"{valid_samples} evaluation needs; raise its share or lower "
                          "trainer.eval_iters")
    return train, valid

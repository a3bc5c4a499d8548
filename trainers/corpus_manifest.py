"""A tokenised corpus's manifest (``flame data`` writes it; ``trainer.data_path`` reads it).

``<out>/manifest.json`` lists the corpus's shards (megatron-core indexed datasets, one
``<prefix>.bin`` / ``<prefix>.idx`` pair each), their documents and tokens, the weighted
``--data-path`` list FLAME-MoE gave Megatron (every shard with weight 1.0:
cmu-flame/FLAME-MoE e9b2fe2, scripts/training/modules/flame-moe_step2.sh:16) and the corpus's
fingerprint. Shard prefixes are relative to the manifest, so the directory can move.

The fingerprint is a hash of what Megatron reads, in the order it reads it: each shard's
weight and the SHA-256 of its .bin and .idx files. Paths and names are not in it: the same
corpus moved elsewhere has the same fingerprint (and a sweep keeps its run_ids); any other
corpus, tokenizer or shard order has another (and every run a new run_id).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sweep.errors import ConfigError
from sweep.io import atomic_write_text

MANIFEST_JSON = "manifest.json"
FORMAT = "flame.data.manifest"
VERSION = 1
WEIGHT = 1.0  # FLAME-MoE: equal weight per shard (not per token)


@dataclass(frozen=True)
class Shard:
    """One tokenised shard: a megatron-core indexed dataset made from one corpus file."""

    prefix: str
    """``<prefix>.bin`` / ``<prefix>.idx``, relative to the manifest's directory."""
    source: str
    """The corpus file it was made from, relative to the corpus."""
    documents: int
    """Documents written (empty ones are skipped)."""
    tokens: int
    """Tokens written (one end-of-document id per document included)."""
    bin_bytes: int
    """Size of the .bin file."""
    idx_bytes: int
    """Size of the .idx file."""
    bin_sha256: str
    """SHA-256 of the .bin file."""
    idx_sha256: str
    """SHA-256 of the .idx file."""


@dataclass(frozen=True)
class TokenizerInfo:
    """The tokenizer a corpus was made with."""

    source: str
    """What was given: a tokenizer.json, or a directory holding one."""
    sha256: str
    """SHA-256 of the tokenizer.json."""
    vocab_size: int
    """Ids including added tokens (Megatron's ``len(tokenizer)``)."""
    eod_token: str
    """The token appended to every document (Megatron's ``eod``: the eos token)."""
    eod: int
    """Its id."""
    dtype: str
    """Token dtype of the .bin files (megatron-core ``DType.optimal_dtype(vocab_size)``)."""


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: a tokenised corpus as Megatron will read it."""

    fingerprint: str
    """Hash of the shards' weights and file hashes in data_path order (``fingerprint``)."""
    shards: list[Shard]
    """The shards, in data_path order (sorted by prefix)."""
    tokenizer: TokenizerInfo
    """The tokenizer used."""
    text_field: str
    """The jsonl key / parquet column the text came from."""
    corpus: str
    """Where the corpus was when it was tokenised (informational)."""
    documents: int = 0
    """Documents in all shards."""
    tokens: int = 0
    """Tokens in all shards."""
    data_path: list[str] = field(default_factory=list)
    """Megatron's ``--data-path`` words: ``1.0 <prefix> 1.0 <prefix> ...`` (relative)."""
    format: str = FORMAT
    """What this file is."""
    version: int = VERSION
    """Its format version."""

    def absolute_data_path(self, root: Path) -> list[str]:
        """``data_path`` with each prefix under ``root`` (the manifest's directory)."""
        words = []
        for shard in self.shards:
            words += [f"{WEIGHT}", str((root / shard.prefix).resolve())]
        return words


def fingerprint(shards: list[Shard]) -> str:
    """What Megatron reads, in order: weight and file hashes of each shard (no paths)."""
    parts = [{"weight": WEIGHT, "bin": s.bin_sha256, "idx": s.idx_sha256} for s in shards]
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def make_manifest(shards: list[Shard], tokenizer: TokenizerInfo, text_field: str,
                  corpus: str) -> Manifest:
    """The manifest of ``shards`` (ordered by prefix)."""
    shards = sorted(shards, key=lambda s: s.prefix)
    words = [w for s in shards for w in (f"{WEIGHT}", s.prefix)]
    return Manifest(fingerprint=fingerprint(shards), shards=shards, tokenizer=tokenizer,
                    text_field=text_field, corpus=corpus,
                    documents=sum(s.documents for s in shards),
                    tokens=sum(s.tokens for s in shards), data_path=words)


def write_manifest(out: Path, manifest: Manifest) -> Path:
    """``<out>/manifest.json``, atomically."""
    path = Path(out) / MANIFEST_JSON
    atomic_write_text(path, json.dumps(asdict(manifest), indent=1) + "\n")
    return path


def read_manifest(path: Path) -> Manifest:
    """A manifest file, or a ConfigError naming it."""
    try:
        data = json.loads(Path(path).read_text())
        if data.get("format") != FORMAT:
            raise ValueError("not a flame data manifest")
        if data.get("version", 0) > VERSION:
            raise ValueError(f"version {data['version']} was written by a newer flame")
        return Manifest(**{**data, "shards": [Shard(**s) for s in data["shards"]],
                           "tokenizer": TokenizerInfo(**data["tokenizer"])})
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise ConfigError(f"trainer.data_path={path}: not a readable `flame data` manifest "
                          f"({err}); give the manifest.json `flame data` wrote") from None


def manifest_file(words: list[str] | None) -> Path | None:
    """The manifest ``trainer.data_path`` names (one word: a ``.json`` file, or a directory
    holding manifest.json), or None when it names indexed-dataset prefixes."""
    if not words or len(words) != 1:
        return None
    path = Path(words[0]).expanduser()
    if path.suffix == ".json":
        return path
    return path / MANIFEST_JSON if (path / MANIFEST_JSON).is_file() else None


def resolve(words: list[str] | None) -> tuple[list[str], str] | None:
    """``trainer.data_path``'s words as Megatron's ``--data-path`` list and the corpus's
    fingerprint when they name a manifest (None otherwise). Every shard must be beside the
    manifest at the size it records: a partly copied corpus fails here, not on rank 0."""
    path = manifest_file(words)
    if path is None:
        return None
    manifest = read_manifest(path)
    root = path.parent
    for shard in manifest.shards:
        for suffix, size in ((".bin", shard.bin_bytes), (".idx", shard.idx_bytes)):
            file = root / f"{shard.prefix}{suffix}"
            found = file.stat().st_size if file.is_file() else None
            if found != size:
                state = "missing" if found is None else f"{found} bytes, not {size}"
                raise ConfigError(f"trainer.data_path={words[0]}: shard {file} is {state}; "
                                  "copy the whole directory, or run `flame data` again")
    return manifest.absolute_data_path(root), manifest.fingerprint

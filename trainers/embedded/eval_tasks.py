"""The demo's downstream task, built from held-out text of the embedded trainer's corpus.

``flame_demo_completion`` (``trainers/embedded/tasks/``, an lm-eval task: YAML + jsonl): given
the text of a Python module up to a point inside a line, pick the line's true ending among
four. The modules are the corpus's validation documents (the range of the shuffled corpus that
Megatron's split gives the valid set; no run ever trains on them), so the task measures what
the models learned, not what they memorised. The three distractors are endings of lines of
*other* validation modules, of the same length in bytes: length gives nothing away, and what
tells the ending apart is what the model learned of Python (brackets and quotes opened before
the cut, names in the context). A first version asked for the whole next line: the demo's
best model scored 0.265 there, chance being 0.25; too hard to rank byte-level models of 2k to
150k parameters.

Regenerate the shipped file (the same bytes on the same Python version):
``python -m trainers.embedded.eval_tasks``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweep.io import atomic_write_text
from trainers.settings import DataConfig

TASKS_DIR = Path(__file__).parent / "tasks"
"""The embedded trainer's lm-eval tasks (``TaskManager(include_path=TASKS_DIR)``)."""
COMPLETION = "flame_demo_completion"
COMPLETION_FILE = TASKS_DIR / f"{COMPLETION}.jsonl"


@dataclass(frozen=True)
class CompletionSpec:
    """How the items are drawn."""

    items: int = 200
    """Questions in the task."""
    choices: int = 4
    """Options per question (chance = 1/choices)."""
    context_bytes: int = 96
    """Bytes of text before the cut (the demo models see 128 bytes)."""
    min_line: int = 16
    """Shortest line cut, stripped (bytes)."""
    max_line: int = 60
    """Longest line cut, stripped (bytes)."""
    min_head: int = 4
    """Bytes of the line's content kept in the context at least."""
    min_tail: int = 6
    """Shortest ending to choose (bytes, newline not counted)."""
    max_tail: int = 20
    """Longest ending: context + ending fit the demo's 128-byte window."""
    seed: int = 20240607
    """Seeds the draw."""


def validation_documents(data: DataConfig | None = None, cache_dir: str | None = None
                         ) -> list[bytes]:
    """The corpus's validation documents as megatron-core splits them (the same documents the
    trainer's validation loss reads), as text bytes without the end-of-document marker."""
    from trainers.embedded.data import build_datasets, prepare_corpus

    data = data or DataConfig()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # megatron-core's notes about unset tokenizer fields
        corpus = prepare_corpus(data, cache_dir)
        _, valid = build_datasets(corpus, data, 128, 1, 1)
    indexed = valid.dataset
    return [indexed[int(i)].astype(np.uint8).tobytes().rstrip(b"\0") for i in valid.indices]


def _candidates(docs: Sequence[list[bytes]], spec: CompletionSpec) -> list[tuple[int, int]]:
    """(document, line) pairs whose line may be a question's."""
    found = []
    for d, lines in enumerate(docs):
        offset = 0
        for n, line in enumerate(lines):
            stripped = line.strip()
            if (spec.min_line <= len(stripped) <= spec.max_line and offset >= spec.context_bytes
                    and stripped.isascii()):
                found.append((d, n))
            offset += len(line) + 1
    return found


def completion_items(docs: Sequence[bytes], spec: CompletionSpec = CompletionSpec()
                     ) -> list[dict]:
    """The task's questions: ``context`` (the text up to a point inside a line), ``choices``
    (line endings with their newline, the true one among them), ``label`` (its index),
    ``source`` (document, line)."""
    rng = np.random.default_rng(spec.seed)
    lines = [doc.split(b"\n") for doc in docs]
    pool = _candidates(lines, spec)
    items: list[dict] = []
    for index in rng.permutation(len(pool)):
        if len(items) == spec.items:
            break
        d, n = pool[index]
        item = _item(lines, d, n, pool, rng, spec)
        if item is not None:
            items.append(item)
    return items


def _item(lines: list[list[bytes]], d: int, n: int, pool: list[tuple[int, int]],
          rng: np.random.Generator, spec: CompletionSpec) -> dict | None:
    line = lines[d][n].rstrip()
    content = len(line.lstrip())
    tail = int(rng.integers(spec.min_tail, min(spec.max_tail, content - spec.min_head) + 1))
    head = line[:len(line) - tail]
    before = b"\n".join(lines[d][:n]) + b"\n" + head
    context = before[-spec.context_bytes:].decode("utf-8", errors="ignore")
    truth = line[-tail:]
    endings: set[bytes] = set()
    for e, m in (pool[i] for i in rng.permutation(len(pool))[:200]):
        other = lines[e][m].rstrip()
        if e != d and len(other.lstrip()) >= tail + spec.min_head and other[-tail:] != truth:
            endings.add(other[-tail:])
        if len(endings) == spec.choices - 1:
            break
    if len(endings) < spec.choices - 1:
        return None
    choices = [text.decode() + "\n" for text in sorted(endings)]
    label = int(rng.integers(spec.choices))
    choices.insert(label, truth.decode() + "\n")
    return {"context": context, "choices": choices, "label": label, "source": [d, n]}


def write_items(path: Path, items: Sequence[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(item, sort_keys=True) + "\n" for item in items))


def main() -> None:
    items = completion_items(validation_documents())
    write_items(COMPLETION_FILE, items)
    print(f"wrote {len(items)} questions to {COMPLETION_FILE}")


if __name__ == "__main__":
    main()

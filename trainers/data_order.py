"""Whether each WSD branch (``planner.strategy=branches``) trains on the samples its run
trained straight through would, for the trainers that read a corpus through megatron-core's
``GPTDataset`` (Megatron-LM, and the embedded trainer).

Line numbers are megatron-core core_v0.16.1 (commit 55ac708, the version flame installs):
``G`` = megatron/core/datasets/gpt_dataset.py, ``B`` = blended_megatron_dataset_builder.py,
``T`` = megatron/training/training.py.

A branch's first ``branch_step`` iterations are its trunk's. The trunk's process built its
sample order for the trunk's own length, ``train_iters x global_batch_size`` samples
(T:3297-3300; the embedded trainer asks the same, trainers/embedded/train.py); the branch's
process, which goes on from sample ``branch_step x global_batch_size`` (the consumed samples its
trunk's checkpoint holds), built it for the branch's length, as its straight-through run would.
``GPTDataset`` depends on the requested number of samples only through the number of epochs
(G:617-637: the epochs whose tokens cover ``samples x seq_length + 1``) and, past one epoch,
whether the last epoch is shuffled apart (fewer than 80% of an epoch's samples from it,
G:457-481). Both decide every array: the document index shuffles ``epochs`` copies of the
documents together or the last one apart (G:640-671), the sample index walks it (G:521-532),
the shuffle index permutes all samples or the last epoch's apart (G:535-542), each drawn from
one RandomState seeded anew (G:496). So two lengths with the same epochs and separation read the
same sample i, and otherwise another permutation. Within one epoch (``epochs = 1``) every length
reads the same order: the demo's, and FLAME's sweep on DCLM.

A weighted ``--data-path`` (FLAME's ``1.0 <prefix> ...``, a `flame data` manifest's) builds one
``GPTDataset`` per prefix, each asked for ``ceil(ceil(samples x weight) x (1 + surplus))``
samples (B:175-186, 553-581; Megatron's ``--mid-level-dataset-surplus`` 0.005), and blends them
in an order that depends on the weights alone (helpers.cpp build_blending_indices): each
dataset must agree. A prefix without weight is read directly (B:168-169), as the embedded
trainer's corpus is. The train split is a dataset's documents ``[round(a x D), round(b x D))``
(B:470-471) of its ``split`` (``--split``; mock data's ``1,1,1``,
blended_megatron_dataset_config.py:137-151).

So a branch is exact iff, in every dataset, its length and its trunk's give the same epochs and
separation; a plan with a branch that is not is refused (``check_branches``: at ``flame plan``
and again at ``flame launch``), before anything is written or submitted. The arithmetic and
the .idx reading follow megatron-core without importing it (its package costs seconds of torch
and parallel state at every plan); tests/trainers/test_data_order.py checks each piece, and the
conclusion, against megatron-core's own GPTDataset.
"""

from __future__ import annotations

import math
import re
import shlex
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sweep.branches import unlike_trunks
from sweep.errors import ConfigError
from sweep.planrow import PlanRow

EXTRA_TOKEN = 1
"""GPTDatasetConfig.add_extra_token_to_sequence (G:45, True): a sample holds seq_length + 1."""
SEPARATE_BELOW = 0.80
"""The last epoch is shuffled apart below this share of an epoch's samples (G:477-480)."""
SURPLUS = 0.005
"""Megatron's --mid-level-dataset-surplus default (megatron/training/arguments.py:2512)."""
MOCK_SPLIT = "1,1,1"
"""Mock data's split, whatever --split says (blended_megatron_dataset_config.py:144)."""


class Unreadable(ConfigError):
    """The corpus cannot be read here, so the branches' data order cannot be checked."""


@dataclass(frozen=True)
class Epochs:
    """How GPTDataset lays out one run's samples of one dataset."""

    epochs: int
    """Epochs of the train split the run's samples need (G:617-637)."""
    separate: bool
    """The last epoch shuffled apart from the others (G:457-481)."""

    def __str__(self) -> str:
        if self.epochs == 1:
            return "1 epoch"
        return f"{self.epochs} epochs ({'the last' if self.separate else 'all'} shuffled " \
               f"{'apart' if self.separate else 'together'})"


def epochs(samples: int, tokens_per_epoch: int, seq_length: int) -> Epochs:
    """GPTDataset's epochs and separation for ``samples`` samples of ``seq_length`` tokens
    from a train split of ``tokens_per_epoch`` tokens (G:454-481, 617-637)."""
    requested = samples * seq_length + EXTRA_TOKEN
    count = max(1, -(-requested // tokens_per_epoch))
    if count == 1:
        return Epochs(1, False)
    sans_final = ((count - 1) * tokens_per_epoch - EXTRA_TOKEN) // seq_length
    per_epoch = (tokens_per_epoch - EXTRA_TOKEN) // seq_length
    return Epochs(count, samples - sans_final < int(SEPARATE_BELOW * per_epoch))


@dataclass(frozen=True)
class TrainSplit:
    """One dataset's train split, as GPTDataset reads it."""

    name: str
    """The dataset's prefix (or ``mock data``)."""
    tokens: int
    """Tokens of the split's documents: one epoch (G:609-615)."""
    weight: float | None
    """Its normalised weight in a weighted blend; None: read directly (B:168-169)."""

    def samples(self, run_samples: int, surplus: float) -> int:
        """The samples its GPTDataset is asked for when a run asks for ``run_samples``."""
        if self.weight is None:
            return run_samples
        return math.ceil(math.ceil(run_samples * self.weight) * (1 + surplus))  # B:573-579


@dataclass(frozen=True)
class SampleOrder:
    """How a trainer's runs draw their training samples: GPTDatasets over these splits."""

    splits: tuple[TrainSplit, ...]
    """Every dataset of the blend (one without a blend)."""
    surplus: float = SURPLUS
    """The samples a weighted blend builds beyond each dataset's share."""

    def layout(self, row: PlanRow) -> tuple[Epochs, ...]:
        """Each dataset's epochs for the run ``row`` (its train_iters x global_batch_size)."""
        wanted = row.train_iters * row.global_batch_size
        return tuple(epochs(split.samples(wanted, self.surplus), split.tokens,
                            row.arch.seq_length) for split in self.splits)


def split_bounds(split: str, count: int) -> tuple[int, int]:
    """The train split's documents ``[begin, end)`` of ``count``: ``split``'s weights
    normalised (blended_megatron_dataset_config.py parse_and_normalize_split, :155-173), the
    first's bounds (convert_split_vector_to_split_matrix, :176-200) rounded (B:470-471)."""
    try:
        weights = [float(w) for w in re.findall(r"[.0-9]+", split)]
    except ValueError:
        weights = []
    weights += [0.0] * (3 - len(weights))
    if len(weights) != 3 or sum(weights) <= 0:
        raise ConfigError(f"trainer split {split!r}: give train,valid,test weights, e.g. 90,5,5")
    share = weights[0] / sum(weights)
    return 0, int(round(share * float(count)))


def train_split(name: str, lengths: np.ndarray, split: str, weight: float | None) -> TrainSplit:
    """The train split of a dataset whose documents have ``lengths`` tokens."""
    begin, end = split_bounds(split, len(lengths))
    tokens = int(np.sum(lengths[begin:end], dtype=np.int64))
    if tokens <= 0:  # GPTDataset would count epochs forever (G:634-636)
        raise ConfigError(f"the train split ({split}) of {name} holds no tokens; give a corpus "
                          "with documents in it, or another split")
    return TrainSplit(name, tokens, weight)


INDEX_HEADER = b"MMIDIDX\x00\x00"
"""An indexed dataset's .idx starts so, then version 1 (<Q), dtype code (<B), sequence count
(<Q), document count (<Q), then the sequence lengths, int32 (megatron-core indexed_dataset.py
_IndexReader, :246-291; _IndexWriter.write, :175)."""


def indexed_lengths(prefix: str) -> np.ndarray:
    """The sequence lengths of the indexed dataset ``<prefix>.idx`` (the array GPTDataset
    splits and sums, G:148-160, 609-615), read as megatron-core's reader reads it, without
    importing megatron.core (seconds of torch and its parallel state); ``Unreadable`` when it
    is not there or not an index."""
    path = Path(f"{prefix}.idx")
    try:
        with open(path, "rb") as stream:
            head = stream.read(34)
        size = path.stat().st_size
    except OSError as err:
        raise Unreadable(f"{path} is not readable here ({err.strerror})") from None
    if len(head) < 34 or head[:9] != INDEX_HEADER or struct.unpack("<Q", head[9:17])[0] != 1:
        raise Unreadable(f"{path} is not a megatron-core index (version 1)")
    count = struct.unpack("<Q", head[18:26])[0]
    if size < 34 + 4 * count:
        raise Unreadable(f"{path} is cut short ({size} bytes for {count} lengths)")
    return np.memmap(path, dtype=np.int32, mode="r", offset=34, shape=(count,))


MOCK_DOCUMENTS, MOCK_MAX_LENGTH, MOCK_SEED = 100000, 4096, 0
"""MockGPTLowLevelDataset's documents: ``size`` lengths drawn in [1, max_sequence_length) by
numpy's default_rng(seed) (G:783-810)."""


def mock_lengths() -> np.ndarray:
    """The document lengths of Megatron's mock data (G:803-810)."""
    rng = np.random.default_rng(seed=MOCK_SEED)
    return rng.integers(low=1, high=MOCK_MAX_LENGTH, size=MOCK_DOCUMENTS, dtype=np.int32)


def blend(words: Sequence[str]) -> tuple[list[str], list[float] | None]:
    """--data-path's words as (prefixes, weights or None): weight/prefix pairs when their
    count is even and every other word is a number, else all prefixes (megatron-core
    utils.py get_blend_from_list, :49-94)."""
    words = list(words)
    if len(words) % 2 == 0:
        try:
            weights = [float(w) for w in words[0::2]]
            return [w.strip() for w in words[1::2]], weights
        except ValueError:
            pass
    return [w.strip() for w in words], None


DATA_FLAGS = ("--data-path", "--split", "--mock-data", "--mid-level-dataset-surplus",
              "--train-samples", "--data-args-path", "--per-split-data-args-path",
              "--train-data-path", "--per-dataset-sequences-path")
"""pretrain_gpt.py flags that change which samples a run reads, beside flame's own."""


def megatron_order(m: Any) -> SampleOrder | None:
    """trainer=megatron's order (``MegatronConfig``): mock data, or the weighted (or not)
    ``--data-path``; None without either (no corpus to check yet). A data flag in
    ``trainer.extra_args`` is ``Unreadable``: the order is then not flame's to know."""
    extra = {w.split("=", 1)[0] for arg in m.extra_args for w in shlex.split(arg)}
    if found := sorted(extra.intersection(DATA_FLAGS)):
        raise Unreadable(f"trainer.extra_args sets {', '.join(found)}")
    if m.mock_data:
        return SampleOrder((train_split("mock data", mock_lengths(), MOCK_SPLIT, None),))
    if not m.data_path:
        return None
    prefixes, weights = blend(m.data_path)
    if weights is None and len(prefixes) > 1:
        return None  # unweighted blend: one epoch of each dataset, whatever the length (B:174)
    shares = [w / sum(weights) for w in weights] if weights is not None else [None]
    return SampleOrder(tuple(train_split(prefix, indexed_lengths(prefix), m.split, share)
                             for prefix, share in zip(prefixes, shares)))


def embedded_order(e: Any) -> SampleOrder:
    """The embedded trainer's order (``EmbeddedConfig``): its corpus read directly
    (trainers/embedded/data.py ``build_datasets``: one prefix, no weight)."""
    from trainers.embedded.data import prepare_corpus

    corpus = prepare_corpus(e.data, e.cache_dir)
    return SampleOrder((train_split(corpus.source, indexed_lengths(corpus.prefix),
                                    e.data.split, None),))


def check_branches(rows: Sequence[PlanRow], trainer: Any, required: bool) -> list[str]:
    """A ConfigError naming the first branch whose data would not be its straight-through
    run's (with its trunk, the epochs of each and the corpus it takes to be exact); notes when
    it cannot be checked here (a ConfigError instead when ``required``: a real launch).
    ``trainer``: the trainer's config (mapping or typed); a plan without branches: nothing."""
    if not any(row.role == "branch" for row in rows):
        return []
    from trainers.registry import trainer_for
    from trainers.settings import trainer_config

    typed = trainer_config(trainer)
    try:
        order = trainer_for(typed).sample_order(typed)
    except Unreadable as err:
        line = (f"planner.strategy=branches: cannot check that each branch reads the data of "
                f"its run trained straight through ({err}); make the corpus readable here, or "
                "plan with planner.strategy=independent")
        if required:
            raise ConfigError(line) from None
        return [line]
    if order is None:
        return []
    unlike = unlike_trunks(rows, order.layout)
    if unlike:
        raise ConfigError(_refusal(*unlike[0], order, rows))
    return []


def _refusal(branch: PlanRow, trunk: PlanRow, order: SampleOrder,
             rows: Sequence[PlanRow]) -> str:
    """The one line that refuses a plan for ``branch``."""
    mine, theirs = order.layout(branch), order.layout(trunk)
    k = next(i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b)
    split = order.splits[k]

    def tokens(row: PlanRow) -> int:
        return (split.samples(row.train_iters * row.global_batch_size, order.surplus)
                * row.arch.seq_length + EXTRA_TOKEN)

    need = max(tokens(row) for row in rows)
    return (f"planner.strategy=branches: branch {branch.run_id} ({branch.member} at "
            f"{branch.budget:.3g} FLOPs, {tokens(branch):,} tokens) reads {mine[k]} of the "
            f"train split of {split.name} ({split.tokens:,} tokens), its trunk "
            f"{trunk.run_id} ({tokens(trunk):,} tokens) {theirs[k]}: megatron-core's "
            "GPTDataset orders a run's samples by its length past one epoch "
            "(gpt_dataset.py:454-542), so the branch's first "
            f"{branch.branch_step} iterations would not be those of its run trained straight "
            f"through; use a corpus whose train split holds {need:,} tokens, smaller budgets, "
            "or planner.strategy=independent")

"""A WSD branch reads its straight-through run's data only where its length and its trunk's need
the same epochs of the corpus (trainers/data_order.py): the arithmetic against megatron-core's
own readers, the conclusion against megatron-core's GPTDataset (as Megatron builds it and as
the embedded trainer does), and the plans flame refuses or accepts for it."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sweep.errors import ConfigError
from tests.jobs.conftest import flame
from tests.trainers.conftest import standin_checkout
from trainers.data_order import (
    Epochs,
    Unreadable,
    blend,
    epochs,
    indexed_lengths,
    mock_lengths,
    split_bounds,
    train_split,
)

SEQ = 32


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """An indexed dataset of 300 documents of 1-199 tokens (about 30k tokens)."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix = str(tmp_path_factory.mktemp("corpus") / "c")
    rng = np.random.default_rng(7)
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for length in rng.integers(1, 200, size=300):
        builder.add_document(rng.integers(1, 1000, size=length).astype(np.uint16), [length])
    builder.finalize(prefix + ".idx")
    return prefix


def test_the_pieces_read_what_megatron_core_reads(corpus, tmp_path):
    from megatron.core.datasets.blended_megatron_dataset_config import (
        convert_split_vector_to_split_matrix,
        parse_and_normalize_split,
    )
    from megatron.core.datasets.gpt_dataset import MockGPTLowLevelDataset
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.utils import get_blend_from_list

    assert np.array_equal(indexed_lengths(corpus), IndexedDataset(corpus).sequence_lengths)
    mock = MockGPTLowLevelDataset(SimpleNamespace(vocab_size=2, eod=0)).sequence_lengths
    assert np.array_equal(mock_lengths(), mock)
    for split in ("90,5,5", "969, 30, 1", "1,1,1", "99,1", "7,2,1"):
        first = convert_split_vector_to_split_matrix(parse_and_normalize_split(split))[0]
        for count in (300, 1001, 100000):
            assert split_bounds(split, count) == (int(round(first[0] * count)),
                                                  int(round(first[1] * count)))
    for words in (["/d/a"], ["1.0", "/d/a"], ["0.3", "/d/a", "0.7", "/d/b"], ["/d/a", "/d/b"]):
        prefixes, weights = get_blend_from_list(words)
        assert blend(words) == (prefixes, weights)
    with pytest.raises(Unreadable, match="missing.idx is not readable here"):
        indexed_lengths(str(tmp_path / "missing"))
    (tmp_path / "junk.idx").write_bytes(b"not an index at all, really not one")
    with pytest.raises(Unreadable, match="not a megatron-core index"):
        indexed_lengths(str(tmp_path / "junk"))


def _samples(corpus: str, count: int, weighted: bool) -> list[np.ndarray]:
    """The first training samples megatron-core builds for a run asking ``count`` samples: a
    weighted ``--data-path 1.0 <prefix>`` as Megatron builds it (surplus 0.005), or the
    embedded trainer's own datasets (trainers/embedded/data.py: the prefix alone)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    from trainers.embedded.data import Corpus, build_datasets
    from trainers.settings import DataConfig

    if not weighted:
        train, _ = build_datasets(Corpus(corpus, 300, 0, "test"),
                                  DataConfig(split="90,10,0", seed=1234), SEQ, count, 8)
        return [train[i]["tokens"].numpy() for i in range(100)]
    config = GPTDatasetConfig(
        random_seed=1234, sequence_length=SEQ, blend=([corpus], [1.0]),
        split="90,10,0", path_to_cache=str(Path(corpus).parent / "cache"),
        tokenizer=SimpleNamespace(vocab_size=1000, eod=0, unique_identifiers={"t": 1}),
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
        create_attention_mask=False, mid_level_dataset_surplus=0.005)
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [count, 8, 0],
                                                lambda: True, config).build()
    return [train[i]["tokens"].numpy() for i in range(100)]


@pytest.mark.parametrize("weighted", [False, True], ids=["embedded", "megatron-weighted"])
def test_same_epochs_read_the_same_samples_and_others_do_not(corpus, weighted, monkeypatch):
    import torch.distributed

    # BlendedDataset asks the rank even in a single process (blended_dataset.py:153)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *args: 0)
    split = train_split(corpus, indexed_lengths(corpus), "90,10,0", 1.0 if weighted else None)
    per_epoch = (split.tokens - 1) // SEQ
    # within one epoch; just past it (the last epoch apart); far into the second (shuffled
    # together); the third epoch
    counts = [120, per_epoch - 10, per_epoch + 20, 2 * per_epoch - 30, 2 * per_epoch + 50]
    layouts = [epochs(split.samples(n, 0.005), split.tokens, SEQ) for n in counts]
    assert layouts == [Epochs(1, False), Epochs(1, False), Epochs(2, True), Epochs(2, False),
                       Epochs(3, True)]
    samples = [_samples(corpus, n, weighted) for n in counts]
    for i in range(len(counts)):
        for j in range(i + 1, len(counts)):
            same = all(np.array_equal(a, b) for a, b in zip(samples[i], samples[j]))
            assert same == (layouts[i] == layouts[j]), (counts[i], counts[j])


MEGATRON_PAST_ONE_EPOCH = (
    "experiment=megatron_smoke", "planner.strategy=branches", "budgets.flops=[1.25e15,2e16]",
    "family.members=[{num_layers:4,hidden_size:256,micro_batch_size:4,budgets:[1.25e15,2e16]}]")


def test_a_branch_whose_epochs_differ_from_its_trunks_is_refused(tmp_path):
    out = flame("plan", *MEGATRON_PAST_ONE_EPOCH, f"sweep_dir={tmp_path / 's'}", check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr
    assert "at 1.25e+15 FLOPs" in lines[0] and "reads 1 epoch of the train split of mock data " \
        "(68,190,290 tokens)" in lines[0]
    assert "2 epochs (the last shuffled apart)" in lines[0]
    assert "planner.strategy=independent" in lines[0] and "108,396,545 tokens" in lines[0]
    assert not (tmp_path / "s").exists()
    # the same plan without the short branch: both need 2 epochs, the last apart: exact
    flame("plan", *MEGATRON_PAST_ONE_EPOCH[:2], "budgets.flops=[2e16]",
          "family.members=[{num_layers:4,hidden_size:256,micro_batch_size:4,budgets:[2e16]}]",
          f"sweep_dir={tmp_path / 'ok'}")
    assert (tmp_path / "ok" / "plan.csv").is_file()


def test_a_weighted_corpus_is_checked_per_dataset_and_at_launch(corpus, tmp_path):
    """A `flame data`-style weighted --data-path: the smoke plan fits in one epoch of a 30k-token
    corpus only with a tiny budget; past it the plan is refused, and a launch on another corpus
    (an operational data_path) is checked again before anything is written."""
    member = "family.members=[{num_layers:2,hidden_size:64,micro_batch_size:4,budgets:[%s]}]"
    base = ("experiment=megatron_smoke", "planner.strategy=branches", "planner.min_iters=2",
            "planner.global_batch_size=4", "family.base.seq_length=32", "trainer.mock_data=false")
    data = f"trainer.data_path=[1.0,{corpus}]"
    ok = tmp_path / "ok"
    flame("plan", *base, "budgets.flops=[2e11,4e11]", member % "2e11,4e11", data,
          f"sweep_dir={ok}")
    refused = flame("plan", *base, "budgets.flops=[2e11,2e12]", member % "2e11,2e12", data,
                    f"sweep_dir={tmp_path / 'no'}", check=False)
    assert refused.returncode == 2 and f"of the train split of {corpus} " in refused.stderr

    other = tmp_path / "tiny"  # a corpus a tenth the size: the same plan is past one epoch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(f"{other}.bin", dtype=np.uint16)
    for _ in range(30):
        builder.add_document(np.arange(1, 100, dtype=np.uint16), [99])
    builder.finalize(f"{other}.idx")
    before = sorted(p.name for p in ok.rglob("*"))
    out = flame("launch", *base, f"sweep_dir={ok}", f"trainer.data_path=[1.0,{other}]",
                f"trainer.megatron_path={standin_checkout(tmp_path / 'megatron')}",
                f"trainer.python={sys.executable}", "cluster=local", check=False)
    assert out.returncode == 2 and f"of the train split of {other} " in out.stderr
    assert sorted(p.name for p in ok.rglob("*")) == before  # nothing written


def test_an_unreadable_corpus_is_a_note_at_plan_and_refused_at_a_real_launch(tmp_path):
    from sweep.config import read_config, read_plan
    from trainers.data_order import check_branches

    sweep = tmp_path / "s"
    out = flame("plan", "experiment=megatron_smoke", "planner.strategy=branches",
                "trainer.mock_data=false", "trainer.data_path=/nowhere/corpus",
                f"sweep_dir={sweep}")
    assert "note: planner.strategy=branches: cannot check" in " ".join(out.stdout.split())
    rows, config = read_plan(sweep), read_config(sweep)
    assert check_branches(rows, config["trainer"], required=False)[0].endswith(
        "or plan with planner.strategy=independent")
    with pytest.raises(ConfigError, match="/nowhere/corpus.idx is not readable here"):
        check_branches(rows, config["trainer"], required=True)


def test_demo_branches_fits_in_one_epoch_and_its_former_h8_branch_did_not(tmp_path):
    """The embedded trainer on the default corpus (8.1M tokens in the train split): h8 at 3e11
    (9.5M tokens) was in demo_branches until this check; its trunk stops in the first epoch."""
    flame("plan", "experiment=demo_branches", f"sweep_dir={tmp_path / 'ok'}")
    out = flame("plan", "experiment=demo_branches", "family.members.1.budgets=[3e10,1e11,3e11]",
                f"sweep_dir={tmp_path / 'no'}", check=False)
    assert out.returncode == 2 and "(L2-h8 at 3e+11 FLOPs, 9,484,289 tokens) reads 2 epochs " \
        "(the last shuffled apart) of the train split of python stdlib" in out.stderr
    assert not (tmp_path / "no").exists()


def test_a_data_flag_in_extra_args_leaves_the_order_unknown():
    from trainers.data_order import megatron_order
    from trainers.settings import MegatronConfig

    for extra in (["--split=1,0,0"], ["--mid-level-dataset-surplus 0.1"]):
        with pytest.raises(Unreadable, match=f"trainer.extra_args sets {extra[0][:7]}"):
            megatron_order(MegatronConfig(mock_data=True, extra_args=extra))
    assert megatron_order(MegatronConfig(mock_data=True, extra_args=["--log-interval 1"]))

"""Where a trunk keeps its checkpoint per branch step, and when a branch may start (the helpers
jobs use; issue 14)."""

import pytest

from trainers.artifacts import branch_checkpoint, branch_ready
from trainers.base import BaseTrainer


def test_paths_per_trainer(tmp_path):
    assert branch_checkpoint(tmp_path, 830, "embedded") == tmp_path / "checkpoints" / \
        "iter_0000830.pt"
    assert branch_checkpoint(tmp_path, 830, "simulated").name == "iter_0000830.json"
    assert branch_checkpoint(tmp_path, 830, "megatron").name == "iter_0000830"
    with pytest.raises(ValueError, match="no such trainer"):
        branch_checkpoint(tmp_path, 1, "other")
    with pytest.raises(ValueError, match="keeps no branch checkpoints"):
        BaseTrainer().branch_checkpoint(tmp_path, 1)  # a trainer without branches


def test_megatron_is_ready_once_its_tracker_has_reached_the_step(tmp_path):
    ckpts = tmp_path / "checkpoints"
    (ckpts / "iter_0000100").mkdir(parents=True)  # a save in progress: no tracker yet
    assert not branch_ready(tmp_path, 100, "megatron")
    (ckpts / "latest_checkpointed_iteration.txt").write_text("50")
    assert not branch_ready(tmp_path, 100, "megatron")
    (ckpts / "latest_checkpointed_iteration.txt").write_text("200\n")
    assert branch_ready(tmp_path, 100, "megatron")
    assert not branch_ready(tmp_path, 150, "megatron")  # no directory at 150
    (ckpts / "latest_checkpointed_iteration.txt").write_text("release")
    assert not branch_ready(tmp_path, 100, "megatron")


def test_embedded_and_simulated_are_ready_once_the_file_exists(tmp_path):
    for trainer in ("embedded", "simulated"):
        path = branch_checkpoint(tmp_path, 7, trainer)
        assert not branch_ready(tmp_path, 7, trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        assert branch_ready(tmp_path, 7, trainer)

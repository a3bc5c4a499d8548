"""What a Megatron sweep asks of a real cluster before it runs: CPUs and memory per node from
the node's shape, SRUN_CPUS_PER_TASK, the time-limit signal's lead for the checkpoint size,
the checkpoint disk, one data cache in the sweep, the tokenizer's hub cache, Megatron's
interpreter required by a real launch, FLAME's decay fraction for branches, and the tokens the
corpus must hold."""

from __future__ import annotations

import dataclasses
import shlex

import pytest

from conf.study import study_config
from jobs.cli import compose
from jobs.resources import ALL_MEMORY, job_resources, signal_lead_s
from jobs.settings import ClusterSettings
from sweep.config import planner_settings
from sweep.errors import ConfigError
from sweep.planrow import PlanRow
from tests.jobs.conftest import flame
from tests.trainers.conftest import make_plan
from trainers.megatron import argv_of, interval
from trainers.megatron_argspec import check_argv
from trainers.settings import MegatronConfig
from trainers.site import BYTES_PER_PARAM, checkpoint_gb, kept, saves

RELEASE = ("experiment=flame_release", "trainer=megatron", "cluster=slurm")


def _cluster(**keys) -> ClusterSettings:
    return ClusterSettings(**{"name": "slurm", "executor": "slurm", **keys})


@pytest.mark.parametrize("keys, cpus, mem", [
    ({"gpus_per_node": 8}, 64, ALL_MEMORY),                        # unknown node: 8 a GPU, all
    ({"gpus_per_node": 8, "node_cpus": 112, "node_mem_gb": 1800}, 112, 1800.0),
    ({"gpus_per_node": 2, "node_gpus": 8, "node_cpus": 112, "node_mem_gb": 1800}, 28, 450.0),
    ({"gpus_per_node": 2, "node_gpus": 8}, 16, None),               # a share, memory unknown
    ({"gpus_per_node": 8, "node_cpus": 112, "cpus_per_task": 96, "mem_gb": 500}, 96, 500.0),
    ({"gpus_per_node": 8, "request_gpus": False}, 1, None),         # the CPU stand-in's jobs
    ({}, 1, None),                                                  # a CPU job: as before
])
def test_cpus_and_memory_per_node_come_from_the_node_shape_unless_set(keys, cpus, mem):
    got = job_resources(_cluster(**keys))
    assert (got.cpus_per_task, got.mem_gb) == (cpus, mem)


def test_the_signal_leaves_twice_the_checkpoint_write_time_plus_slurms_resolution():
    assert signal_lead_s(120, 0.0, 1.0) == 120
    assert signal_lead_s(120, 144.0, 1.0) == 60 + 288
    assert signal_lead_s(120, 144.0, 4.0) == 60 + 72
    assert signal_lead_s(300, 14.0, 1.0) == 300


def test_checkpoint_bytes_and_saves_of_the_release_model(tmp_path):
    rows, cfg = make_plan(tmp_path, "experiment=flame_release", "trainer.data_path=/d")
    row = PlanRow.of(max(rows, key=lambda r: int(r["train_iters"])))
    m = MegatronConfig(data_path="/d")
    every = interval(row.train_iters, m)  # 11029 // 10
    assert saves(row, m) == [*range(every, row.train_iters, every), row.train_iters]
    assert kept(row, m) == 11 and BYTES_PER_PARAM == 14
    assert checkpoint_gb(row) == pytest.approx(row.counts["n_total_exact"] * 14 / 1e9)
    assert kept(row, dataclasses.replace(m, retain_checkpoints="last")) == 2


def test_release_dry_run_on_cluster_slurm_shows_what_each_job_asks_and_needs(tmp_path):
    sweep = tmp_path / "sweep"
    flame("plan", *RELEASE, f"sweep_dir={sweep}")
    out = flame("launch", "--dry-run", *RELEASE, "trainer.data_path=/data/dclm",
                f"sweep_dir={sweep}")
    text = out.stderr
    assert ("job resources per node (4 nodes, 8 GPUs each): 64 CPUs (--cpus-per-task, "
            "SRUN_CPUS_PER_TASK; cluster.cpus_per_gpu=8 x 8 GPUs") in text
    assert "memory all of the node's (--mem=0)" in text
    assert f"data cache (--data-cache-path, shared by the sweep's runs): {sweep.resolve()}" \
           "/cache/megatron_data" in text
    assert "checkpoint disk (14 bytes a parameter; trainer.retain_checkpoints=all" in text
    assert "144.0 GB a checkpoint of the largest model" in text and "the 7 runs" in text
    assert "time-limit signal: USR2 348 s before the limit" in text
    assert "trainer.python is not set" in text
    sbatch = (sweep / "jobs" / "dry-run" / "array-0.sbatch").read_text()
    assert "#SBATCH --cpus-per-task=64" in sbatch and "#SBATCH --mem=0" in sbatch
    assert "export SRUN_CPUS_PER_TASK=64" in sbatch
    for script in sweep.glob("runs/*/launch.sh"):
        body = script.read_text()
        words = shlex.split(body[body.index("ARGS=(\n") + 7:body.index("\n)\n")], comments=True)
        assert check_argv(words) == []
        assert words[words.index("--data-cache-path") + 1] == \
            str(sweep.resolve() / "cache" / "megatron_data")
        assert words[words.index("--rerun-mode") + 1] == "disabled"
        assert f"export HF_HUB_CACHE={sweep.resolve()}/cache/huggingface" in body
        assert 'models--EleutherAI--pythia-12b" ]]; then export HF_HUB_OFFLINE=1' in body


def test_a_real_launch_without_trainer_python_exits_2_in_one_line_writing_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    flame("plan", *RELEASE, f"sweep_dir={sweep}")
    before = sorted(p.name for p in sweep.rglob("*"))
    out = flame("launch", *RELEASE, "trainer.data_path=/data/dclm", f"sweep_dir={sweep}",
                check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "flame launch: error: trainer.python: not set; give the interpreter of Megatron-LM's "
        "environment, e.g. trainer.python=/opt/megatron-env/bin/python (flame's own python has "
        "no CUDA torch or TransformerEngine)"]
    assert sorted(p.name for p in sweep.rglob("*")) == before


def test_retain_last_renders_a_retain_interval_megatron_accepts(tmp_path):
    rows, cfg = make_plan(tmp_path, "experiment=flame_release", "trainer.data_path=/d",
                        "trainer.retain_checkpoints=last")
    argv = argv_of(rows[0], cfg, tmp_path / "runs" / rows[0]["run_id"])
    retain = int(argv[argv.index("--save-retain-interval") + 1])
    save = int(argv[argv.index("--save-interval") + 1])
    assert check_argv(argv) == [] and retain % save == 0 and retain > int(rows[0]["train_iters"])
    with pytest.raises(ConfigError, match="trainer.retain_checkpoints='some': use all or last"):
        MegatronConfig(data_path="/d", retain_checkpoints="some").validate()


@pytest.mark.parametrize("overrides, cooldown", [
    (("experiment=flame_sweep",), 0.1),                       # FLAME-MoE's TRAIN_ITERS / 10
    (("experiment=flame_sweep", "planner.cooldown_fraction=0.3"), 0.3),
    (("experiment=demo_branches",), 0.2),                     # the demo's decay_fraction
])
def test_branches_decay_over_the_recipes_fraction_unless_set(overrides, cooldown, tmp_path):
    cfg = compose([f"sweep_dir={tmp_path}", "planner.strategy=branches", *overrides])
    assert planner_settings(study_config(cfg)).cooldown_fraction == cooldown


def test_plan_prints_the_tokens_the_corpus_must_hold(tmp_path):
    out = flame("plan", "experiment=flame_sweep", f"sweep_dir={tmp_path / 's'}").stdout
    line = " ".join(out.split())
    assert "reads 149.5B tokens; with the split 90,5,5 (train 90% of the documents) the " \
           "corpus must hold at least 166.1B tokens" in line


def test_node_shape_keys_are_checked():
    with pytest.raises(ConfigError, match="cluster.node_cpus=0: must be >= 1 or null"):
        _cluster(node_cpus=0)
    with pytest.raises(ConfigError, match="cluster.mem_gb=-1: must be >= 0 or null"):
        _cluster(mem_gb=-1)


def _fake_python(path, body: str):
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_the_tokenizer_is_prefetched_with_megatrons_python_and_jobs_go_offline(tmp_path):
    """`python -c <prefetch> <model> <cache>`: a stand-in interpreter that fills the hub
    cache as snapshot_download does; then launch.sh's lines export HF_HUB_OFFLINE=1."""
    import subprocess

    from trainers.megatron import tokenizer_lines
    from trainers.site import prefetch_tokenizer

    sweep = tmp_path / "sweep"
    fills = _fake_python(tmp_path / "python", 'mkdir -p "$4/models--$(echo $3 | sed s,/,--,)"')
    m = MegatronConfig(data_path="/d", python=fills)
    cache = sweep / "cache" / "huggingface"
    assert "a launch pre-fetches it into" in prefetch_tokenizer(m, sweep, fetch=False)
    assert not cache.exists()  # a dry run fetches nothing
    assert prefetch_tokenizer(m, sweep, fetch=True) == (
        f"tokenizer EleutherAI/pythia-12b: pre-fetched into {cache} (HF_HUB_OFFLINE=1 in jobs)")
    assert (cache / "models--EleutherAI--pythia-12b").is_dir()
    script = "\n".join(tokenizer_lines(m, sweep / "runs" / "abc")) + '\necho "$HF_HUB_OFFLINE"'
    assert subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout == "1\n"
    broken = _fake_python(tmp_path / "broken", 'echo "No module named huggingface_hub" >&2; exit 1')
    note = prefetch_tokenizer(MegatronConfig(data_path="/d", python=broken), tmp_path / "s2",
                              fetch=True)
    assert "could not pre-fetch it" in note and "No module named huggingface_hub" in note
    local = MegatronConfig(data_path="/d", python=broken, tokenizer_model=str(tmp_path))
    assert prefetch_tokenizer(local, tmp_path / "s3", fetch=True) is None  # a local directory

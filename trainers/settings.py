"""The ``training`` and ``trainer`` config groups as dataclasses (the schemas of
``conf/training/*.yaml`` and ``conf/trainer/*.yaml``).

Each field is ``result()`` (changes what a run computes: hashed into run_id) or
``operational()`` (paths, logging, layout: never hashed). Light on purpose: no torch, so the
CLI and the planner import it for free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sweep.errors import ConfigError
from sweep.law import Law
from sweep.schema import operational, result, to_typed
from trainers.registry import BUILTIN_CONFIGS, trainer_for

DECAY_STYLES = ("linear", "cosine", "exponential", "minus_sqrt")


@dataclass
class Recipe:
    """The ``training`` group: optimiser, schedule and regularisers (every field hashed)."""

    lr: float = result()
    """Peak learning rate."""
    min_lr: float = result()
    """Learning rate at the end of the WSD decay."""
    warmup_fraction: float = result()
    """Fraction of iterations of linear warmup."""
    decay_fraction: float = result()
    """Fraction of iterations (at the end) of WSD decay."""
    decay_style: str = result()
    """WSD decay shape: linear | cosine | exponential | minus_sqrt."""
    weight_decay: float = result()
    """AdamW decoupled weight decay."""
    adam_beta1: float = result()
    """Adam beta1."""
    adam_beta2: float = result()
    """Adam beta2."""
    clip_grad: float = result()
    """Global gradient-norm clipping threshold."""
    init_std: float = result()
    """Standard deviation of the normal initialisation."""
    aux_loss_coeff: float = result()
    """Load-balancing loss coefficient (Megatron's --moe-aux-loss-coeff; >= 0, 0 = none)."""
    z_loss_coeff: float = result()
    """Router z-loss coefficient (Megatron's --moe-z-loss-coeff; >= 0: 0 trains without it,
    and Megatron then logs the z-loss as NaN, 0/0, which flame reads as not logged)."""
    seed: int = result()
    """Seeds the initialisation (and Megatron's --seed)."""
    decay_iters_rounding: str = result("round", since=2)
    """decay_fraction x train_iters to whole iterations: round (nearest) or floor (FLAME-MoE's
    TRAIN_ITERS / 10 in shell integer arithmetic)."""
    hidden_dropout: float = result(0.0, since=2)
    """Dropout after attention and MLP (Megatron's --hidden-dropout)."""
    attention_dropout: float = result(0.0, since=2)
    """Dropout on attention probabilities (Megatron's --attention-dropout)."""
    norm_epsilon: float = result(1e-5, since=2)
    """RMSNorm epsilon (Megatron's --norm-epsilon)."""
    moe_router_dtype: str | None = result(None, since=2)
    """Router computation dtype (Megatron's --moe-router-dtype: fp32 | fp64; null = the
    model's dtype)."""

    def __post_init__(self) -> None:
        if self.decay_style not in DECAY_STYLES:
            raise ConfigError(f"training.decay_style={self.decay_style!r}: use one of "
                              f"{', '.join(DECAY_STYLES)}")
        if self.decay_iters_rounding not in ("round", "floor"):
            raise ConfigError(f"training.decay_iters_rounding={self.decay_iters_rounding!r}: "
                              "use round or floor")
        if self.moe_router_dtype not in (None, "fp32", "fp64"):
            raise ConfigError(f"training.moe_router_dtype={self.moe_router_dtype!r}: use fp32, "
                              "fp64 or null")
        # What the schedule (trainers.schedule.WSD) refuses in every run, refused at plan time
        if not self.lr > 0:
            raise ConfigError(f"training.lr={self.lr}: must be > 0 (the peak learning rate)")
        if not 0.0 <= self.min_lr <= self.lr:
            raise ConfigError(f"training.min_lr={self.min_lr}: must be within [0, "
                              f"training.lr={self.lr}]")
        for name in ("warmup_fraction", "decay_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"training.{name}={getattr(self, name)}: must be within [0, 1]")
        if self.warmup_fraction + self.decay_fraction > 1.0:
            raise ConfigError("training.warmup_fraction + training.decay_fraction > 1: "
                              "lower one of them")
        for name in ("aux_loss_coeff", "z_loss_coeff"):  # a negative one rewards imbalance
            if getattr(self, name) < 0:
                raise ConfigError(f"training.{name}={getattr(self, name)}: must be >= 0 (0 "
                                  "turns the loss off)")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"training.{name}={getattr(self, name)}: must be in [0, 1)")

    def decay_iters(self, train_iters: int) -> int:
        """Iterations of the WSD decay phase (Megatron's --lr-wsd-decay-iters)."""
        exact = self.decay_fraction * train_iters
        return int(exact) if self.decay_iters_rounding == "floor" else int(round(exact))

    @classmethod
    def from_cfg(cls, training: Mapping[str, Any]) -> Recipe:
        """From the ``training`` mapping of a (stored) config."""
        return training if isinstance(training, Recipe) else to_typed(cls, training, "training")


@dataclass
class DataConfig:
    """``trainer.data`` of the embedded trainer: the corpus and its split."""

    paths: list[str] | None = result(None)
    """Text/jsonl files or globs; null = the Python standard library's sources."""
    split: str = result("90,10,0")
    """Megatron --split weights train,valid,test over documents."""
    seed: int = result(1234)
    """Seeds the document order and GPTDataset's sample shuffling."""

    def __post_init__(self) -> None:
        if isinstance(self.paths, str):
            self.paths = [self.paths]
        try:
            weights = [float(w) for w in self.split.split(",")]
        except ValueError:
            weights = []
        if len(weights) != 3 or weights[0] <= 0 or weights[1] <= 0 or min(weights) < 0:
            raise ConfigError(f"trainer.data.split={self.split!r}: give train,valid,test weights "
                              "with train and valid > 0, e.g. 90,10,0")


@dataclass
class EmbeddedConfig:
    """``trainer=embedded``: the CPU trainer in plain PyTorch."""

    name: str = result("embedded")
    """The trainer (selects the code that runs a job)."""
    data: DataConfig = result(factory=DataConfig)
    """The corpus and its split."""
    eval_iters: int = result(16)
    """Validation batches per evaluation (a fixed set: the first of the valid split)."""
    eval_batch_size: int | None = result(64)
    """Sequences per validation batch; null = the run's global batch size."""
    progress_eval_iters: int | None = operational(4)
    """Validation batches of the evaluations before the last (the loss curve's progress
    points; the first batches of the same set); the last evaluation, the run's result, always
    uses all eval_iters. null = eval_iters."""
    cache_dir: str | None = operational(None)
    """Tokenised corpora and sample indices; null = ~/.cache/flame/data."""
    eval_interval: int | None = operational(None)
    """Evaluate every this many iterations (and at the end); null = 4 evaluations per run."""
    log_interval: int | None = operational(None)
    """Log training every this many iterations; null = 20 lines per run."""
    checkpoint_interval: int | None = operational(None)
    """Checkpoint every this many iterations (always on a signal and at the end); null = at
    every evaluation."""
    echo: bool = operational(False)
    """Also print train.log lines to the job's stdout."""
    numerics_version: int = result(1, since=2)
    """The version of the trainer's numbers the run was planned with (its ``Trainer.
    numerics_version``; docs/numerics.md). Hashed only when not 1, so the ids planned before
    it existed stay; a deliberate change of the trainer's losses sets the new version in
    conf/trainer/<name>.yaml (never here), which gives every run a new run_id."""

    def __post_init__(self) -> None:
        for key in ("eval_iters", "eval_batch_size", "eval_interval", "log_interval",
                    "checkpoint_interval", "progress_eval_iters"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"trainer.{key}={value}: must be >= 1 (or null for the default)")


@dataclass
class SimulatedConfig:
    """``trainer=simulated``: losses drawn from a law plus noise, no model."""

    law: Law = result()
    """The law losses are drawn from; N = active parameters under ``accounting``."""
    name: str = result("simulated")
    """The trainer (selects the code that runs a job)."""
    noise: float = result(0.0)
    """Standard deviation of the log-normal noise on validation losses (train: 2x)."""
    seed: int = result(1234)
    """Seeds the noise (with the run_id and iteration)."""
    seconds_per_run: float = operational(0.0)
    """Wall time of a whole run (spread over its log steps); 0 = milliseconds."""
    log_points: int = operational(20)
    """Training lines per run."""
    eval_points: int = operational(5)
    """Evaluations per run, the final one included."""
    numerics_version: int = result(1, since=2)
    """The version of the trainer's numbers the run was planned with (its ``Trainer.
    numerics_version``; docs/numerics.md). Hashed only when not 1, so the ids planned before
    it existed stay; a deliberate change of the trainer's losses sets the new version in
    conf/trainer/<name>.yaml (never here), which gives every run a new run_id."""

    def __post_init__(self) -> None:
        if self.noise < 0 or self.seconds_per_run < 0:
            raise ConfigError("trainer.noise and trainer.seconds_per_run must be >= 0")
        if self.log_points < 1 or self.eval_points < 1:
            raise ConfigError("trainer.log_points and trainer.eval_points must be >= 1")


@dataclass
class MegatronConfig:
    """``trainer=megatron``: Megatron-LM's ``pretrain_gpt.py`` on GPU nodes."""

    name: str = result("megatron")
    """The trainer (selects the code that runs a job)."""
    data_path: Any = operational(None)
    """--data-path: where this site keeps the tokenised corpus, as indexed-dataset prefixes,
    optionally weighted: one string of words ("1.0 /data/a 1.0 /data/b") or a list (null =
    none: give it, or mock_data). Operational: the corpus itself is the recipe's (tokenizer_*
    and split are hashed); only its location differs between sites."""
    data_fingerprint: str | None = result(None, since=2)
    """The tokenised corpus's fingerprint, set from the `flame data` manifest that data_path
    names (null: data_path names prefixes, unfingerprinted). Hashed into run_id: two corpora
    never share a run id; the same corpus moved keeps them (trainers/corpus_manifest.py)."""
    mock_data: bool = result(False)
    """--mock-data for smoke tests (no corpus needed)."""
    split: str = result("90,5,5")
    """--split train,valid,test weights (FLAME-MoE: flame-moe_step2.sh:17)."""
    tokenizer_type: str = result("HuggingFaceTokenizer")
    """--tokenizer-type."""
    tokenizer_model: str | None = result("EleutherAI/pythia-12b")
    """--tokenizer-model (GPT-NeoX BPE: Megatron pads its 50277 ids to 50304)."""
    eval_iters: int = result(100)
    """--eval-iters (validation batches per evaluation; FLAME-MoE relied on the default 100)."""
    extra_args: list[str] = result(factory=list)
    """More pretrain_gpt.py flags, appended last (each word shell-quoted)."""
    megatron_path: str = operational("${oc.env:MEGATRON_LM,/opt/Megatron-LM}")
    """The Megatron-LM checkout holding pretrain_gpt.py."""
    python: str | None = operational(None)
    """The interpreter of Megatron-LM's own environment (torch, TransformerEngine, ...), e.g.
    /opt/megatron-env/bin/python; flame stays in its own. Required by a real launch (a bare
    ``python`` would be flame's own, CPU-only, first on the job's PATH)."""
    evaluations_per_run: int = operational(10)
    """--eval-interval and --save-interval = train_iters // this (FLAME-MoE: about 10 for the
    released models, 1 for the sweep)."""
    eval_interval: int | None = operational(None)
    """--eval-interval and --save-interval as a number of iterations (null: from
    evaluations_per_run)."""
    log_interval: int = operational(5)
    """--log-interval (FLAME-MoE: 5)."""
    nodes: int = operational(1)
    """Nodes per run (one torchrun launcher per node)."""
    gpus_per_node: int = operational(8)
    """GPUs (ranks) per node: torchrun's --nproc_per_node, and the job's GPUs per node."""
    master_port: int = operational(29500)
    """Rendezvous port base on the first node (+ SLURM_JOB_ID % 1000 under SLURM)."""
    expert_model_parallel_size: int = operational(8)
    """--expert-model-parallel-size (FLAME-MoE: 8)."""
    micro_batch_size: int = operational(4)
    """--micro-batch-size when the family member gives none."""
    moe_grouped_gemm: bool = operational(False)
    """--moe-grouped-gemm (FLAME-MoE: off; same math, faster experts kernel)."""
    moe_per_layer_logging: bool = operational(False)
    """--moe-per-layer-logging: Megatron also writes each MoE layer's router losses to
    TensorBoard (routing.csv per layer; FLAME-MoE: off). Logging only: never in the run_id."""
    use_distributed_optimizer: bool = operational(True)
    """--use-distributed-optimizer."""
    overlap_grad_reduce: bool = operational(True)
    """--overlap-grad-reduce (FLAME-MoE: on)."""
    overlap_param_gather: bool = operational(True)
    """--overlap-param-gather (FLAME-MoE: on)."""
    distributed_timeout_minutes: int = operational(30)
    """--distributed-timeout-minutes (FLAME-MoE: 30)."""
    data_cache_path: str | None = operational(None)
    """--data-cache-path (Megatron's sample-index cache; null = <sweep_dir>/cache/megatron_data,
    one cache the sweep's runs share: without it Megatron writes into the corpus's directory,
    which fails on a read-only corpus)."""
    tokenizer_cache: str | None = operational(None)
    """The Hugging Face hub cache (HF_HUB_CACHE) the job reads tokenizer_model from; a launch
    pre-fetches the tokenizer into it with trainer.python, and the job runs with
    HF_HUB_OFFLINE=1 once it holds it (compute nodes are often offline). null =
    <sweep_dir>/cache/huggingface. A tokenizer_model that is a local directory needs none."""
    retain_checkpoints: str = operational("all")
    """all: keep every checkpoint Megatron saves (its default); last: keep only the newest
    (--save-retain-interval beyond the run's end: each save deletes the one before,
    core_v0.16.1 checkpointing.py:751-760). A trunk keeps all: its branches load them."""
    max_trunk_checkpoints: int = operational(20)
    """A trunk (planner.strategy=branches) saves at every multiple of the greatest common
    divisor of its branch steps (Megatron has one --save-interval, and keeps every checkpoint)
    when that is at most this many checkpoints; beyond it, its launches stop at each branch
    step instead (--exit-interval, one restart per step; trainers/megatron.py trunk_stops)."""
    numerics_version: int = result(1, since=2)
    """The version of the trainer's numbers the run was planned with (its ``Trainer.
    numerics_version``; docs/numerics.md). Hashed only when not 1, so the ids planned before
    it existed stay; a deliberate change of the trainer's losses sets the new version in
    conf/trainer/<name>.yaml (never here), which gives every run a new run_id."""

    def __post_init__(self) -> None:
        if isinstance(self.data_path, str):
            self.data_path = self.data_path.split()
        elif self.data_path is not None:
            self.data_path = [str(w) for w in self.data_path]
        self._resolve_manifest()

    def _resolve_manifest(self) -> None:
        """data_path naming a `flame data` manifest: its weighted shard list and fingerprint."""
        from trainers.corpus_manifest import resolve

        found = resolve(self.data_path)
        if found is None:
            return
        words, fingerprint = found
        if self.data_fingerprint not in (None, fingerprint):
            raise ConfigError(f"trainer.data_path={self.data_path[0]}: a corpus with fingerprint "
                              f"{fingerprint[:19]}, not the {self.data_fingerprint[:19]} these "
                              "runs were planned on; re-plan (new run ids) or give that corpus")
        self.data_path, self.data_fingerprint = words, fingerprint

    def validate(self) -> None:
        """What a launch needs (checked before anything is submitted)."""
        if not self.megatron_path:
            raise ConfigError("trainer.megatron_path: not set; give the Megatron-LM checkout, "
                              "e.g. trainer.megatron_path=/opt/Megatron-LM")
        if not self.data_path and not self.mock_data:
            raise ConfigError("trainer.data_path: not set; give the tokenised dataset prefix "
                              "(trainer.data_path=/data/dclm_text_document, or export "
                              "FLAME_DATA_PATH) or trainer.mock_data=true for a smoke test")
        if not self.mock_data and not self.tokenizer_type:
            raise ConfigError("trainer.tokenizer_type: not set (e.g. HuggingFaceTokenizer)")
        for key in ("nodes", "gpus_per_node", "expert_model_parallel_size", "micro_batch_size",
                    "evaluations_per_run", "log_interval", "distributed_timeout_minutes",
                    "max_trunk_checkpoints"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"trainer.{key}={getattr(self, key)}: must be >= 1")
        if self.retain_checkpoints not in ("all", "last"):
            raise ConfigError(f"trainer.retain_checkpoints={self.retain_checkpoints!r}: use all "
                              "or last")
        if self.eval_interval is not None and self.eval_interval < 1:
            raise ConfigError(f"trainer.eval_interval={self.eval_interval}: must be >= 1 or "
                              "null (train_iters // trainer.evaluations_per_run)")
        world = self.nodes * self.gpus_per_node
        if world % self.expert_model_parallel_size:
            raise ConfigError(f"trainer.expert_model_parallel_size="
                              f"{self.expert_model_parallel_size} does not divide the "
                              f"{world} GPUs (nodes x gpus_per_node); change one of them")

    def check_checkout(self, required: bool) -> str | None:
        """The Megatron-LM checkout must hold pretrain_gpt.py. A path that does not exist on
        this machine is an error when ``required`` (a real launch), a note otherwise (a dry run
        may be read far from the cluster's file system)."""
        from pathlib import Path

        root = Path(self.megatron_path).expanduser()
        if root.is_dir() and not (root / "pretrain_gpt.py").is_file():
            raise ConfigError(f"trainer.megatron_path={self.megatron_path}: no pretrain_gpt.py "
                              "there; point it (or MEGATRON_LM) at a Megatron-LM core_v0.16.1 "
                              "checkout")
        if not root.exists():
            if required:
                raise ConfigError(f"trainer.megatron_path={self.megatron_path}: does not exist; "
                                  "set trainer.megatron_path (or export MEGATRON_LM) to the "
                                  "Megatron-LM core_v0.16.1 checkout")
            return f"trainer.megatron_path={self.megatron_path} does not exist here (not checked)"
        return None


TRAINER_CONFIGS = BUILTIN_CONFIGS
"""The built-in trainers' config dataclasses by name (the registry's; conf.schema registers
them as the ``schema/trainer`` group's options)."""


def trainer_config(trainer: Mapping[str, Any] | Any) -> Any:
    """The ``trainer`` mapping of a (stored) config as its trainer's dataclass (a built-in's or
    a plugin's, ``trainers.registry``); a typed config is returned as it is."""
    if dataclasses.is_dataclass(trainer) and not isinstance(trainer, type):
        return trainer
    cls = trainer_for(trainer).config
    values = {k: v for k, v in dict(trainer).items() if k != "operational_keys"}  # format 1
    return to_typed(cls, values, "trainer")


__all__ = ["Recipe", "DataConfig", "EmbeddedConfig", "SimulatedConfig", "MegatronConfig",
           "TRAINER_CONFIGS", "trainer_config"]

"""The embedded trainer's loop: AdamW + WSD on megatron-core GPTDataset batches, with
evaluation, Megatron-format logs, atomic checkpoints and exact resume."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sweep.errors import ConfigError
from sweep.io import CHECKPOINTS_DIR
from sweep.planrow import PlanRow
from trainers.artifacts import RunLog
from trainers.embedded import branch, checkpoint
from trainers.embedded.data import VOCAB, build_datasets, prepare_corpus
from trainers.embedded.model import MoEDecoder
from trainers.schedule import WSD
from trainers.settings import EmbeddedConfig, Recipe, trainer_config
from trainers.signals import DeferredSignals
from trainers.threads import configure_torch_threads


def check_recipe(recipe: Recipe) -> None:
    """Refuse recipe settings this trainer does not implement (never ignore them silently)."""
    if recipe.hidden_dropout or recipe.attention_dropout:
        raise ConfigError("training.hidden_dropout / training.attention_dropout: the embedded "
                          "trainer has no dropout; set both to 0 (or use trainer=megatron)")
    if recipe.moe_router_dtype == "fp64":
        raise ConfigError("training.moe_router_dtype=fp64: the embedded trainer routes in fp32; "
                          "set training.moe_router_dtype=fp32 or null")


def interval(value: int | None, iters: int, points: int) -> int:
    return value if value else max(1, -(-iters // points))


def train(row: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: Path,
          signals: DeferredSignals) -> dict[str, Any]:
    """Train (or resume) one run into ``run_dir``; a deferred signal saves and hands over."""
    spec, recipe = PlanRow.of(row), Recipe.from_cfg(cfg["training"])
    ecfg = trainer_config(cfg["trainer"])
    check_recipe(recipe)
    if spec.arch.vocab_size != VOCAB:
        raise ConfigError(f"family vocab_size={spec.arch.vocab_size}: the embedded trainer's "
                          f"byte-level data has {VOCAB} tokens; set family.base.vocab_size={VOCAB}")
    threads = configure_torch_threads()
    loop = _Loop(spec, recipe, ecfg, Path(run_dir))
    return loop.run(signals, threads)


class _Loop:
    """One run's state: model, optimiser, data, log; ``run`` trains to the end."""

    def __init__(self, spec: PlanRow, recipe: Recipe, ecfg: EmbeddedConfig, run_dir: Path):
        began = time.perf_counter()
        self.spec, self.recipe, self.ecfg = spec, recipe, ecfg
        self.log = RunLog(run_dir, echo=ecfg.echo)
        self.ckpt_dir = run_dir / CHECKPOINTS_DIR
        iters = spec.train_iters
        self.log_every = interval(ecfg.log_interval, iters, 20)
        self.eval_every = interval(ecfg.eval_interval, iters, 4)
        self.ckpt_every = ecfg.checkpoint_interval or self.eval_every
        self.schedule = WSD.for_row(recipe, spec)
        torch.manual_seed(spec.seed(recipe.seed))  # replicate r: seed + r
        self.model = MoEDecoder(spec.arch, recipe.init_std, recipe.norm_epsilon)
        decay = [p for p in self.model.parameters() if p.dim() > 1]
        no_decay = [p for p in self.model.parameters() if p.dim() <= 1]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": recipe.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=recipe.lr, betas=(recipe.adam_beta1, recipe.adam_beta2), eps=1e-8,
            foreach=True)  # one multi-tensor op per update: the same numbers, fewer ops
        self.eval_bs = ecfg.eval_batch_size or spec.global_batch_size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # megatron-core's notes about unset tokenizer fields
            corpus = prepare_corpus(ecfg.data, ecfg.cache_dir)
            self.train_ds, self.valid_ds = build_datasets(
                corpus, ecfg.data, spec.arch.seq_length, iters * spec.global_batch_size,
                ecfg.eval_iters * self.eval_bs)
        self.corpus = corpus
        self.step = 0
        self.acc = {"lm": 0.0, "aux": 0.0, "z": 0.0, "gn": 0.0, "n": 0}
        self.val: float | None = None
        self.routing: list[dict] | None = None  # the last routing record's layers
        # Where this process's time went (summary.json ``seconds``; benchmarks/bench_demo.py).
        self.seconds = {"setup": time.perf_counter() - began, "restore": 0.0, "steps": 0.0,
                        "eval": 0.0, "checkpoint": 0.0}

    @contextmanager
    def timed(self, part: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - began

    # -- data ------------------------------------------------------------------------------
    def _batch(self, dataset: Any, start: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        samples = [dataset[i] for i in range(start, start + size)]
        return (torch.stack([s["tokens"] for s in samples]),
                torch.stack([s["labels"] for s in samples]))

    # -- one step --------------------------------------------------------------------------
    def _train_step(self) -> None:
        gbs = self.spec.global_batch_size
        tokens, labels = self._batch(self.train_ds, self.step * gbs, gbs)
        self.step += 1
        lr = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        logits, router = self.model(tokens)
        lm = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))
        loss = lm + self.recipe.aux_loss_coeff * router.aux + self.recipe.z_loss_coeff * router.z
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.clip_grad,
                                                   foreach=True)
        self.optimizer.step()
        moe_layers = max(1, self.spec.arch.num_moe_layers)
        for key, value in (("lm", lm), ("aux", router.aux / moe_layers),
                           ("z", router.z / moe_layers), ("gn", grad_norm)):
            self.acc[key] += float(value.detach())
        self.acc["n"] += 1

    @torch.no_grad()
    def evaluate(self, final: bool = True) -> float:
        """Mean validation loss over the set's first batches: all ``eval_iters`` for the final
        evaluation (the run's result), ``progress_eval_iters`` for the ones before it."""
        batches = self.ecfg.eval_iters
        if not final and self.ecfg.progress_eval_iters:
            batches = min(batches, self.ecfg.progress_eval_iters)
        self.model.eval()
        total = 0.0
        for i in range(batches):
            tokens, labels = self._batch(self.valid_ds, i * self.eval_bs, self.eval_bs)
            logits, _ = self.model(tokens)
            total += float(F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1)))
        self.model.train()
        return total / batches

    # -- logging ---------------------------------------------------------------------------
    def _log_train(self, seconds: float) -> None:
        n, spec = self.acc["n"], self.spec
        tokens = n * spec.global_batch_size * spec.arch.seq_length
        self.log.train(iteration=self.step, train_iters=spec.train_iters,
                       global_batch_size=spec.global_batch_size, seq_length=spec.arch.seq_length,
                       lr=self.schedule(self.step), train_loss=self.acc["lm"] / n,
                       aux_loss=self.acc["aux"] / n, z_loss=self.acc["z"] / n,
                       grad_norm=self.acc["gn"] / n, tokens_per_s=tokens / max(seconds, 1e-9),
                       elapsed_ms=1000.0 * seconds / n)
        self.acc = dict.fromkeys(self.acc, 0.0) | {"n": 0}

    def _log_routing(self) -> None:
        """Per-MoE-layer routing over the training steps since the last evaluation (one host
        sync per evaluation; metrics.jsonl only: Megatron's train.log has no such line)."""
        layers = []
        for index, tally in self.model.tallies().items():
            window = tally.window()
            if window is not None:
                layers.append({"layer": index, **window})
            tally.reset()
        if layers:
            self.routing = layers
            self.log.routing(iteration=self.step, layers=layers)

    # -- checkpoints -----------------------------------------------------------------------
    def save(self) -> None:
        state = {
            "iteration": self.step, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "rng": checkpoint.rng_states(),
            "consumed_samples": self.step * self.spec.global_batch_size,
            "log_accumulators": dict(self.acc), "val_loss": self.val,
            "routing_windows": {i: t.state() for i, t in self.model.tallies().items()},
            "routing_last": self.routing,
            "offsets": self.log.offsets(), "run_id": self.spec.run_id}
        branch.keep(self.ckpt_dir, self.spec, state)  # a trunk's branch step (branch.py)
        checkpoint.save(self.ckpt_dir, state)

    def restore(self) -> int | None:
        state = checkpoint.load(self.ckpt_dir)
        fresh_branch = state is None and self.spec.role == "branch"
        if fresh_branch:  # a branch's first start: its trunk's state (branch.py)
            state = branch.trunk_state(self.spec, self.ckpt_dir)
        if state is None:
            return None
        if state.get("run_id") != self.spec.run_id:
            raise RuntimeError(f"{self.ckpt_dir}: checkpoint of run {state.get('run_id')}, not "
                               f"{self.spec.run_id}; remove it to start this run afresh")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        checkpoint.set_rng_states(state["rng"])
        self.step, self.acc, self.val = state["iteration"], state["log_accumulators"], state[
            "val_loss"]
        for index, tally in self.model.tallies().items():  # absent from older checkpoints
            if index in state.get("routing_windows", {}):
                tally.load(state["routing_windows"][index])
        self.routing = state.get("routing_last")
        self.log.rewind(state["offsets"])
        self.log.note(state.get("note") or f" resuming from checkpoint at iteration {self.step}")
        return None if fresh_branch else self.step

    # -- the loop --------------------------------------------------------------------------
    def run(self, signals: DeferredSignals, threads: int) -> dict:
        with self.timed("restore"):
            resumed_from = self.restore()
        iters, began = self.spec.train_iters, time.perf_counter()
        first, window = self.step, time.perf_counter()
        while self.step < iters:
            with self.timed("steps"):
                self._train_step()
            if self.step % self.log_every == 0 or self.step == iters:
                now = time.perf_counter()
                self._log_train(now - window)
                window = now
            if self.step % self.eval_every == 0 or self.step == iters:
                with self.timed("eval"):
                    self.val = self.evaluate(final=self.step == iters)
                    self.log.eval(iteration=self.step, final=self.step == iters,
                                  val_loss=self.val, consumed_tokens=self.step
                                  * self.spec.global_batch_size * self.spec.arch.seq_length)
                    self._log_routing()
            if (self.step % self.ckpt_every == 0 or self.step == iters
                    or self.step in self.spec.save_steps):
                with self.timed("checkpoint"):
                    self.save()
            if signals.pending is not None and self.step < iters:
                self.save()
                signals.deliver(self.step)
        seconds = time.perf_counter() - began
        trained = (self.step - first) * self.spec.global_batch_size * self.spec.arch.seq_length
        return {"trainer": "embedded", "final_val_loss": self.val if self.step == iters else None,
                "iterations": self.step, "tokens": self.spec.tokens, "resumed_from": resumed_from,
                "wall_s": seconds, "tokens_per_s": trained / seconds if seconds else 0.0,
                "threads": threads, "corpus_tokens": self.corpus.tokens,
                "params": sum(p.numel() for p in self.model.parameters()),
                "routing": self.routing,
                "seconds": {part: round(value, 4) for part, value in self.seconds.items()}}

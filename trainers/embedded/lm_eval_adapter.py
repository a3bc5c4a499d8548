"""The embedded trainer's model as an lm-evaluation-harness model (``--model flame_embedded``).

lm-eval asks a model three things (``lm_eval.api.model.LM``): the log-likelihood of a
continuation given a context (multiple-choice tasks), the rolling log-likelihood of a whole text
(perplexity tasks) and greedy generation until a stop string. The embedded models are
byte-level (token = UTF-8 byte, 0 = end of document, ``trainers.embedded.data``), so text is
tokenised by ``str.encode``; a context longer than the model's window keeps its last bytes, as
lm-eval's own HF backend keeps the last ``max_length`` tokens.

The model is built from a run of a sweep: its plan row (architecture), the sweep's recipe
(initialisation and norm epsilon) and a checkpoint the trainer wrote (``latest.pt`` or a kept
``iter_<step>.pt``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lm_eval
import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from sweep.config import read_config, read_plan
from sweep.errors import ConfigError
from sweep.io import CHECKPOINTS_DIR, atomic_write_text, run_dir
from trainers.embedded import checkpoint as ckpt
from trainers.embedded.data import EOD
from trainers.embedded.model import MoEDecoder
from trainers.lm_eval_tasks import RESULTS_FILE
from trainers.settings import Recipe

MODEL_NAME = "flame_embedded"


def load_model(sweep_dir: Path, run_id: str, checkpoint: str = ckpt.CHECKPOINT_FILE
               ) -> tuple[MoEDecoder, int, dict]:
    """(model in eval mode, its window in tokens, the checkpoint's iteration and run)."""
    sweep_dir = Path(sweep_dir)
    rows = {row.run_id: row for row in read_plan(sweep_dir)}
    if run_id not in rows:
        raise ConfigError(f"run {run_id!r} is not in {sweep_dir}/plan.csv; name a planned run")
    path = run_dir(sweep_dir, run_id) / CHECKPOINTS_DIR / checkpoint
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint; train the run first or name one that "
                          "exists")
    state = ckpt.read(path)
    if state.get("run_id") != run_id:
        raise ConfigError(f"{path}: a checkpoint of run {state.get('run_id')}, not {run_id}")
    spec = rows[run_id]
    recipe = Recipe.from_cfg((read_config(sweep_dir) or {}).get("training") or {})
    model = MoEDecoder(spec.arch, recipe.init_std, recipe.norm_epsilon)
    model.load_state_dict(state["model"])
    model.eval()
    return model, spec.arch.seq_length, {"iteration": int(state["iteration"]), "run_id": run_id}


@register_model(MODEL_NAME)
class EmbeddedLM(LM):
    """One embedded run's checkpoint, scored by lm-eval."""

    def __init__(self, sweep_dir: str, run_id: str, checkpoint: str = ckpt.CHECKPOINT_FILE,
                 batch_size: int | str = 64, max_gen_toks: int = 64) -> None:
        super().__init__()
        self.model, self.window, self.loaded = load_model(Path(sweep_dir), str(run_id),
                                                          checkpoint)
        self.batch = int(batch_size)
        self.max_gen_toks = int(max_gen_toks)

    # -- scoring tokens ------------------------------------------------------------------
    @torch.no_grad()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum of log-probabilities of ``continuation``, whether greedy decoding gives it) for
        each (context, continuation) of token ids; batches of similar length, right-padded
        (causal attention: padding after a sequence never changes its own positions)."""
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
        for start in range(0, len(order), self.batch):
            chunk = order[start:start + self.batch]
            inputs, spans = [], []
            for i in chunk:
                context, continuation = pairs[i]
                continuation = continuation[-self.window:]
                # an empty context starts a document (EOD before it), as lm-eval's prefix token
                whole = ((context or [EOD]) + continuation)[-(self.window + 1):]
                inputs.append(whole[:-1])
                spans.append((len(whole) - 1 - len(continuation), continuation))
            width = max(len(x) for x in inputs)
            batch = torch.tensor([x + [EOD] * (width - len(x)) for x in inputs])
            logits, _ = self.model(batch)
            logp = F.log_softmax(logits.float(), dim=-1)
            for row, i in enumerate(chunk):
                first, continuation = spans[row]
                target = torch.tensor(continuation)
                part = logp[row, first:first + len(continuation)]
                picked = part.gather(1, target.unsqueeze(1)).sum()
                greedy = bool((part.argmax(-1) == target).all())
                out[i] = (float(picked), greedy)
        return out

    @staticmethod
    def _bytes(text: str) -> list[int]:
        return list(text.encode("utf-8"))

    # -- lm-eval's interface -------------------------------------------------------------
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False
                      ) -> list[tuple[float, bool]]:
        pairs = [(self._bytes(r.args[0]), self._bytes(r.args[1])) for r in requests]
        results = self._score(pairs)
        for request, result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", request.args, result)
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False
                              ) -> list[float]:
        results = []
        for request in requests:
            tokens = self._bytes(request.args[0])
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=tokens, prefix_token=EOD, max_seq_len=self.window, context_len=1)]
            total = sum(score for score, _ in self._score(windows))
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
            results.append(total)
        return results

    @torch.no_grad()
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        results = []
        for request in requests:
            context, kwargs = request.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            tokens = self._bytes(context) or [EOD]
            made = bytearray()
            for _ in range(int(kwargs.get("max_gen_toks", self.max_gen_toks))):
                logits, _ = self.model(torch.tensor([tokens[-self.window:]]))
                token = int(logits[0, -1].argmax())
                if token == EOD:
                    break
                tokens.append(token)
                made.append(token)
                text = made.decode("utf-8", errors="ignore")
                if any(stop in text for stop in until):
                    break
            text = made.decode("utf-8", errors="ignore")
            for stop in until:
                text = text.split(stop)[0]
            self.cache_hook.add_partial("generate_until", request.args, text)
            results.append(text)
        return results


def evaluate_checkpoint(target: Any, tasks: Sequence[str], limit: int | None = None,
                        batch_size: int = 64) -> str:
    """Evaluate one embedded checkpoint (``jobs.eval.EvalTarget``) with lm-eval's evaluator;
    write its results JSON under ``target.out``; returns its path."""
    from lm_eval.evaluator import evaluate

    from trainers.lm_eval_tasks import offline_env, task_manager, task_specs
    from trainers.threads import configure_torch_threads

    offline_env()
    configure_torch_threads()
    began = time.perf_counter()
    model = EmbeddedLM(target.sweep_dir, target.run_id, Path(target.checkpoint).name,
                       batch_size=batch_size)
    # lm-eval's evaluator proper (what simple_evaluate calls after its set-up): simple_evaluate
    # also collects torch's environment report (11 subprocesses, a third of a demo checkpoint's
    # time, measured) into every file; flame records its own provenance below instead.
    out = evaluate(lm=model, task_dict=task_manager().load(task_specs(tasks)),
                   limit=limit, log_samples=False, verbosity="ERROR")
    document = {key: value for key, value in out.items() if key != "samples"}
    document["config"] = {"model": MODEL_NAME, "model_args": {
        "sweep_dir": target.sweep_dir, "run_id": target.run_id,
        "checkpoint": Path(target.checkpoint).name}, "batch_size": batch_size, "limit": limit}
    document["flame"] = {"run_id": target.run_id, "checkpoint": target.label,
                         "iteration": model.loaded["iteration"], "trainer": target.trainer,
                         "lm_eval_version": lm_eval.__version__,
                         "seconds": round(time.perf_counter() - began, 3)}
    path = Path(target.out) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(document, indent=1, default=str) + "\n")
    return str(path)

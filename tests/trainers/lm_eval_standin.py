#!/usr/bin/env python3
"""Stand-in for ``python -m torch.distributed.run ... -m lm_eval --model megatron_lm ...`` on a
machine without GPUs or Megatron-LM: what eval.sh runs (trainers/megatron_eval.py), answered
as lm-eval 0.4.13 would, short of scoring a model.

It parses lm-eval's arguments with lm-eval's own parser (``lm_eval._cli.HarnessCLI``, the
``run`` subcommand that ``lm_eval/__main__.py`` falls back to), refuses model arguments that
``MegatronLMEval.__init__`` (lm_eval/models/megatron_lm.py) does not take, fails as Megatron's
``load_checkpoint`` does with ``--exit-on-missing-checkpoint`` when ``load/iter_<ckpt_step>``
is absent, and writes the aggregated results where lm-eval's ``EvaluationTracker.
save_results_aggregated`` does (lm_eval/loggers/evaluation_tracker.py:269-279:
``<output_path>/<model_name_sanitized>/results_<date_id>.json``; with no ``pretrained``-like
key the model name is ``random_name_id()``), in its format (``results`` -> task ->
``"acc,none"``/``"acc_stderr,none"``, ``n-samples``, ``config``, ``lm_eval_version``). The
accuracy is a made-up function of the checkpoint step, so a test can tell checkpoints apart.
"""

from __future__ import annotations

import inspect
import json
import sys
from datetime import datetime
from pathlib import Path


def main(argv: list[str]) -> int:
    if argv[:2] != ["-m", "torch.distributed.run"] or "lm_eval" not in argv:
        print(f"lm_eval stand-in: not a torchrun of lm_eval: {argv}", file=sys.stderr)
        return 2
    harness = argv[argv.index("lm_eval") + 1:]
    import lm_eval
    from lm_eval._cli import HarnessCLI
    from lm_eval.models.megatron_lm import MegatronLMEval
    from lm_eval.utils import random_name_id, sanitize_model_name

    args = HarnessCLI()._parser.parse_args(["run", *harness])  # exits 2 on an unknown flag
    accepted = set(inspect.signature(MegatronLMEval.__init__).parameters) - {"self", "kwargs"}
    margs = dict(args.model_args)
    unknown = set(margs) - accepted
    if args.model != "megatron_lm" or unknown:
        print(f"lm_eval stand-in: model {args.model}, unknown model_args {unknown}",
              file=sys.stderr)
        return 2
    step = int(margs["ckpt_step"])
    if not (Path(margs["load"]) / f"iter_{step:07d}").is_dir():
        print(f"lm_eval stand-in: no checkpoint iter_{step:07d} in {margs['load']}",
              file=sys.stderr)
        return 1
    tasks = args.tasks if isinstance(args.tasks, list) else args.tasks.split(",")
    acc = min(0.25 + step / 1000, 1.0)
    results = {task: {"alias": task, "acc,none": acc, "acc_stderr,none": 0.01}
               for task in tasks}
    limit = args.limit
    document = {"results": results, "group_subtasks": {t: [] for t in tasks},
                "n-shot": {t: args.num_fewshot for t in tasks},
                "n-samples": {t: {"original": 1000, "effective": int(limit or 1000)}
                              for t in tasks},
                "config": {"model": args.model, "model_args": margs,
                           "batch_size": args.batch_size, "limit": limit},
                "lm_eval_version": lm_eval.__version__}
    out = Path(args.output_path) / sanitize_model_name(random_name_id())
    out.mkdir(parents=True, exist_ok=True)
    date_id = datetime.now().isoformat().replace(":", "-")
    (out / f"results_{date_id}.json").write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

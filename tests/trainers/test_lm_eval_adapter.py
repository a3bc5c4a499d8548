"""The embedded model as an lm-eval model: its scores are the model's own log-probabilities,
whatever the batching, and lm-eval's evaluator runs it on the demo's local task."""

from __future__ import annotations

import json

import pytest

from tests.lazy import LazyModule
from tests.trainers.eval_fixtures import embedded_sweep
from trainers.embedded.data import EOD
from trainers.embedded.eval_tasks import COMPLETION, COMPLETION_FILE
from trainers.lm_eval_tasks import task_manager, task_specs

torch = LazyModule("torch")  # imported by the tests that run (tests/lazy.py)
adapter = LazyModule("trainers.embedded.lm_eval_adapter")


class _Request:
    def __init__(self, *args):
        self.args = args


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> adapter.EmbeddedLM:
    sweep = tmp_path_factory.mktemp("adapter") / "sweep"
    run_id = embedded_sweep(sweep, completed=1)[0]
    return adapter.EmbeddedLM(str(sweep), run_id, batch_size=3)


def _direct(lm: adapter.EmbeddedLM, context: str, continuation: str) -> float:
    tokens = [*(context.encode() or [EOD]), *continuation.encode()][-(lm.window + 1):]
    with torch.no_grad():
        logits, _ = lm.model(torch.tensor([tokens[:-1]]))
    logp = torch.nn.functional.log_softmax(logits[0], dim=-1)
    n = len(continuation.encode())
    targets = torch.tensor(tokens[-n:])
    return float(logp[-n:].gather(1, targets.unsqueeze(1)).sum())


def test_loglikelihood_is_the_models_own_and_batching_changes_nothing(lm):
    pairs = [("def f(x):\n    return", " x + 1\n"), ("import o", "s\n"), ("", "pass"),
             ("x" * 300, "yz"), ("class A:\n", "    pass\n")]
    batched = lm.loglikelihood([_Request(*p) for p in pairs])
    for (context, continuation), (score, _) in zip(pairs, batched):
        assert score == pytest.approx(_direct(lm, context, continuation), rel=1e-5)
    alone = [lm.loglikelihood([_Request(*p)])[0][0] for p in pairs]
    assert [s for s, _ in batched] == pytest.approx(alone, rel=1e-5)
    assert all(s < 0 for s, _ in batched)


def test_greedy_flag_says_whether_argmax_decoding_gives_the_continuation(lm):
    with torch.no_grad():
        logits, _ = lm.model(torch.tensor([[*b"abc"]]))
    best = int(logits[0, -1].argmax())
    other = (best + 1) % 128
    if best < 128:  # one ASCII byte: a one-character continuation
        assert lm.loglikelihood([_Request("abc", chr(best))])[0][1]
    assert not lm.loglikelihood([_Request("abc", chr(other))])[0][1]


def test_rolling_loglikelihood_sums_the_text_over_windows(lm):
    text = "for i in range(10):\n    print(i)\n" * 8  # longer than the 128-byte window
    (total,) = lm.loglikelihood_rolling([_Request(text)])
    short = "print('hi')\n"
    (small,) = lm.loglikelihood_rolling([_Request(short)])
    assert small == pytest.approx(_direct(lm, "", short), rel=1e-5)
    assert total < small < 0


def test_lm_evals_evaluator_scores_the_local_task(lm):
    import lm_eval

    out = lm_eval.simple_evaluate(model=lm, tasks=task_specs([COMPLETION]),
                                  task_manager=task_manager(), limit=6, log_samples=False)
    metrics = out["results"][COMPLETION]
    assert 0.0 <= metrics["acc,none"] <= 1.0 and metrics["acc_stderr,none"] >= 0
    assert out["n-samples"][COMPLETION]["effective"] == 6
    # the documents lm-eval scored are the shipped file's
    first = json.loads(COMPLETION_FILE.read_text().splitlines()[0])
    assert len(first["choices"]) == 4 and first["label"] in range(4)

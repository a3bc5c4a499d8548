"""The train.log contract: golden Megatron core_v0.16 lines, and our writers round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainers.logformat import parse_lines, train_line, validation_lines

GOLDEN = Path(__file__).parent / "data" / "megatron_core_v0.16_moe.log"


def test_golden_megatron_excerpt():
    parsed = parse_lines(GOLDEN.read_text().splitlines())
    assert [r["iteration"] for r in parsed.train] == [10, 20, 550, 5470]  # cut line skipped
    first = parsed.train[0]
    assert first["train_iters"] == 5473
    assert first["consumed samples"] == 10240
    assert first["lm loss"] == pytest.approx(10.34417)
    assert first["load_balancing_loss"] == pytest.approx(1.094372)
    assert first["z_loss"] == pytest.approx(3.311708)
    assert first["learning rate"] == pytest.approx(5.454545e-05)
    assert first["grad norm"] == pytest.approx(4.127)
    assert first["throughput per GPU (TFLOP/s/GPU)"] == pytest.approx(181.4)
    assert [(v["iteration"], v["final"]) for v in parsed.validation] == [(548, False),
                                                                         (5473, True)]
    assert parsed.last_val_loss == pytest.approx(2.887614)  # not the test-set value
    assert parsed.test[0]["lm loss value"] == pytest.approx(2.901377)


def test_older_megatron_line_shape():
    # pre-0.16 lines: no microseconds, fewer fields (shape as in epfLLM/Megatron-LLM#11)
    line = (" iteration      122/  250000 | consumed samples:       124928 | elapsed time per "
            "iteration (ms): 8654.2 | learning rate: 9.150E-06 | global batch size:  1024 | "
            "lm loss: 2.504220E+00 | loss scale: 1.0 | grad norm: 0.231 | number of skipped "
            "iterations:   0 | number of nan iterations:   0 |")
    (rec,) = parse_lines([line]).train
    assert (rec["iteration"], rec["train_iters"], rec["lm loss"]) == (122, 250000, 2.50422)


def test_multiple_validation_sets_keep_the_first_as_the_loss():
    lines = [" validation-0 loss at iteration 100 | lm loss value: 3.000000E+00 | ",
             " validation-1 loss at iteration 100 | lm loss value: 4.000000E+00 | "]
    parsed = parse_lines(lines)
    assert [v["set"] for v in parsed.validation] == [0, 1]
    assert parsed.last_val_loss == 3.0


def test_writers_round_trip():
    text = "\n".join([
        train_line(7, 50, 112, 12.5, 3e-3, 16, {"lm loss": 2.5, "load_balancing_loss": 1.01},
                   grad_norm=0.7),
        validation_lines(7, {"lm loss": 2.25}),
        validation_lines(50, {"lm loss": 2.0}, final=True)])
    parsed = parse_lines(text.splitlines())
    assert parsed.train[0]["lm loss"] == 2.5 and parsed.train[0]["consumed samples"] == 112
    assert [(v["iteration"], v["final"]) for v in parsed.validation] == [(7, False), (50, True)]
    assert parsed.last_val_loss == 2.0

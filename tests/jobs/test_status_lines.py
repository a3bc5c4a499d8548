"""Plain progress lines for `flame run` / `flame status --watch` when output is not a terminal."""

from __future__ import annotations

import io

from rich.console import Console

from jobs import ledger
from jobs.status import PLAIN_EVERY_S, PlainLine, RunStatus, SweepStatus


def _status(done: int, total: int = 4) -> SweepStatus:
    runs = tuple(RunStatus(f"r{i}", "L2-h8", 1e11, ledger.COMPLETED if i < done else
                           ledger.RUNNING, 1, "1", 0.0, 0.0, None) for i in range(total))
    counts = {s: sum(r.state == s for r in runs) for s in ledger.STATES}
    return SweepStatus(runs, counts)


def test_lines_are_throttled_but_the_last_is_always_printed():
    out = io.StringIO()
    console, line = Console(file=out, width=120), PlainLine()
    line.maybe_print(console, _status(0), 0.0)          # first: printed
    line.maybe_print(console, _status(1), 5.0)          # a change, too soon: skipped
    line.maybe_print(console, _status(1), PLAIN_EVERY_S + 1)   # due: printed
    line.maybe_print(console, _status(1), 3 * PLAIN_EVERY_S)   # no change: skipped
    line.maybe_print(console, _status(4), 3 * PLAIN_EVERY_S + 1)  # all done: printed
    assert out.getvalue().splitlines() == [
        "runs finished 0/4  4 running  0:00",
        "runs finished 1/4  3 running, 1 completed  0:31",
        "runs finished 4/4  4 completed  1:31"]

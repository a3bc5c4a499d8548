"""Deferred preemption signals: a handler that only sets a flag, acted on at a step boundary.

SLURM (through submitit) sends SIGUSR2 before a time limit or preemption and SIGTERM when it
kills a job. Acting inside the handler could save a checkpoint in the middle of an optimiser
step; so the handler records the signal and the training loop, between two steps, saves a
checkpoint and then hands the signal to whatever handler was installed before (submitit's,
which calls the job's ``checkpoint()``, requeues and exits).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

DEFERRED_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGUSR2, signal.SIGTERM)


class Preempted(RuntimeError):
    """A deferred SIGUSR2/SIGTERM arrived and no previous handler takes it over (not under
    submitit): the run saved a checkpoint and stops; running it again resumes."""

    def __init__(self, signum: int, iteration: int) -> None:
        self.signum = signum
        self.iteration = iteration
        super().__init__(f"{signal.Signals(signum).name} received: checkpoint saved at "
                         f"iteration {iteration}; run again to resume")


class DeferredSignals:
    """Context manager: while active, SIGUSR2/SIGTERM only set ``pending``."""

    def __init__(self, signals: tuple[signal.Signals, ...] = DEFERRED_SIGNALS) -> None:
        self.signals = signals
        self.pending: int | None = None
        self._frame: FrameType | None = None
        self._previous: dict[int, Any] = {}
        # signal.signal only works in the main thread; elsewhere there is nothing to defer.
        self.active = threading.current_thread() is threading.main_thread()

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.pending, self._frame = signum, frame

    def __enter__(self) -> DeferredSignals:
        if self.active:
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def deliver(self, iteration: int) -> None:
        """Hand the pending signal to the previous handler (call after saving a checkpoint).

        If that handler returns (e.g. submitit's SIGTERM "bypass"), the signal is consumed and
        training goes on, still deferring. With no callable previous handler (SIG_DFL/SIG_IGN:
        not under submitit) raises ``Preempted``.
        """
        signum, frame = self.pending, self._frame
        if signum is None:
            return
        self.pending, self._frame = None, None
        previous: Callable[..., Any] | Any = self._previous.get(signum)
        if not callable(previous):
            raise Preempted(signum, iteration)
        previous(signum, frame)  # submitit's USR2 handler requeues and exits from here

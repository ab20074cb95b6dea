"""Ctrl-C while a run trains: the first SIGINT asks the loop to stop at the end of its step, a second stops it.

    with Interrupt(hooks.stop_fn) as interrupt:
        while ...:
            if interrupt.asked(log_step): ...     # a checkpoint, the run KILLED with the reason
"""
from __future__ import annotations

import signal
import threading
from typing import Callable

from catlab import distributed


class Interrupt:
    """Ctrl-C while the loop runs: the first SIGINT asks the run to stop at the end of its step (`asked`);
    a second one raises KeyboardInterrupt at once. Installed in the main thread only (signals live there).
    stop_fn (Hooks.stop_fn) asks too: a grid's worker processes stop when the grid is interrupted."""

    def __init__(self, stop_fn: Callable | None = None):
        self.requested, self.stop_fn, self._previous = False, stop_fn, None
        self.stopped = False                              # the loop stopped on it

    def __enter__(self) -> "Interrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def asked(self, log_step: bool) -> bool:
        """Stop now? Every step in one process; under torchrun at log steps, on rank 0's word."""
        mine = self.requested or bool(self.stop_fn and self.stop_fn())
        if not distributed.active():
            return mine
        return bool(distributed.agree(mine)) if log_step else False

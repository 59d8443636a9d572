"""Ctrl-C and SIGTERM during pretraining (docs/ARCHITECTURE.md §4): stop at the next step boundary, checkpoint, exit.

`StopSignals` notes the first SIGINT / SIGTERM while the step loop runs instead of raising inside a DeepSpeed
step or a checkpoint write; the loop then stops every rank at the same step (`pretrain.engine.any_rank`),
saves that step's checkpoint and raises `RunInterrupted`, which `moe-ts pretrain` prints as one line, exiting
with 128 + the signal number. A second signal interrupts at once (KeyboardInterrupt, also one line).
"""
from __future__ import annotations

import signal
import threading
from typing import Any

CAUGHT = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """The run stopped on a signal after saving a checkpoint."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class StopSignals:
    """Notes SIGINT / SIGTERM between `install` and `restore` (main thread only; elsewhere it notes nothing)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in CAUGHT:
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # the second one: stop now
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def caught(self) -> bool:
        return self.signum is not None

    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a signal on another rank"

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

"""Stopping a training run cleanly: the first Ctrl-C or SIGTERM asks for a checkpoint at the next step
boundary, a second one stops at once.

SIGTERM is what `kill`, schedulers and launchers send before pre-empting a job. The request is
read once per step; under torchrun it travels in the step's all-reduce, so every rank stops at the
same step and rank 0 writes the checkpoint (training/trainer.py).

Example:
    bgeprune train recipes/smoke.toml      # Ctrl-C: "interrupted at step 40; checkpoint ... Continue with: ..."
"""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """First Ctrl-C (or SIGTERM, as schedulers and launchers send) asks for a checkpoint at the next
    step boundary; a second one stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

"""Ctrl-C during a long training loop: finish the current step, save, then stop.

Inside :func:`deferred_interrupt` the first SIGINT only sets ``requested`` (and says so on
stderr); the loop checks it after each step, writes a checkpoint and calls :meth:`stop`, which
raises ``KeyboardInterrupt``. A second SIGINT raises at once. Without anything to save, or off
the main thread (where Python delivers no signals), nothing is deferred.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator


class Interrupt:
    def __init__(self, what: str):
        self.what, self.requested = what, False

    def stop(self, step: int) -> None:
        raise KeyboardInterrupt(f"{self.what} interrupted after outer step {step}; a checkpoint "
                                "was saved (resume it with the same settings)")


@contextmanager
def deferred_interrupt(what: str, saving: bool) -> Iterator[Interrupt]:
    """Defer the first Ctrl-C to the end of the current step when ``saving`` (see module doc)."""
    state = Interrupt(what)
    if not saving or threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if state.requested:
            raise KeyboardInterrupt(f"{what} interrupted")
        state.requested = True
        print(f"{what}: interrupted; finishing this step and saving a checkpoint "
              "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)

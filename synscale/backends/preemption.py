"""Checkpoint-and-requeue on preemption or time limit (Slurm's USR2, through
submitit's Checkpointable).

submitit calls `StageTask.checkpoint` from its USR2 handler, then requeues the
job and exits. A training loop registers how to save itself, and defers USR2
while a step runs, so the signal lands between two steps and the checkpoint
holds one consistent state.

Deferring swaps the Python handler rather than masking the signal: a mask
holds only for the calling thread, and the kernel hands a process-directed
USR2 to any other thread (the loader's, gloo's), after which CPython runs the
handler in the main thread at the next bytecode, in the middle of a step.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Callable, Iterator

_save: Callable[[], None] | None = None
DEFERRED = signal.SIGUSR2


def register(save: Callable[[], None] | None) -> None:
    global _save
    _save = save


def save_now() -> bool:
    if _save is None:
        return False
    _save()
    return True


@contextmanager
def deferred() -> Iterator[None]:
    """Hold USR2 back for the block; a signal that came meanwhile is handled on exit."""
    caught = []
    handler = signal.signal(DEFERRED, lambda signum, frame: caught.append(frame))
    try:
        yield
    finally:
        signal.signal(DEFERRED, handler)
        if caught:
            if callable(handler):
                handler(DEFERRED, caught[0])
            elif handler == signal.SIG_DFL:
                signal.raise_signal(DEFERRED)

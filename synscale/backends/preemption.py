"""Checkpoint-and-requeue on preemption or time limit (Slurm's USR2, through
submitit's Checkpointable).

submitit calls `StageTask.checkpoint` from its USR2 handler, then requeues the
job and exits. A training loop registers how to save itself, and defers USR2
while a step runs, so the signal lands between two steps and the checkpoint
holds one consistent state.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Callable, Iterator

_save: Callable[[], None] | None = None
DEFERRED = {signal.SIGUSR2}


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
    signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, DEFERRED)

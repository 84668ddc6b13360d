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

The signal can come before a stage has anything to save: during start-up
(imports, numba compilation, loading a model), or in a stage kind that keeps
no checkpoint. `begin` records when the task started and `register` when the
stage became able to save, so the task can tell, and say, how long start-up
took: requeueing such a job at its time limit would start it from scratch
with the same time, forever, so it ends as a timeout instead and the retry
policy gives the next attempt more time.
"""
from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

# save() returns whether what it saved holds work the last attempt had not
_save: Callable[[], bool] | None = None
_began: float | None = None
_folder: Path | None = None
DEFERRED = signal.SIGUSR2


def begin(folder: Path | None) -> None:
    """The task starts: measure start-up from now; `folder` gets startup.json."""
    global _began, _folder
    _began, _folder = time.time(), folder


def register(save: Callable[[], bool] | None) -> None:
    global _save
    if save is not None and _save is None and _began is not None and _folder is not None:
        from synscale.plan import state
        state.write_json(_folder / "startup.json", {"seconds": round(time.time() - _began, 1)})
    _save = save


def running_for() -> float:
    return time.time() - _began if _began is not None else 0.0


def ready() -> bool:
    return _save is not None


_interrupted = ""


def interrupted(message: str) -> None:
    """Why the task was stopped without a checkpoint, for its failure record."""
    global _interrupted
    _interrupted = message


def interruption() -> str:
    return _interrupted


def save_now() -> bool:
    """Save if the stage can; True when the save holds new work to resume from."""
    if _save is None:
        return False
    return bool(_save())


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

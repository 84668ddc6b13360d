"""Checkpoint-and-requeue on preemption or time limit (Slurm's USR2, through
submitit's Checkpointable).

submitit calls `StageTask.checkpoint` from its USR2 handler, then requeues the
job and exits. A training loop registers how to save itself, and defers USR2
while a step runs, so the signal lands between two steps and the checkpoint
holds one consistent state.

With several ranks the save cannot happen in a handler: USR2 reaches every
task, but submitit calls `StageTask.checkpoint` on rank 0 only, and a
DeepSpeed save is collective. So a training loop `hold`s USR2 for its whole
length: every rank only records the signal, the ranks agree at each step
boundary whether any of them got it, all save together, and then `act`
hands the signal to the handler that was held back: submitit's, on rank 0,
calls `StageTask.checkpoint` (which finds the save done and does not save
again), requeues the job and exits; the other ranks leave.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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


_held: list = []          # USR2s recorded while held (frames)
_held_handler = None      # the handler `hold` put aside


@contextmanager
def hold(save: Callable[[], bool]) -> Iterator[None]:
    """Register `save` and record USR2 for the block instead of acting on it;
    the loop polls `pending()` at step boundaries and calls `act` once the
    ranks agree. On the way out, however it ends, `save` is forgotten: a
    process that goes on to another stage must not call it at a later signal."""
    global _held_handler
    _held.clear()
    register(save)
    _held_handler = signal.signal(DEFERRED, lambda signum, frame: _held.append(frame))
    try:
        yield
    finally:
        signal.signal(DEFERRED, _held_handler)
        _held.clear()
        register(None)


def pending() -> bool:
    """A USR2 came while held and has not been acted upon."""
    return bool(_held)


def act(saved: bool, leave: bool) -> None:
    """After the collective save at a step boundary: run the held-back
    handler as if the signal came now. `saved` (whether the save holds new
    work) is what `save_now` answers meanwhile, so submitit's checkpoint()
    does not save again on one rank alone. A rank whose handler returns
    leaves when `leave` (a non-zero rank: rank 0's handler decides the job),
    and goes on otherwise."""
    global _save
    _held.clear()
    handler, registered = _held_handler, _save
    _save = lambda: saved  # noqa: E731
    try:
        if callable(handler):
            handler(DEFERRED, None)
        elif handler == signal.SIG_DFL:
            signal.signal(DEFERRED, signal.SIG_DFL)
            signal.raise_signal(DEFERRED)
    finally:
        _save = registered
    if leave:
        raise SystemExit(0)

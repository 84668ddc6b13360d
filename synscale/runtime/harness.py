"""Run one stage in this process: the same path for every backend (the
local pool calls `execute`; a Slurm array task calls it through
backends/worker.StageTask).

The stage folder lock means two processes never run one stage at once (an
orphan of a killed launch finishes or dies before a relaunch re-runs it);
DONE is written last, after every output has been renamed into place.
"""
from __future__ import annotations

import functools
import logging
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from synscale.plan import outputs, state
from synscale.plan.graph import Stage
from synscale.plan.layout import RunDir
from synscale.stages import runner
from synscale.study import specs


@dataclass
class StageContext:
    stage: Stage
    dir: Path                   # this stage's folder: write outputs here, atomically
    inputs: dict[str, Path]     # input stage id -> its folder (read only)
    input_kinds: dict[str, str]  # input stage id -> its kind
    log: logging.Logger

    @functools.cached_property
    def spec(self):
        """The stage's spec as its kind's type (study/specs.py), read strictly:
        a spec the runner cannot read fails here, before any work."""
        return specs.read(self.stage.kind, self.stage.spec)


def _logger(folder: Path, stage: Stage) -> logging.Logger:
    """The stage's logger, writing to this folder's log.txt. Loggers live as
    long as the process and one process may run the same stage id under two
    run roots, so the file is chosen anew each time; `_release` closes it."""
    log = logging.getLogger(f"synscale.stage.{stage.id}")
    log.setLevel(logging.INFO)
    log.propagate = False
    _release(log)
    handler = logging.FileHandler(folder / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    return log


def _release(log: logging.Logger) -> None:
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def _free_earlier_stages() -> None:
    """A process runs many stages in a row (a local worker; an attempt
    retried in place). A DeepSpeed engine is a web of reference cycles
    (hooks, optimizer, module) that only the cycle collector frees, at a
    time of its choosing: collect before a stage takes its memory, and hand
    cached GPU blocks back. (Not all of it comes back: a ViT-L retried in
    the same process still peaked 4 GB a rank above one resumed in a new
    process; Slurm's requeues are new processes.)"""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def execute(run_root: str, stage: Stage, input_kinds: dict[str, str]) -> dict:
    """Run `stage` unless it is done; returns its DONE summary."""
    run = RunDir(Path(run_root))
    folder = run.stage(stage.kind, stage.id)
    if run.home != run.root:  # a store a team shares: what this stage writes is theirs too
        from synscale.plan.store import share_with_group
        share_with_group()
    # every rank agrees before any of them waits on the others (each only reads:
    # rank 0 quarantines a damaged one under the lock); a released stage is
    # called only when a stage needs it again
    if _intact(folder):
        return {"skipped": True, **state.read_json(folder / "DONE")}
    _free_earlier_stages()  # only before a stage that will take memory
    from synscale.runtime.distributed import rank
    if rank() != 0:
        return _follower(run, stage, input_kinds)
    folder.mkdir(parents=True, exist_ok=True)
    # Blocking: if an orphaned worker still holds it, wait and then see its DONE.
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _intact(folder):
            return {"skipped": True, **state.read_json(folder / "DONE")}
        if state.is_done(folder) and not state.is_released(folder):  # done, but damaged
            outputs.quarantine(run, stage.kind, stage.id, outputs.check(folder) or "damaged")
        state.clean_temporaries(folder)
        state.record_attempt(folder)
        log = _logger(folder, stage)
        ctx = StageContext(stage, folder,
                           {i: run.stage(input_kinds[i], i) for i in stage.inputs},
                           input_kinds, log)
        try:
            read = _check_inputs(run, ctx)
        except outputs.InputDamaged as e:  # its own class: the relaunch redoes the input
            state.record_failure(folder, e, traceback.format_exc(), "input damaged")
            log.info("failed: %s", e)
            raise
        start = time.time()
        log.info("start %s %s", stage.kind, stage.id)
        stop_heartbeat = state.start_heartbeat(folder)
        try:
            summary = runner(stage.kind).run(ctx) or {}
        except SystemExit:
            log.info("exiting to be requeued")  # preemption or time limit: not a failure
            raise
        except BaseException as e:
            from synscale.backends.failures import exception_class
            from synscale.runtime import preemption
            state.record_failure(folder, e, traceback.format_exc(), exception_class(e),
                                 preemption.interruption())
            log.info("failed: %s", e)
            raise
        finally:
            stop_heartbeat()
        from synscale.backends.code import running  # which code computed it: ids do not say
        from synscale.runtime.device import where_computed
        summary = {"seconds": round(time.time() - start, 3), **summary, "code": running(),
                   "computed_on": where_computed(),
                   # what it wrote, and which version of each input it read
                   "outputs": outputs.listing(folder), "inputs": read}
        state.mark_done(folder, summary)
        log.info("done in %.1fs", summary["seconds"])
        after = getattr(runner(stage.kind), "after_done", None)
        if after is not None:  # work that must follow DONE (releasing inputs)
            try:
                after(ctx)
            except OSError as e:  # the stage is done; what it frees is a saving
                log.warning("after done: %s", e)
        return summary
    finally:
        _release(logging.getLogger(f"synscale.stage.{stage.id}"))
        os.close(fd)


def _intact(folder: Path) -> bool:
    """Done, not released, and its outputs as its DONE lists them."""
    return state.is_done(folder) and not state.is_released(folder) and \
        outputs.check(folder) is None


def _check_inputs(run: RunDir, ctx: StageContext) -> dict[str, str]:
    """Each input done and whole before anything reads it; {input id: the
    digest of its outputs}. A damaged one is quarantined, so the relaunch
    redoes it first, and this stage fails as "input damaged"."""
    read = {}
    for i, path in ctx.inputs.items():
        kind = ctx.input_kinds[i]
        if state.is_released(path):
            raise RuntimeError(f"input {kind}/{i} was released (keep_shards = false); "
                               "a relaunch renders it again first")
        why = outputs.damaged(path) if not state.is_done(path) else outputs.check(path)
        if why is None and not state.is_done(path):
            raise RuntimeError(f"input {kind}/{i} is not done")
        if why is not None:
            if state.is_done(path):
                outputs.quarantine(run, kind, i, why)
            raise outputs.InputDamaged(f"input {kind}/{i} is damaged ({why}); it is marked not "
                                       "done: a relaunch redoes it, then this stage")
        read[i] = outputs.current_digest(path)
    return read


def _follower(run: RunDir, stage: Stage, input_kinds: dict[str, str]) -> dict:
    """A non-zero rank of a multi-task stage: it computes, rank 0 writes.

    It takes no lock (rank 0 holds it, and waits for this rank inside the
    collective calls) and writes no record."""
    folder = run.stage(stage.kind, stage.id)
    log = logging.getLogger(f"synscale.stage.{stage.id}.follower")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    ctx = StageContext(stage, folder, {i: run.stage(input_kinds[i], i) for i in stage.inputs},
                       input_kinds, log)
    return runner(stage.kind).run(ctx) or {}

"""Run one stage in this process: the same path for every backend.

The stage folder lock means two processes never run one stage at once (an
orphan of a killed launch finishes or dies before a relaunch re-runs it);
DONE is written last, after every output has been renamed into place.
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from synscale.plan import state
from synscale.plan.graph import Stage
from synscale.plan.layout import RunDir
from synscale.stages import runner


@dataclass
class StageContext:
    stage: Stage
    dir: Path                   # this stage's folder: write outputs here, atomically
    inputs: dict[str, Path]     # input stage id -> its folder (read only)
    input_kinds: dict[str, str]  # input stage id -> its kind
    log: logging.Logger

    @property
    def spec(self) -> dict:
        return self.stage.spec


def _logger(folder: Path, stage: Stage) -> logging.Logger:
    log = logging.getLogger(f"synscale.stage.{stage.id}")
    log.setLevel(logging.INFO)
    log.propagate = False
    if not log.handlers:
        handler = logging.FileHandler(folder / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
    return log


def execute(run_root: str, stage: Stage, input_kinds: dict[str, str]) -> dict:
    """Run `stage` unless it is done; returns its DONE summary."""
    run = RunDir(Path(run_root))
    folder = run.stage(stage.kind, stage.id)
    if state.is_done(folder):  # every rank agrees before any of them waits on the others
        return {"skipped": True, **state.read_json(folder / "DONE")}
    from synscale.backends.distributed import rank
    if rank() != 0:
        return _follower(run, stage, input_kinds)
    folder.mkdir(parents=True, exist_ok=True)
    # Blocking: if an orphaned worker still holds it, wait and then see its DONE.
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX)
        if state.is_done(folder):
            return {"skipped": True, **state.read_json(folder / "DONE")}
        state.clean_temporaries(folder)
        state.record_attempt(folder)
        log = _logger(folder, stage)
        ctx = StageContext(stage, folder,
                           {i: run.stage(input_kinds[i], i) for i in stage.inputs},
                           input_kinds, log)
        for i, path in ctx.inputs.items():
            if not state.is_done(path):
                raise RuntimeError(f"input {input_kinds[i]}/{i} is not done")
        start = time.time()
        log.info("start %s %s", stage.kind, stage.id)
        stop_heartbeat = state.start_heartbeat(folder)
        try:
            summary = runner(stage.kind).run(ctx) or {}
        except SystemExit:
            log.info("exiting to be requeued")  # preemption or time limit: not a failure
            raise
        except BaseException as e:
            from synscale.backends import preemption
            from synscale.backends.failures import exception_class
            state.record_failure(folder, e, traceback.format_exc(), exception_class(e),
                                 preemption.interruption())
            log.info("failed: %s", e)
            raise
        finally:
            stop_heartbeat()
        from synscale.backends.code import running  # which code computed it: ids do not say
        summary = {"seconds": round(time.time() - start, 3), **summary, "code": running()}
        state.mark_done(folder, summary)
        log.info("done in %.1fs", summary["seconds"])
        return summary
    finally:
        os.close(fd)


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


def _record_termination(folder: Path) -> None:
    """On SIGTERM (scancel, the time limit, a requeue) write exit.json, then
    let the handler that was there act (submitit's lets checkpointing finish).
    Without accounting, this record is how status tells a killed job from one
    that vanished, and the time the job had left tells the time limit apart."""
    import signal

    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        folder.mkdir(parents=True, exist_ok=True)
        state.write_json(folder / "exit.json", {
            "signal": "SIGTERM", "time": time.time(), "pid": os.getpid(),
            "time_left_s": time_left()})
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)


def time_left() -> float | None:
    """Seconds this Slurm job has before its time limit (squeue's %L; this
    Slurm sets no SLURM_JOB_END_TIME), or None where that cannot be known."""
    import subprocess

    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%L"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    days, _, clock = out.rpartition("-")
    parts = clock.split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        return None  # UNLIMITED, INVALID, or nothing
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + int(p)
    return seconds + int(days or 0) * 86400


def _leave_process_group() -> None:
    """Shut gloo down before the interpreter exits: left running, its threads
    abort a finished multi-task job at exit ("terminate called without an
    active exception"), and Slurm then marks the job FAILED, which blocks
    every afterok dependent."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


class StageTask:
    """What a Slurm array task runs (pickled by submitit). Being checkpointable,
    it is requeued on preemption or time limit after the stage saved itself;
    the requeued job resumes from that checkpoint."""

    def __init__(self, run_root: str, stage: Stage, input_kinds: dict[str, str]):
        self.run_root, self.stage, self.input_kinds = run_root, stage, input_kinds

    def __call__(self) -> dict:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        folder = RunDir(Path(self.run_root)).stage(self.stage.kind, self.stage.id)
        from synscale.backends import preemption
        from synscale.backends.distributed import rank
        preemption.begin(folder if rank() == 0 else None)
        os.environ["SYNSCALE_RENDEZVOUS"] = str(folder)
        _record_termination(folder)
        import torch
        torch.set_num_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", "1")))
        try:
            return execute(self.run_root, self.stage, self.input_kinds)
        finally:
            _leave_process_group()

    def checkpoint(self, *args, **kwargs):
        """submitit's USR2 handler calls this; a DelayedSubmission requeues the
        job, None ends it (submitit then raises UncompletedJobError in the
        stage, recorded as a timeout)."""
        from submitit.helpers import DelayedSubmission

        from synscale.backends import preemption
        if preemption.save_now() or self.stage.kind in RESUMES_FROM_OUTPUTS:
            return DelayedSubmission(self, *args, **kwargs)
        left = time_left()
        what = (f"before its first checkpoint, {preemption.running_for():.0f} s into start-up"
                if not preemption.ready() and self.stage.kind == "train" else
                f"after {preemption.running_for():.0f} s, with no checkpoint to resume from")
        if left is not None and left > LIMIT_SLACK_S:
            preemption.interrupted(f"preempted {what}; requeued to start again")
            return DelayedSubmission(self, *args, **kwargs)  # preempted: the time is still there
        # At the time limit a requeue would start over with the same time: stop
        # here, as a timeout, so that a relaunch retries with more time.
        preemption.interrupted(f"interrupted by the time limit {what}; a relaunch retries with "
                               "[retry.<kind>]'s longer time")
        return None


# Kinds whose finished parts survive a requeue (generate keeps its shards).
RESUMES_FROM_OUTPUTS = {"generate", "caption"}
# USR2 with less than this left is the time limit's warning, not a preemption.
LIMIT_SLACK_S = 180

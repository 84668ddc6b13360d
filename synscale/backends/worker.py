"""What a Slurm array task runs: `StageTask`, pickled by submitit.

It runs one stage through the runtime's harness (runtime/harness.py), records
how Slurm ended it where Python can see that (SIGTERM), and decides at USR2
whether a requeue would make progress.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from synscale.plan import state
from synscale.plan.layout import RunDir
from synscale.runtime.harness import execute

if TYPE_CHECKING:
    from synscale.plan.graph import Stage


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


_finished = [False]  # set once the stage returned: what is left is submitit saving the result


def _leave_without_teardown() -> None:
    """Once the stage is done and submitit has saved its result, leave with
    os._exit(0), skipping the interpreter's teardown. Even with the process
    group destroyed, a follower rank now and then aborted in that teardown
    ("terminate called without an active exception": a C++ thread of the
    communication libraries still joinable at exit), after all its work was
    done; Slurm then marked the task FAILED and blocked its evaluation.
    Registered when the task starts, it runs after the exit handlers
    registered since and does itself what the earlier ones it skips would:
    flush the logs and streams, end daemonic children (multiprocessing's
    handler). Any uncaught exception (submitit failing to save the result)
    keeps the ordinary exit and its non-zero code."""
    import atexit
    import sys

    if getattr(_leave_without_teardown, "installed", False):
        return
    _leave_without_teardown.installed = True
    previous = sys.excepthook

    def excepthook(*exc):
        _finished[0] = False
        previous(*exc)

    def leave():
        if _finished[0]:
            import logging
            from multiprocessing import util
            logging.shutdown()
            getattr(util, "_exit_function", lambda: None)()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(0)

    sys.excepthook = excepthook
    atexit.register(leave)


class StageTask:
    """What a Slurm array task runs (pickled by submitit). Being checkpointable,
    it is requeued on preemption or time limit after the stage saved itself;
    the requeued job resumes from that checkpoint."""

    def __init__(self, run_root: str, stage: Stage, input_kinds: dict[str, str]):
        self.run_root, self.stage, self.input_kinds = run_root, stage, input_kinds

    def __call__(self) -> dict:
        folder = RunDir(Path(self.run_root)).stage(self.stage.kind, self.stage.id)
        from synscale.runtime import preemption
        from synscale.runtime.distributed import rank
        preemption.begin(folder if rank() == 0 else None)
        os.environ["SYNSCALE_RENDEZVOUS"] = str(folder)
        _record_termination(folder)
        from synscale.runtime.device import use_threads
        use_threads(int(os.environ.get("SLURM_CPUS_PER_TASK", "1")))
        _leave_without_teardown()
        try:
            result = execute(self.run_root, self.stage, self.input_kinds)
        finally:
            from synscale.runtime.distributed import leave_process_group
            leave_process_group()
        _finished[0] = True
        return result

    def checkpoint(self, *args, **kwargs):
        """submitit's USR2 handler calls this; a DelayedSubmission requeues the
        job, None ends it (submitit then raises UncompletedJobError in the
        stage, recorded as a timeout)."""
        from submitit.helpers import DelayedSubmission

        from synscale.runtime import preemption
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

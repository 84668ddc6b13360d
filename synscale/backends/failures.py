"""What became of a submitted stage, from Slurm's answers and its own folder.

The run directory is the truth for done (DONE) and for Python exceptions
(error.json, with the traceback's last line); squeue tells queued from
running; sacct, where accounting runs, tells how a job that left the queue
ended. Status and the retry policy both read stages through `classify`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from synscale.plan import state

RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"}
# sacct states that end a job without DONE, and the failure class each means.
FAILURE_CLASSES = {"OUT_OF_MEMORY": "out of memory", "TIMEOUT": "timeout",
                   "DEADLINE": "timeout", "NODE_FAIL": "node failure",
                   "BOOT_FAIL": "node failure", "PREEMPTED": "preemption",
                   "CANCELLED": "cancelled", "FAILED": "failed"}


@dataclass(frozen=True)
class Verdict:
    state: str          # done, running, pending, failed, not submitted
    klass: str = ""     # for failed: python exception, out of memory, timeout, ...
    message: str = ""   # the traceback's last line, or Slurm's state


def classify(folder: Path, job: str | None, queue: dict | None, acct: dict | None) -> Verdict:
    """`queue`: squeue states by job id (None: not a Slurm run); `acct`: sacct
    states by job id, or None where accounting is off."""
    if state.is_done(folder):
        return Verdict("done")
    error = folder / "error.json"
    if queue is None or job is None:
        if state.attempt_alive(folder) or (state.heartbeat_fresh(folder)
                                           and not error.exists()):
            return Verdict("running")
        if error.exists():
            return Verdict("failed", "python exception", state.read_json(error)["error"])
        return Verdict("pending" if queue is None else "not submitted")
    live = queue.get(job)
    if live in RUNNING:
        return Verdict("running")
    if live is not None:  # queued, held, or waiting on a dead dependency (NEVER)
        return Verdict("pending")
    if state.heartbeat_fresh(folder) and not error.exists() and not (folder / "exit.json").exists():
        return Verdict("running")  # left squeue but still beating: finishing up
    if error.exists():
        return Verdict("failed", "python exception", state.read_json(error)["error"])
    if acct is None:  # left the queue without DONE: the worker's exit record says why
        return _from_exit_record(folder)
    slurm_state = acct.get(job)
    if slurm_state is None:  # submitted moments ago, not yet in the database
        return Verdict("pending")
    return Verdict("failed", FAILURE_CLASSES.get(slurm_state, "unknown"), slurm_state)


def _from_exit_record(folder: Path) -> Verdict:
    path = folder / "exit.json"
    if not path.exists():  # SIGKILL leaves no record: out of memory or a lost node
        return Verdict("failed", "unknown", "left the queue without finishing or a record")
    rec = state.read_json(path)
    end = rec.get("job_end_time") or 0
    if end and rec["time"] >= end - 30:
        return Verdict("failed", "timeout", "SIGTERM at the time limit")
    return Verdict("failed", "cancelled", "SIGTERM before the time limit (scancel)")

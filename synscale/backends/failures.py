"""What became of a submitted stage, from Slurm's answers and its own folder.

The run directory is the truth for done (DONE) and for Python exceptions
(error.json, with the traceback's last line); squeue tells queued from
running. How a job that left the queue ended comes, in this order, from the
line slurmstepd writes into the job's log when it kills it (the only place
that says "memory" where no cgroup enforces it: sacct then says FAILED or
CANCELLED), from sacct where accounting runs, and from the exit record the
worker writes on SIGTERM. Status and the retry policy both read stages
through `classify`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from synscale.plan import state

# squeue lists live jobs only; of those, these have started.
RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"}
# sacct states that end a job without DONE, and the failure class each means.
FAILURE_CLASSES = {"OUT_OF_MEMORY": "out of memory", "TIMEOUT": "timeout",
                   "DEADLINE": "timeout", "NODE_FAIL": "node failure",
                   "BOOT_FAIL": "node failure", "PREEMPTED": "preemption",
                   "CANCELLED": "cancelled", "FAILED": "failed"}
# slurmstepd's own words in the job's log, most specific first.
KILL_MESSAGES = [
    (re.compile(r"exceeded (job )?memory limit|oom[-_ ]kill", re.I), "out of memory"),
    (re.compile(r"CANCELLED AT \S+ DUE TO TIME LIMIT"), "timeout"),
    (re.compile(r"CANCELLED AT \S+ DUE TO PREEMPTION"), "preemption"),
    (re.compile(r"DUE TO NODE FAILURE"), "node failure"),
    (re.compile(r"\*\*\* (JOB|STEP) \S+ ON \S+ CANCELLED AT \S+( \*\*\*| DUE TO JOB REQUEUE)"),
     "cancelled"),
]


@dataclass(frozen=True)
class Verdict:
    state: str          # done, running, pending, failed, not submitted
    klass: str = ""     # for failed: python exception, out of memory, timeout, ...
    message: str = ""   # the traceback's last line, or Slurm's state


def classify(folder: Path, job: str | None, queue: dict | None, acct: dict | None,
             log: Path | None = None) -> Verdict:
    """`queue`: squeue states by job id (None: not a Slurm run); `acct`: sacct
    states by job id, or None where accounting is off; `log`: the job's
    Slurm output file."""
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
    if error.exists():
        return Verdict("failed", "python exception", state.read_json(error)["error"])
    killed = kill_message(log)
    if killed:  # Slurm says it ended it, whatever its last heartbeat says
        return Verdict("failed", *killed)
    if state.heartbeat_fresh(folder) and not (folder / "exit.json").exists():
        return Verdict("running")  # left squeue but still beating: finishing up
    if acct is None:  # left the queue without DONE: the worker's exit record says why
        return _from_exit_record(folder)
    slurm_state = acct.get(job)
    if slurm_state is None:  # submitted moments ago, not yet in the database
        return Verdict("pending")
    return Verdict("failed", FAILURE_CLASSES.get(slurm_state, "unknown"), slurm_state)


def kill_message(log: Path | None) -> tuple[str, str] | None:
    """(class, slurmstepd's line) when Slurm killed the job and said so in its log.

    A requeued job appends to the same log, so only the last attempt counts:
    the text after the last line submitit writes when a job starts."""
    if log is None or not log.exists():
        return None
    text = log.read_text(errors="replace")
    start = text.rfind("Starting with JobEnvironment")
    lines = [l for l in text[max(start, 0):].splitlines() if "slurmstepd" in l]
    for pattern, klass in KILL_MESSAGES:
        for line in lines:
            if pattern.search(line):
                return klass, line.split("error:", 1)[-1].strip(" *")
    return None


def _from_exit_record(folder: Path) -> Verdict:
    path = folder / "exit.json"
    if not path.exists():  # SIGKILL leaves no record: out of memory or a lost node
        return Verdict("failed", "unknown", "left the queue without finishing or a record")
    rec = state.read_json(path)
    end = rec.get("job_end_time") or 0
    if end and rec["time"] >= end - 30:
        return Verdict("failed", "timeout", "SIGTERM at the time limit")
    return Verdict("failed", "cancelled", "SIGTERM before the time limit (scancel)")

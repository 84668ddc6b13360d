"""What became of a submitted stage, from Slurm's answers and its own folder.

The run directory is the truth for done (DONE) and for failures the stage
saw itself (error.json: a Python exception, or a class the worker knew, such
as a rendezvous that could not bind); squeue tells queued from running and
from blocked. How a job that left the queue ended comes, in this order, from
the lines slurmstepd and srun write into the job's log (the only place that
says "memory" where no cgroup enforces it, and that names the signal of a
killed task), from sacct where accounting runs, and without it from the
records the worker leaves (exit.json on SIGTERM) or their absence (a job
cancelled before it started leaves no log at all). Status and the retry
policy both read stages through `classify`.

States: done, running, pending, blocked (waiting on an input that failed or
was cancelled: it will never run), failed, not submitted. Failure classes
are exactly `CLASSES` (the README lists them); "killed" and "exited" carry
the signal or the exit code in their name.
"""
from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from synscale.plan import state
from synscale.plan.outputs import damaged

STATES = ("done", "running", "pending", "blocked", "failed", "not submitted")
CLASSES = ("python exception", "out of memory", "out of GPU memory", "timeout", "preemption",
           "node failure", "cancelled", "infrastructure", "input damaged", "damaged",
           "killed (signal N)", "exited (code N)", "unknown")
# What a relaunch may resubmit without being asked: the cluster's doing, not the stage's.
# (Out of GPU memory: the retry computes the same global batch in smaller micro batches;
# damaged: its outputs are not what its DONE lists, plan/outputs.py; input damaged: the
# input, found damaged and marked so, is redone first.)
RETRIED = {"out of memory", "out of GPU memory", "timeout", "preemption", "node failure",
           "cancelled", "infrastructure", "input damaged", "damaged", "killed", "unknown"}

# squeue lists live jobs only; of those, these have started.
RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
# sacct states that end a job without DONE, and the failure class each means
# (FAILED alone says only "non-zero exit": the exit code or the log says more).
FAILURE_CLASSES = {"OUT_OF_MEMORY": "out of memory", "TIMEOUT": "timeout",
                   "DEADLINE": "timeout", "NODE_FAIL": "node failure",
                   "BOOT_FAIL": "node failure", "PREEMPTED": "preemption",
                   "CANCELLED": "cancelled", "REVOKED": "cancelled"}
# slurmstepd's own words in the job's log, most specific first.
KILL_MESSAGES = [
    (re.compile(r"exceeded (job )?memory limit|oom[-_ ]kill", re.I), "out of memory"),
    (re.compile(r"CANCELLED AT \S+ DUE TO TIME LIMIT"), "timeout"),
    (re.compile(r"CANCELLED AT \S+ DUE TO PREEMPTION"), "preemption"),
    (re.compile(r"DUE TO NODE FAILURE"), "node failure"),
    (re.compile(r"\*\*\* (JOB|STEP) \S+ ON \S+ CANCELLED AT \S+( \*\*\*| DUE TO JOB REQUEUE)"),
     "cancelled"),
]
# srun's report of a task that did not exit 0: "srun: error: node1: task 0: Killed"
SRUN_TASK = re.compile(r"srun: error: \S+: tasks? [\d\-,]+: (.+)$")
SRUN_NODE_FAILURE = re.compile(r"srun: error: Node failure on \S+")
SIGNAL_NAMES = {signal.strsignal(s): int(s) for s in signal.Signals if signal.strsignal(s)}


class Queued(NamedTuple):
    """One squeue line."""
    state: str          # PENDING, RUNNING, ...; NEVER when its dependency can never be met
    restarts: int = 0   # times Slurm or submitit requeued it
    reason: str = ""    # why it is pending (squeue's Reason: JobHeldUser, Dependency, ...)
    comment: str = ""   # the job's comment: synscale's intent token (backends/records.py)


class Accounted(NamedTuple):
    """One job (array task) in sacct: its current state and what came before."""
    state: str                  # COMPLETED, FAILED, NODE_FAIL, ... ("CANCELLED by 0" -> CANCELLED)
    exit_code: int = 0
    signal: int = 0
    earlier: tuple = ()         # states of earlier attempts (requeues), oldest first


@dataclass(frozen=True)
class Verdict:
    state: str          # one of STATES
    klass: str = ""     # for failed: one of CLASSES, N filled in
    message: str = ""   # the traceback's last line, Slurm's words, or why it is blocked
    note: str = ""      # for a live stage: how often and why it was requeued


def retried_by_default(klass: str) -> bool:
    return klass.split(" (")[0] in RETRIED


def classify(folder: Path, job: str | None, queue: dict | None, acct: dict | None,
             log: Path | None = None) -> Verdict:
    """`queue`: squeue by job id, `Queued` or a bare state (None: not a Slurm
    run); `acct`: sacct by job id (`Accounted` or a bare state), or None where
    accounting is off; `log`: the job's Slurm output file."""
    if state.is_done(folder):
        return Verdict("done")
    error = folder / "error.json"
    if queue is None or job is None:
        alive = state.attempt_alive(folder)  # None: ran on another host, if at all
        if alive or (alive is None and state.heartbeat_fresh(folder) and not error.exists()):
            return Verdict("running")
        if error.exists():
            return _from_error(error)
        why = damaged(folder)
        if why:
            return Verdict("failed", "damaged", why)
        if alive is False:  # its process on this host is gone, leaving no record
            return Verdict("failed", "unknown", "its process died without finishing or a "
                                                "record (killed?); relaunch to rerun it")
        return Verdict("pending" if queue is None else "not submitted")
    live = queue.get(job)
    if live is not None:
        live = live if isinstance(live, Queued) else Queued(live)
        note = _requeue_note(live.restarts, _accounted(acct, job), log)
        if live.state == "NEVER":
            return Verdict("blocked", message="waits on an input that failed or was cancelled; "
                                              "a relaunch resubmits both", note=note)
        return Verdict("running" if live.state in RUNNING else "pending", note=note)
    # It left the queue without DONE: its process is gone, whatever its last heartbeat.
    why = damaged(folder)
    if why:  # it finished, and was found damaged since
        return Verdict("failed", "damaged", why)
    if error.exists():
        return _from_error(error)
    from_log = log_verdict(log)
    if from_log:
        return from_log
    acct_entry = _accounted(acct, job)
    if acct is not None and acct_entry is None:
        return Verdict("pending")  # submitted moments ago, not yet in the database
    if acct_entry is not None:
        return _from_accounting(acct_entry)
    if log is not None and not log.exists() and not (folder / "attempt.json").exists():
        # Without accounting: no log means no attempt ever started, so it was
        # cancelled while pending (by scancel, or with a dead dependency).
        return Verdict("failed", "cancelled", "left the queue before it started")
    return _from_exit_record(folder)


def _accounted(acct: dict | None, job: str) -> Accounted | None:
    """sacct's entry for an array task, or the whole array's (a pending array
    cancelled at once is one line, '12' or '12_[0-3%2]', expanded on reading)."""
    if acct is None:
        return None
    entry = acct.get(job)
    if entry is None and "_" in job:
        entry = acct.get(job.split("_")[0])
    if entry is None:
        return None
    return entry if isinstance(entry, Accounted) else Accounted(entry)


def _from_error(path: Path) -> Verdict:
    rec = state.read_json(path)
    return Verdict("failed", rec.get("class", "python exception"), rec["error"])


def _from_accounting(a: Accounted) -> Verdict:
    if a.state in FAILURE_CLASSES:
        return Verdict("failed", FAILURE_CLASSES[a.state], a.state)
    if a.signal:
        return Verdict("failed", f"killed (signal {a.signal})", _signal_name(a.signal))
    if a.exit_code > 128:  # a shell reports a task killed by signal N as 128 + N
        return Verdict("failed", f"killed (signal {a.exit_code - 128})",
                       _signal_name(a.exit_code - 128))
    if a.state == "COMPLETED":
        # exited 0 without DONE: the worker returned early without finishing
        return Verdict("failed", "exited (code 0)", "the job completed without marking the "
                                                    "stage done")
    return Verdict("failed", f"exited (code {a.exit_code})", a.state)


def _signal_name(number: int) -> str:
    try:
        return signal.strsignal(number) or f"signal {number}"
    except ValueError:
        return f"signal {number}"


def _requeue_note(restarts: int, acct: Accounted | None, log: Path | None) -> str:
    if not restarts:
        return ""
    # submitit logs each requeue it asks for (a checkpoint at USR2); sacct
    # records why Slurm requeued the others (REQUEUED: scontrol requeue)
    asked = _last_attempt(log, whole=True).count("Requeued job ") if log else 0
    why = ["checkpointed at USR2"] * min(asked, restarts)
    if acct is not None:
        earlier = list(acct.earlier)
        for _ in range(len(why)):  # submitit's own requeues are REQUEUED in sacct too
            if "REQUEUED" in earlier:
                earlier.remove("REQUEUED")
        why += [REQUEUE_REASONS.get(s, s.lower()) for s in earlier]
    why += ["by Slurm (node failure or preemption)"] * max(0, restarts - len(why))
    return f"requeued {restarts}x: " + ", ".join(dict.fromkeys(why))


REQUEUE_REASONS = {**FAILURE_CLASSES, "REQUEUED": "scontrol requeue", "TIMEOUT": "time limit"}


def _last_attempt(log: Path | None, whole: bool = False) -> str:
    """A requeued job appends to the same log; the text after the last line
    submitit writes when a job starts is the last attempt's."""
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace")
    if whole:
        return text
    return text[max(text.rfind("Starting with JobEnvironment"), 0):]


def log_verdict(log: Path | None) -> Verdict | None:
    """How the job's last attempt ended, where Slurm's tools said so in its log."""
    text = _last_attempt(log)
    lines = text.splitlines()
    stepd = [line for line in lines if "slurmstepd" in line]
    for pattern, klass in KILL_MESSAGES:
        for line in stepd:
            if pattern.search(line):
                return Verdict("failed", klass, line.split("error:", 1)[-1].strip(" *"))
    for line in lines:
        if SRUN_NODE_FAILURE.search(line):  # srun saw the node go; the step died with it
            return Verdict("failed", "node failure", line.strip())
        match = SRUN_TASK.search(line)
        if not match:
            continue
        what = match.group(1).strip()
        code = re.match(r"Exited with exit code (\d+)", what)
        if code:
            return Verdict("failed", f"exited (code {code.group(1)})", line.strip())
        number = SIGNAL_NAMES.get(what.removesuffix(" (core dumped)"))
        if number:
            return Verdict("failed", f"killed (signal {number})", line.strip())
    return None


def exception_class(e: BaseException) -> str:
    """The class of an exception a stage raised: most are bugs, a few are the cluster's."""
    chain = _chain(e)
    if any(_gpu_out_of_memory(x) for x in chain):
        return "out of GPU memory"
    names = {type(x).__name__ for x in (e, e.__cause__, e.__context__) if x is not None}
    if "InputDamaged" in names:
        return "input damaged"
    if "UncompletedJobError" in names:
        # submitit's: timed out too many times, or no checkpoint at the time limit
        return "timeout"
    text = str(e)
    if names & {"DistNetworkError", "DistStoreError"} or "EADDRINUSE" in text or \
            "Address already in use" in text:
        return "infrastructure"  # rendezvous or network: retried, not a bug
    return "python exception"


def _chain(e: BaseException, most: int = 16) -> list[BaseException]:
    """`e` and the exceptions it wraps (raise ... from, or raised while handling)."""
    out: list[BaseException] = []
    while e is not None and len(out) < most and all(e is not x for x in out):
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _gpu_out_of_memory(e: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, by type (torch is loaded wherever one was
    raised; status need not import it to classify error.json)."""
    import sys
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(e, torch.cuda.OutOfMemoryError)


def _from_exit_record(folder: Path) -> Verdict:
    path = folder / "exit.json"
    if not path.exists():  # SIGKILL leaves no record, and without accounting nothing says why
        return Verdict("failed", "unknown", "left the queue without finishing or a record")
    rec = state.read_json(path)
    left = rec.get("time_left_s")
    if left is not None and left <= 60:
        return Verdict("failed", "timeout", "SIGTERM at the time limit")
    return Verdict("failed", "cancelled", "SIGTERM before the time limit (scancel)")


def parse_sacct(text: str) -> dict[str, Accounted]:
    """`sacct -n -P -X -D -o JobID,State,ExitCode` -> job id -> Accounted.

    Array ranges ('12_[0-3,7%2]', what sacct prints for tasks that never
    left the pending array) are expanded to one entry per task; with -D a
    requeued job has a line per attempt, the last one current."""
    out: dict[str, Accounted] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 3:
            continue
        job, st, code = parts[0], parts[1].split()[0] if parts[1].split() else "", parts[2]
        exit_code, _, sig = code.partition(":")
        for one in expand_job_ids(job):
            before = out.get(one)
            earlier = (*before.earlier, before.state) if before else ()
            out[one] = Accounted(st, int(exit_code or 0), int(sig or 0), earlier)
    return out


def expand_job_ids(job: str) -> list[str]:
    """'12_[0-2,5%2]' -> ['12_0', '12_1', '12_2', '12_5']; other ids unchanged."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job)
    if not match:
        return [job]
    array, spec = match.group(1), match.group(2).split("%")[0]
    tasks: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        step = 1
        if ":" in hi:
            hi, step_text = hi.split(":")
            step = int(step_text)
        tasks += range(int(lo), int(hi or lo) + 1, step)
    return [f"{array}_{t}" for t in tasks]

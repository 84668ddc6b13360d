"""Submission records (slurm/submissions.json), kept consistent with the queue
whatever moment a launch is killed at.

Submitting an array and recording it are two steps, and a launch can die
between them (a login node's OOM killer, a closed SSH session, Ctrl-C
twice). So each array goes through four, each safe to stop after:

1. intent: the stages of the array in task order (with its kind, resources
   and dependencies) are journalled under a new intent id;
2. sbatch --hold, with `synscale:<run token>:<intent id>` as the job's
   comment, which Slurm keeps with the job;
3. the array's tasks are journalled against their stages;
4. the launch releases what it submitted (`scontrol release`, one call).

A relaunch (and status, in memory only) first `adopt`s: an intent whose
comment is in the queue was submitted (its job is recorded now); an intent
with no job never reached Slurm, or its job already ended (dropped: the
stages' folders say how it went); a recorded job never released is
released. Held jobs cannot start, so nothing runs before it is recorded.
The run token is a hash of the run directory's path (jobs of a run moved
elsewhere would fail anyway: they name the old path). A job of this run
that carries an intent the records do not know (they were deleted or
restored from a copy) cannot be mapped to stages: the relaunch cancels it,
so its stages are queued once, by the relaunch.

Steps 1 and 3 append a line to a journal (slurm/submissions.<n>.log)
rather than rewrite the records: at a million stages the records are
157 MB as written, and rewriting them after each of a thousand arrays
would write 157 GB. A launch folds the journal into submissions.json once,
at its end (`compact`); a line cut short by a kill is the last one and is
ignored, since its step had not finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from synscale.plan import state

HELD_BY_USER = "JobHeldUser"  # squeue's reason for a job submitted with --hold


def path(run) -> Path:
    return run.root / "slurm" / "submissions.json"


def _journal(run, generation: int) -> Path:
    return run.root / "slurm" / f"submissions.{generation}.log"


def load(run) -> dict:
    """The records as the last launch left them, its journal replayed."""
    p = path(run)
    records = state.read_json(p) if p.exists() else {}
    for key, empty in (("stages", {}), ("arrays", []), ("attempts", {}), ("resources", {}),
                       ("intents", {}), ("unreleased", []), ("blocked", {}),
                       ("generation", 0)):
        records.setdefault(key, empty)
    journal = _journal(run, records["generation"])
    if journal.exists():
        for line in journal.read_text().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                break  # cut short by a kill: its step never finished
            _apply(records, event)
    return records


def compact(run, records: dict) -> None:
    """Write the records whole and start an empty journal. A kill between
    the two leaves the old journal, which the new generation no longer reads."""
    old = records["generation"]
    records["generation"] = old + 1
    state.write_json(path(run), records)
    _journal(run, old).unlink(missing_ok=True)


def needs_compacting(run, records: dict) -> bool:
    """Whether the records on disk differ from `records`' file: none yet (a
    first launch: status then knows it is a Slurm run), or a journal to fold."""
    return not path(run).exists() or _journal(run, records["generation"]).exists()


def journal(run, records: dict, event: dict) -> None:
    """Apply `event` to the records and append it to the journal, on disk
    before this returns."""
    _apply(records, event)
    target = _journal(run, records["generation"])
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a") as f:
        f.write(json.dumps(event, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _apply(records: dict, event: dict) -> None:
    op = event["op"]
    if op == "intend":
        records["intents"][event["intent"]] = event["what"]
    elif op == "record":
        _record(records, event["intent"], event["job"])
    elif op == "blocked":  # jobs a relaunch cancelled because an input stays failed
        records["blocked"].update(event["stages"])
    elif op == "release":
        gone = set(event["jobs"])
        records["unreleased"] = [j for j in records["unreleased"] if j not in gone]


def token(run) -> str:
    return hashlib.sha256(str(Path(run.root).resolve()).encode()).hexdigest()[:12]


def comment(run, intent: str) -> str:
    return f"synscale:{token(run)}:{intent}"


def intend(run, records: dict, kind: str, stages: list[str], resources: dict,
           dependency: list[str], how: str, hold: bool) -> str:
    """Step 1: what is about to be submitted, journalled; its intent id."""
    intent = uuid.uuid4().hex[:12]
    journal(run, records, {"op": "intend", "intent": intent,
                           "what": {"kind": kind, "stages": stages, "resources": resources,
                                    "dependency": dependency, "dependency_type": how,
                                    "held_by_request": hold}})
    return intent


def record(run, records: dict, intent: str, job_id: str) -> None:
    """Step 3: the job (the array's id, or the one job's) holds the intent's
    stages, task i the i-th."""
    journal(run, records, {"op": "record", "intent": intent, "job": job_id})


def _record(records: dict, intent: str, job_id: str) -> None:
    it = records["intents"].pop(intent)
    if not it["held_by_request"]:
        records["unreleased"].append(job_id)
    if it["kind"] == "analysis":
        records["analysis"], records["analysis_after"] = job_id, it["dependency"]
        return
    single = len(it["stages"]) == 1
    for index, sid in enumerate(it["stages"]):
        records["stages"][sid] = job_id if single else f"{job_id}_{index}"
        records["attempts"][sid] = records["attempts"].get(sid, 0) + 1
        records["resources"][sid] = {k: it["resources"][k]
                                     for k in ("mem_gb", "time_min", "micro_batch_size")}
    records["arrays"].append({"job_id": job_id, "kind": it["kind"], "tasks": len(it["stages"]),
                              "dependency": it["dependency"],
                              "dependency_type": it["dependency_type"],
                              "resources": it["resources"]})


@dataclass
class Adoption:
    adopted: dict[str, dict] = field(default_factory=dict)  # job id -> the intent it carried
    dropped: list[str] = field(default_factory=list)        # intents that reached no job
    release: list[str] = field(default_factory=list)        # recorded jobs never released
    unknown: list[str] = field(default_factory=list)        # this run's jobs nothing maps


def adopt(run, records: dict, live: dict) -> Adoption:
    """Step 3 for every intent whose job is in the queue (`live`: squeue's
    job -> Queued, with comments), in `records` (in memory: the caller
    compacts them, or only looks)."""
    mine = f"synscale:{token(run)}:"
    jobs: dict[str, str] = {}  # intent -> job id (the array's, or the one job's)
    queued = {task.split("_")[0] for task in live}
    for task, q in live.items():
        if q.comment.startswith(mine):
            jobs[q.comment[len(mine):]] = task.split("_")[0]
    out = Adoption()
    for intent in list(records["intents"]):
        if intent in jobs:
            out.adopted[jobs[intent]] = records["intents"][intent]
            _record(records, intent, jobs[intent])
        else:
            out.dropped.append(intent)
            del records["intents"][intent]
    known = {a["job_id"] for a in records["arrays"]} | {records.get("analysis")}
    out.unknown = sorted(job for job in set(jobs.values()) if job not in known)
    out.release = [j for j in records["unreleased"] if j in queued]
    records["unreleased"] = list(out.release)  # those that ended need nothing
    return out


def crash_point(name: str) -> None:
    """A test hook: SYNSCALE_CRASH_AT=<name>[:<n>] kills this process (SIGKILL,
    as the OOM killer would) the n-th time (default 1st) it passes `name`.
    Points: intent (journalled, not submitted), sbatch (submitted, submitit's
    bookkeeping not done), recorded (recorded, not released)."""
    spec = os.environ.get("SYNSCALE_CRASH_AT", "")
    if not spec or spec.split(":")[0] != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    nth = int(spec.split(":")[1]) if ":" in spec else 1
    if _passed[name] == nth:
        os.kill(os.getpid(), signal.SIGKILL)


def crash_armed(name: str) -> bool:
    return os.environ.get("SYNSCALE_CRASH_AT", "").split(":")[0] == name


_passed: dict[str, int] = {}

"""The slurm backend: the whole plan submitted at once, through submitit.

One job array per (stage kind, resource shape), split into chunks of at most
MaxArraySize tasks (each chunk indexes from 0: MaxArraySize bounds the index,
not the count), linked by afterok dependencies and capped with %N, so no
process has to stay alive on the login node. Every submitted stage is
recorded in slurm/submissions.json; a relaunch skips stages that are done
and stages whose job is still queued or running.
"""
from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from synscale.plan import state
from synscale.plan.graph import KINDS, Plan, Stage
from synscale.plan.layout import RunDir

LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING",
               "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}


@dataclass
class Submission:
    arrays: list[dict] = field(default_factory=list)  # job id, kind, tasks, dependency
    submitted: list[str] = field(default_factory=list)
    skipped_done: list[str] = field(default_factory=list)
    skipped_live: list[str] = field(default_factory=list)


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def max_array_size() -> int:
    out = _run(["scontrol", "show", "config"])
    if out.returncode != 0:
        raise RuntimeError(f"scontrol show config failed: {out.stderr.strip()}")
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out.stdout, re.M)
    return int(match.group(1)) if match else 1001  # Slurm's documented default


def queue_states() -> dict[str, str]:
    """job id (array tasks as '<array>_<index>') -> state, in one squeue call.

    A job pending on a dependency that can never be satisfied (an input was
    cancelled or failed) will never run: it is reported as NEVER, so that a
    relaunch replaces it instead of waiting on it forever."""
    out = _run(["squeue", "--me", "-h", "-r", "-o", "%i|%T|%r"])
    if out.returncode != 0:
        raise RuntimeError(f"squeue failed: {out.stderr.strip()}")
    states = {}
    for line in out.stdout.splitlines():
        job, st, reason = (line.split("|") + ["", ""])[:3]
        states[job] = "NEVER" if reason == "DependencyNeverSatisfied" else st
    return states


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        _run(["scancel", *job_ids])


def accounting_states(arrays: list[str]) -> dict[str, str] | None:
    """job id -> sacct state, in one call; None where accounting is off."""
    if not arrays:
        return {}
    out = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(arrays), "-o", "JobID,State"])
    if out.returncode != 0 or "accounting storage is disabled" in out.stdout + out.stderr:
        return None
    # "CANCELLED by 0" -> "CANCELLED"
    return {job: st.split()[0] for job, st in
            (line.split("|", 1) for line in out.stdout.splitlines() if "|" in line)}


def records_path(run: RunDir) -> Path:
    return run.root / "slurm" / "submissions.json"


def load_records(run: RunDir) -> dict:
    path = records_path(run)
    return state.read_json(path) if path.exists() else {"stages": {}, "arrays": []}


def chunks(stages: list[Stage], size: int) -> list[list[Stage]]:
    return [stages[i:i + size] for i in range(0, len(stages), size)]


def _executor(run: RunDir, study, profile, kind: str):
    import submitit

    r = study.resources[kind]
    ex = submitit.SlurmExecutor(folder=run.root / "slurm" / "%j", max_num_timeout=3)
    params = dict(job_name=f"{study.study.name}-{kind}", time=r.time_min, nodes=r.nodes,
                  ntasks_per_node=r.tasks_per_node, cpus_per_task=r.cpus,
                  mem=f"{int(r.mem_gb * 1024)}M", array_parallelism=r.max_parallel,
                  setup=list(profile.setup), stderr_to_stdout=True)
    if r.gpus:
        params["gpus_per_node"] = r.gpus
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            params[key] = getattr(profile, key)
    ex.update_parameters(**params)
    return ex


def submit_plan(plan: Plan, run: RunDir, study, profile) -> Submission:
    from synscale.backends.worker import run_stage

    records = load_records(run)
    live = queue_states()
    kinds = {s.id: s.kind for s in plan.stages}
    out = Submission()
    job_of: dict[str, str] = {}      # stage id -> job id (task) it waits on
    array_of: dict[str, str] = {}    # stage id -> array job id, for stages submitted now
    todo: dict[str, list[Stage]] = defaultdict(list)
    for s in plan.order():
        if state.is_done(run.stage(s.kind, s.id)):
            out.skipped_done.append(s.id)
        elif records["stages"].get(s.id) in live and live[records["stages"][s.id]] in LIVE_STATES:
            out.skipped_live.append(s.id)
            job_of[s.id] = records["stages"][s.id]
        else:
            todo[s.kind].append(s)
    # Jobs stuck behind a dead dependency: drop them from the queue, they are resubmitted.
    cancel([records["stages"][s.id] for k in todo for s in todo[k]
            if live.get(records["stages"].get(s.id, "")) == "NEVER"])
    size = max_array_size()
    for kind in KINDS:  # kinds in data-flow order: inputs are submitted first
        for chunk in chunks(todo[kind], size):
            deps = sorted({array_of.get(i) or job_of[i] for s in chunk for i in s.inputs
                           if i in array_of or i in job_of})
            ex = _executor(run, study, profile, kind)
            if deps:
                ex.update_parameters(dependency="afterok:" + ":".join(deps))
            with ex.batch():
                jobs = [ex.submit(run_stage, str(run.root), s, {i: kinds[i] for i in s.inputs})
                        for s in chunk]
            array_id = jobs[0].job_id.split("_")[0]
            for s, job in zip(chunk, jobs):
                array_of[s.id] = array_id
                records["stages"][s.id] = job.job_id
                out.submitted.append(s.id)
            out.arrays.append({"job_id": array_id, "kind": kind, "tasks": len(chunk),
                               "dependency": deps})
            records["arrays"].append(out.arrays[-1])
            state.write_json(records_path(run), records)
    return out

"""The slurm backend: the whole plan submitted at once, through submitit.

One job array per (stage kind, resource shape), split into chunks of at most
MaxArraySize tasks (each chunk indexes from 0: MaxArraySize bounds the index,
not the count), linked by afterok dependencies and capped with %N, so no
process has to stay alive on the login node. An array whose tasks each read
one task of an array submitted with it follows that one task by task
(aftercorr; see `batches`). Every submitted stage is
recorded in slurm/submissions.json; a relaunch skips stages that are done
and stages whose job is still queued or running.

What to submit, skip, retry or cancel is decided from data by decide.py;
this module asks Slurm (squeue, sacct, scontrol) and submits.
"""
from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from synscale.backends.decide import (
    SQUEUE_FORMAT,
    batches,
    decide,
    parse_max_array_size,
    parse_squeue,
    with_micro_batch,
)
from synscale.backends.failures import Accounted, Queued, classify, parse_sacct
from synscale.plan import state
from synscale.plan.graph import KINDS, Plan
from synscale.plan.layout import RunDir


@dataclass
class Submission:
    arrays: list[dict] = field(default_factory=list)  # job id, kind, tasks, dependency
    submitted: list[str] = field(default_factory=list)
    skipped_done: list[str] = field(default_factory=list)
    skipped_live: list[str] = field(default_factory=list)
    not_retried: dict[str, str] = field(default_factory=dict)  # stage id -> why
    retried: dict[str, str] = field(default_factory=dict)      # stage id -> class, new request
    analysis: str = ""   # the job that writes results/ once the evaluations end


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def max_array_size() -> int:
    out = _run(["scontrol", "show", "config"])
    if out.returncode != 0:
        raise RuntimeError(f"scontrol show config failed: {out.stderr.strip()}")
    return parse_max_array_size(out.stdout)


def queue_states() -> dict[str, Queued]:
    """job id (array tasks as '<array>_<index>') -> Queued, in one squeue call
    (decide.parse_squeue: NEVER for a dependency that can never be met)."""
    out = _run(["squeue", "--me", "-h", "-r", "-O", SQUEUE_FORMAT])
    if out.returncode != 0:
        raise RuntimeError(f"squeue failed: {out.stderr.strip()}")
    return parse_squeue(out.stdout)


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        _run(["scancel", *job_ids])


def accounting_states(arrays: list[str]) -> dict[str, Accounted] | None:
    """job id -> Accounted (state, exit code, signal, earlier attempts), in
    one call; None where accounting is off."""
    if not arrays:
        return {}
    out = _run(["sacct", "-n", "-P", "-X", "-D", "-j", ",".join(arrays),
                "-o", "JobID,State,ExitCode"])
    if out.returncode != 0 or "accounting storage is disabled" in out.stdout + out.stderr:
        return None
    return parse_sacct(out.stdout)


def records_path(run: RunDir) -> Path:
    return run.root / "slurm" / "submissions.json"


def job_log(run: RunDir, job: str) -> Path:
    """The Slurm output of a job (array task '<array>_<index>'), where
    submitit's `folder` puts it (stderr joins stdout)."""
    return run.root / "slurm" / job / f"{job}_0_log.out"


def load_records(run: RunDir) -> dict:
    path = records_path(run)
    return state.read_json(path) if path.exists() else {"stages": {}, "arrays": []}


def _executor(run: RunDir, study, profile, kind: str, r, code_dir=None):
    import shlex

    import submitit

    from synscale.backends.code import snapshot

    # The job imports the copy of synscale made at submission, not the
    # checkout as it is when the job starts (backends/code.py): tasks start in
    # it (python -m puts the cwd first on sys.path) and it leads PYTHONPATH.
    # A `cd` rather than sbatch --chdir: update_parameters(additional_parameters=)
    # (hold) replaces that dict, and srun starts its tasks in the batch cwd.
    pinned = shlex.quote(str(code_dir or snapshot(run.root).folder))
    pin = [f"cd {pinned}", f"export PYTHONPATH={pinned}${{PYTHONPATH:+:$PYTHONPATH}}"]

    ex = submitit.SlurmExecutor(folder=run.root / "slurm" / "%j", max_num_timeout=3)
    params = dict(signal_delay_s=signal_delay_s(r.time_min), job_name=f"{study.study.name}-{kind}",
                  time=r.time_min, nodes=r.nodes, ntasks_per_node=r.tasks_per_node,
                  cpus_per_task=r.cpus, mem=f"{int(r.mem_gb * 1024)}M",
                  array_parallelism=r.max_parallel, setup=list(profile.setup) + pin,
                  stderr_to_stdout=True)
    if r.gpus:
        params["gpus_per_node"] = r.gpus
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            params[key] = getattr(profile, key)
    ex.update_parameters(**params)
    return ex


def submit_plan(plan: Plan, run: RunDir, study, profile, hold: bool = False,
                code_dir: Path | None = None) -> Submission:
    """Submit every stage that is neither done nor queued. `hold` submits the
    jobs held (sbatch --hold), for benchmarks that must not run them. The jobs
    import synscale from `code_dir` (code.snapshot; made here when None)."""
    from synscale.backends.worker import StageTask

    records = load_records(run)
    records.setdefault("attempts", {})
    records.setdefault("resources", {})
    live = queue_states()
    acct = accounting_states(sorted({a["job_id"] for a in records["arrays"]}))
    kinds = {s.id: s.kind for s in plan.stages}
    done = {s.id for s in plan.stages if state.is_done(run.stage(s.kind, s.id))}
    plan_of = decide(plan, done, state.needed_again(plan, run), records, live,
                     lambda s, job: classify(run.stage(s.kind, s.id), job, live, acct,
                                             job_log(run, job)),
                     study.resources, study.retry, profile)
    out = Submission(skipped_done=plan_of.skipped_done, skipped_live=list(plan_of.skipped_live),
                     not_retried=plan_of.not_retried,
                     retried={i: _retry_note(v, before, after, run.stage(kinds[i], i))
                              for i, (v, before, after) in plan_of.retried.items()})
    job_of = dict(plan_of.skipped_live)  # stage id -> job (task) it waits on
    task_of: dict[str, tuple[str, int]] = {}  # stage id -> (array id, task), submitted now
    array_tasks: dict[str, int] = {}
    todo = plan_of.submit
    cancel(plan_of.cancel)
    size = max_array_size()
    # Kinds in data-flow order, so inputs are submitted first; one array per
    # (kind, resource shape): a retry with more memory gets its own.
    shapes = sorted(todo, key=lambda key: (KINDS.index(key[0]), str(key[1])))
    for kind, resources in shapes:
        for chunk, follows in batches(todo[(kind, resources)], size, task_of, array_tasks):
            if follows:
                deps, how = [follows], "aftercorr"
            else:
                deps, how = sorted({task_of[i][0] if i in task_of else job_of[i] for s in chunk
                                    for i in s.inputs if i in task_of or i in job_of}), "afterok"
            ex = _executor(run, study, profile, kind, resources, code_dir)
            if deps:
                ex.update_parameters(dependency=f"{how}:" + ":".join(deps))
            if hold:
                ex.update_parameters(additional_parameters={"hold": True})
            with ex.batch():
                # absolute: the job starts in the code folder, not the launch's
                jobs = [ex.submit(StageTask(str(run.root.resolve()),
                                            with_micro_batch(s, resources),
                                            {i: kinds[i] for i in s.inputs}))
                        for s in chunk]
            array_id = jobs[0].job_id.split("_")[0]
            array_tasks[array_id] = len(chunk)
            for index, (s, job) in enumerate(zip(chunk, jobs)):
                task_of[s.id] = (array_id, index)
                records["stages"][s.id] = job.job_id
                records["attempts"][s.id] = records["attempts"].get(s.id, 0) + 1
                records["resources"][s.id] = {"mem_gb": resources.mem_gb,
                                              "time_min": resources.time_min,
                                              "micro_batch_size": resources.micro_batch_size}
                out.submitted.append(s.id)
            out.arrays.append({"job_id": array_id, "kind": kind, "tasks": len(chunk),
                               "dependency": deps, "dependency_type": how if deps else "",
                               "resources": asdict(resources)})
            records["arrays"].append(out.arrays[-1])
            state.write_json(records_path(run), records)
    evaluations = sorted({a["job_id"] for a in out.arrays if a["kind"] == "evaluate"} |
                         {job_of[s.id].split("_")[0] for s in plan.of_kind("evaluate")
                          if s.id in job_of})
    old = records.get("analysis")
    if old in live:  # it waits on fewer evaluations than there are now
        cancel([old])
    if evaluations:
        out.analysis = _submit_analysis(run, study, profile, evaluations, hold, code_dir)
        records["analysis"] = out.analysis
        state.write_json(records_path(run), records)
    return out


def _retry_note(verdict, before, after, folder: Path) -> str:
    """What a retry changes, and for a timeout how long start-up took."""
    note = verdict.klass
    if after.mem_gb != before.mem_gb:
        note += f": mem_gb {before.mem_gb:g} -> {after.mem_gb:g}"
    if after.time_min != before.time_min:
        note += f": time_min {before.time_min} -> {after.time_min}"
    if after.micro_batch_size != before.micro_batch_size:
        note += f": micro_batch_size -> {after.micro_batch_size}"
    startup = folder / "startup.json"
    if verdict.klass == "timeout" and startup.exists():
        seconds = state.read_json(startup)["seconds"]
        warned = before.time_min * 60 - signal_delay_s(before.time_min)
        if seconds >= warned:
            note += (f" (start-up took {seconds:g} s; time_min = {before.time_min} warns "
                     f"{warned} s in, before the first checkpoint)")
    return note


def signal_delay_s(time_min: int) -> int:
    """USR2 (checkpoint, requeue) comes this long before the time limit:
    submitit's 90 s, less for short limits, which it would otherwise signal
    the moment they start."""
    return min(90, time_min * 15)


def _submit_analysis(run: RunDir, study, profile, evaluations: list[str], hold: bool,
                     code_dir: Path | None) -> str:
    """One small CPU job, after every evaluation array ends however it ends
    (afterany), that gathers, fits and writes results/: a Slurm study gets its
    results with no process left on the login node."""
    from synscale.results import analyze_run
    from synscale.study.schema import Resources

    r = Resources(cpus=2, mem_gb=min(8.0, profile.max_mem_gb),
                  time_min=min(60, profile.max_time_min))
    ex = _executor(run, study, profile, "analysis", r, code_dir)
    ex.update_parameters(dependency="afterany:" + ":".join(evaluations))
    if profile.analysis_partition:
        ex.update_parameters(partition=profile.analysis_partition)
    if hold:
        ex.update_parameters(additional_parameters={"hold": True})
    return ex.submit(analyze_run, str(Path(run.root).resolve())).job_id

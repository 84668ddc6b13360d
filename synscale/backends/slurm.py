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

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from synscale.backends import records
from synscale.backends.decide import batches, decide, with_micro_batch
from synscale.backends.failures import Queued, classify
from synscale.backends.slurmctl import (  # noqa: F401 (status, cancel and tests ask here)
    SlurmError,
    accounting_states,
    cancel,
    max_array_size,
    queue_states,
    release,
)
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


def records_path(run: RunDir) -> Path:
    return records.path(run)


def job_log(run: RunDir, job: str) -> Path:
    """The Slurm output of a job (array task '<array>_<index>'), where
    submitit's `folder` puts it (stderr joins stdout)."""
    return run.root / "slurm" / job / f"{job}_0_log.out"


def load_records(run: RunDir, live: dict[str, Queued] | None = None) -> dict:
    """The submission records; with `live` (squeue), as a relaunch would
    adopt them (records.adopt), without writing anything."""
    recs = records.load(run)
    if live is not None:
        records.adopt(run, recs, live)
    return recs


MAX_NUM_TIMEOUT = 3  # submitit requeues a timed-out job this many times


def _executor(run: RunDir, study, profile, kind: str, r, code_dir, comment: str):
    import shlex

    import submitit

    from synscale.backends.code import snapshot

    # The job imports the copy of synscale made at submission, not the
    # checkout as it is when the job starts (backends/code.py): tasks start in
    # it (python -m puts the cwd first on sys.path) and it leads PYTHONPATH.
    # A `cd` rather than sbatch --chdir: srun starts its tasks in the batch cwd.
    pinned = shlex.quote(str(code_dir or snapshot(run.root).folder))
    pin = [f"cd {pinned}", f"export PYTHONPATH={pinned}${{PYTHONPATH:+:$PYTHONPATH}}"]

    ex = submitit.SlurmExecutor(folder=run.root / "slurm" / "%j", max_num_timeout=MAX_NUM_TIMEOUT)
    params = dict(signal_delay_s=signal_delay_s(r.time_min), job_name=f"{study.study.name}-{kind}",
                  time=r.time_min, nodes=r.nodes, ntasks_per_node=r.tasks_per_node,
                  cpus_per_task=r.cpus, mem=f"{int(r.mem_gb * 1024)}M",
                  array_parallelism=r.max_parallel, setup=list(profile.setup) + pin,
                  stderr_to_stdout=True, comment=comment,
                  # held until recorded and released (records.py)
                  additional_parameters={"hold": True})
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
    jobs held (sbatch --hold) and leaves them so, for benchmarks that must not
    run them. The jobs import synscale from `code_dir` (code.snapshot; made
    here when None). Each array is journalled before sbatch and recorded
    after it, held until the launch ends (records.py): a launch killed at any
    point leaves nothing the next one does not find."""
    recs = records.load(run)
    live = queue_states()
    _adopt(run, plan, recs, live, profile)
    acct = accounting_states(sorted({a["job_id"] for a in recs["arrays"]}))
    kinds = {s.id: s.kind for s in plan.stages}
    done = {s.id for s in plan.stages if state.is_done(run.stage(s.kind, s.id))}
    plan_of = decide(plan, done, state.needed_again(plan, run), recs, live,
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
    if plan_of.blocked:
        records.journal(run, recs, {"op": "blocked", "stages": plan_of.blocked})
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
            intent = records.intend(run, recs, kind, [s.id for s in chunk], asdict(resources),
                                    deps, how if deps else "", hold)
            records.crash_point("intent")
            ex = _executor(run, study, profile, kind, resources, code_dir,
                           records.comment(run, intent))
            if deps:
                ex.update_parameters(dependency=f"{how}:" + ":".join(deps))
            with _sbatch_said(), _crash_after_sbatch(), ex.batch():  # (submits as it closes)
                jobs = [ex.submit(_task(run, s, resources, kinds)) for s in chunk]
            array_id = jobs[0].job_id.split("_")[0]
            records.record(run, recs, intent, array_id)
            records.crash_point("recorded")
            array_tasks[array_id] = len(chunk)
            for index, s in enumerate(chunk):
                task_of[s.id] = (array_id, index)
                out.submitted.append(s.id)
            out.arrays.append(recs["arrays"][-1])
    evaluations = sorted({a["job_id"] for a in out.arrays if a["kind"] == "evaluate"} |
                         {job_of[s.id].split("_")[0] for s in plan.of_kind("evaluate")
                          if s.id in job_of})
    old = recs.get("analysis")
    if old in live and recs.get("analysis_after") == evaluations:
        out.analysis = old  # queued, after the evaluations there are
    elif old in live:  # it waits on other evaluations than there are now
        cancel([old])
    if evaluations and not out.analysis:
        intent = records.intend(run, recs, "analysis", [], {}, evaluations, "afterany", hold)
        records.crash_point("intent")
        out.analysis = _submit_analysis(run, study, profile, evaluations, code_dir,
                                        records.comment(run, intent))
        records.record(run, recs, intent, out.analysis)
        records.crash_point("recorded")
    _release(run, recs)
    if records.needs_compacting(run, recs):
        records.compact(run, recs)
    return out


def _task(run: RunDir, stage, resources, kinds: dict[str, str]):
    from synscale.backends.worker import StageTask

    # absolute: the job starts in the code folder, not the launch's
    return StageTask(str(run.root.resolve()), with_micro_batch(stage, resources),
                     {i: kinds[i] for i in stage.inputs})


def _adopt(run: RunDir, plan: Plan, recs: dict, live: dict[str, Queued], profile) -> None:
    """What a killed launch left (records.py): jobs submitted but not
    recorded are recorded, with the pickles submitit had not yet put in
    place (they are held: none has started); jobs of this run nothing maps
    to stages, or whose stages left the plan, are cancelled; the records
    are folded into one file before anything new is submitted."""
    import submitit
    from submitit.core.utils import DelayedSubmission

    from synscale.results import analyze_run
    from synscale.study.schema import Resources

    adoption = records.adopt(run, recs, live)
    stages = {s.id: s for s in plan.stages}
    kinds = {s.id: s.kind for s in plan.stages}
    gone = []
    for job, it in adoption.adopted.items():
        if it["kind"] != "analysis" and not all(i in stages for i in it["stages"]):
            gone.append(job)
            continue
        if it["kind"] == "analysis":
            pickles = [(job, DelayedSubmission(analyze_run, str(Path(run.root).resolve())))]
            minutes = _analysis_resources(profile).time_min
        else:
            res = Resources(**it["resources"])
            single = len(it["stages"]) == 1
            pickles = [(job if single else f"{job}_{i}", DelayedSubmission(
                _task(run, stages[sid], res, kinds))) for i, sid in enumerate(it["stages"])]
            minutes = res.time_min
        for task, delayed in pickles:
            where = submitit.core.utils.JobPaths(run.root / "slurm" / "%j", task).submitted_pickle
            if not where.exists():
                delayed.set_timeout(minutes, MAX_NUM_TIMEOUT)
                where.parent.mkdir(parents=True, exist_ok=True)
                delayed.dump(where)
    cancel(adoption.unknown + gone)
    if records.needs_compacting(run, recs):  # one write of the records, where it changes them
        records.compact(run, recs)


def _release(run: RunDir, recs: dict) -> None:
    """Step 4: one scontrol call for every job submitted or adopted held
    (not those held by request: records.intend's `hold`)."""
    if recs["unreleased"]:
        jobs = list(recs["unreleased"])
        release(jobs)
        records.journal(run, recs, {"op": "release", "jobs": jobs})


@contextlib.contextmanager
def _sbatch_said():
    """sbatch's refusal (submitit's FailedJobError, with sbatch's stderr) as
    a SlurmError: one line, and `unreachable` when the controller is gone."""
    from submitit.core.utils import FailedJobError

    try:
        yield
    except FailedJobError as e:
        raise SlurmError("sbatch", str(e)) from None


@contextlib.contextmanager
def _crash_after_sbatch():
    """The crash test's point between sbatch and submitit's own bookkeeping
    (records.crash_point "sbatch"); nothing when not armed."""
    if not records.crash_armed("sbatch"):
        yield
        return
    import submitit
    original = submitit.SlurmExecutor._submit_command

    def submit(self, command):
        job = original(self, command)
        records.crash_point("sbatch")
        return job
    submitit.SlurmExecutor._submit_command = submit
    try:
        yield
    finally:
        submitit.SlurmExecutor._submit_command = original


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


def _submit_analysis(run: RunDir, study, profile, evaluations: list[str],
                     code_dir: Path | None, comment: str) -> str:
    """One small CPU job, after every evaluation array ends however it ends
    (afterany), that gathers, fits and writes results/: a Slurm study gets its
    results with no process left on the login node."""
    from synscale.results import analyze_run

    ex = _executor(run, study, profile, "analysis", _analysis_resources(profile), code_dir,
                   comment)
    ex.update_parameters(dependency="afterany:" + ":".join(evaluations))
    if profile.analysis_partition:
        ex.update_parameters(partition=profile.analysis_partition)
    with _sbatch_said(), _crash_after_sbatch():
        return ex.submit(analyze_run, str(Path(run.root).resolve())).job_id


def _analysis_resources(profile):
    from synscale.study.schema import Resources

    return Resources(cpus=2, mem_gb=min(8.0, profile.max_mem_gb),
                     time_min=min(60, profile.max_time_min))

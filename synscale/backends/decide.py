"""What a Slurm launch does, decided from data alone: given the plan, the
run directory's records and Slurm's answers (squeue, and a verdict per
stage that left the queue), which stages are skipped (done, or queued and
still able to run), which are submitted and with what resources (a retry
after out of memory or a timeout asks for more), which stay failed and why,
and which queued jobs to cancel. No file, process or clock is read here:
backends/slurm.py gathers the answers, calls `decide`, and talks to Slurm;
tests/test_decide.py drives it from tables.

Also here, as pure functions of Slurm's texts: parsing squeue's lines and
`scontrol show config`, and laying stages out in arrays (`batches`).
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from synscale.backends.failures import Queued, Verdict, retried_by_default
from synscale.plan.graph import Plan, Stage

# squeue's output format for `parse_squeue` (array tasks as <array>_<index>)
SQUEUE_FORMAT = "JobArrayID:|,State:|,Reason:|,RestartCnt:|,Comment:"
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's documented default


def parse_squeue(text: str) -> dict[str, Queued]:
    """job id -> Queued from `squeue -h -r -O SQUEUE_FORMAT`. A job pending on
    a dependency that can never be satisfied (an input was cancelled or
    failed) will never run: its state is NEVER, so that status shows it
    blocked and a relaunch replaces it instead of waiting forever."""
    states = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        # the comment last, whole: another tool's may hold a "|"
        job, st, reason, restarts, note = ([x.strip() for x in line.split("|", 4)] + [""] * 4)[:5]
        states[job] = Queued("NEVER" if reason == "DependencyNeverSatisfied" else st,
                             int(restarts) if restarts.isdigit() else 0, reason,
                             "" if note == "(null)" else note)
    return states


def parse_max_array_size(text: str) -> int:
    """MaxArraySize from `scontrol show config`."""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, re.M)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


@dataclass
class Decision:
    skipped_done: list[str] = field(default_factory=list)
    skipped_live: dict[str, str] = field(default_factory=dict)  # stage id -> its queued job
    not_retried: dict[str, str] = field(default_factory=dict)   # stage id -> why
    retried: dict[str, tuple] = field(default_factory=dict)     # id -> (verdict, before, after)
    submit: dict[tuple, list[Stage]] = field(default_factory=lambda: defaultdict(list))
    cancel: list[str] = field(default_factory=list)             # queued jobs to drop
    blocked: dict[str, str] = field(default_factory=dict)       # stage -> job dropped: input failed


def decide(plan: Plan, done: set[str], again: set[str], records: dict,
           live: dict[str, Queued], verdict: Callable[[Stage, str], Verdict],
           resources: dict, retry: dict, profile) -> Decision:
    """`done`: stages whose folder says DONE; `again`: done stages that must
    run again (released, and read by a stage not done); `records`:
    slurm/submissions.json (stage -> job, attempts, resources of the last
    attempt); `live`: squeue; `verdict(stage, job)`: why a stage whose job
    left the queue did not finish (failures.classify); `resources` and
    `retry`: the study's per kind. `submit` maps (kind, resources) to stages
    in plan order, inputs first."""
    out = Decision()
    jobs, attempts = records.get("stages", {}), records.get("attempts", {})
    asked = records.get("resources", {})
    resubmitted: set[str] = set()
    for s in plan.order():
        job = jobs.get(s.id)
        if s.id in done and s.id not in again:
            out.skipped_done.append(s.id)
            continue
        if any(i in out.not_retried for i in s.inputs):
            out.not_retried[s.id] = "an input stays failed"
            if job in live:  # waiting on it would be forever (even before Slurm says so)
                out.cancel.append(job)
                out.blocked[s.id] = job  # status says blocked, not cancelled
            continue
        # A queued stage stays queued, unless an input of it is submitted
        # again: its job waits on the old input job, which will never run.
        if job in live and live[job].state != "NEVER" and not resubmitted & set(s.inputs):
            out.skipped_live[s.id] = job
            continue
        res = resources[s.kind]
        # it ran before and did not finish (a released stage did: it runs again, not retried)
        if job is not None and job not in live and s.id not in again:
            if s.id in asked:
                res = replace(res, **asked[s.id])
            v = verdict(s, job)
            before = res
            res, why = retry_resources(v.klass, attempts.get(s.id, 1), res, retry[s.kind],
                                       profile, micro_batch_of(s, res))
            if res is None:
                out.not_retried[s.id] = f"{v.klass}: {why}"
                continue
            out.retried[s.id] = (v, before, res)
        if job in live:  # stuck behind a dead dependency or an input submitted again
            out.cancel.append(job)
        out.submit[(s.kind, res)].append(s)
        resubmitted.add(s.id)
    return out


def retry_resources(klass: str, attempts: int, resources, policy, profile,
                    micro_batch: tuple[int, int] | None = None):
    """(resources for the next job, "") or (None, why the stage stays failed).
    `micro_batch`: a training's (micro batch, images per task per step) as
    the failed attempt ran it (`micro_batch_of`); None for other kinds."""
    if attempts >= policy.attempts:
        return None, f"failed {attempts} time(s); retry.attempts = {policy.attempts}"
    if not retried_by_default(klass) and not policy.python_exceptions:
        return None, (f"a {klass} is usually a bug and is not retried (fix it, or set "
                      "retry.<kind>.python_exceptions = true)")
    if klass == "out of memory":
        cap = min(policy.max_mem_gb, profile.max_mem_gb)
        if resources.mem_gb >= cap:
            return None, f"out of memory at {resources.mem_gb:g} GB, the cap"
        return replace(resources, mem_gb=min(resources.mem_gb * policy.oom_mem_factor, cap)), ""
    if klass == "out of GPU memory":
        if micro_batch is None:
            return None, ("out of GPU memory outside training: lower this kind's batch size or "
                          "ask for larger GPUs")
        micro, per_task = micro_batch
        # the largest divisor of the task's images at most half the micro batch, so
        # gradient accumulation keeps the global batch (and the results) the same
        smaller = next((d for d in range(micro // 2, 0, -1) if per_task % d == 0), None)
        if smaller is None:
            return None, f"out of GPU memory at micro_batch_size {micro}, the floor"
        return replace(resources, micro_batch_size=smaller), ""
    if klass == "timeout":
        cap = min(policy.max_time_min, profile.max_time_min)
        if resources.time_min >= cap:
            return None, f"timed out at {resources.time_min} min, the cap"
        return replace(resources, time_min=min(int(resources.time_min *
                                                   policy.timeout_time_factor), cap)), ""
    return resources, ""


def micro_batch_of(stage: Stage, resources) -> tuple[int, int] | None:
    """(micro batch, images per task per step) a training runs with under
    `resources` (stages/train.run's rule); None for other kinds."""
    recipe = stage.spec.get("recipe") if stage.kind == "train" else None
    if recipe is None:  # not a training, or a spec its runner will refuse anyway
        return None
    per_task = recipe["batch_size"] // (resources.nodes * resources.tasks_per_node)
    asked = resources.micro_batch_size or recipe.get("micro_batch_size") or per_task
    return min(per_task, asked), per_task


def with_micro_batch(stage: Stage, resources) -> Stage:
    """The stage as its job runs it: a training gets [resources.train]'s micro
    batch (set by the retry after out of GPU memory). Its id stays: the micro
    batch splits the same global batch, and is not hashed."""
    if stage.kind != "train" or not resources.micro_batch_size:
        return stage
    recipe = {**stage.spec["recipe"], "micro_batch_size": resources.micro_batch_size}
    return replace(stage, spec={**stage.spec, "recipe": recipe})


def chunks(stages: list[Stage], size: int) -> list[list[Stage]]:
    return [stages[i:i + size] for i in range(0, len(stages), size)]


def batches(stages: list[Stage], size: int, task_of: dict[str, tuple[str, int]],
            array_tasks: dict[str, int]) -> list[tuple[list[Stage], str | None]]:
    """The arrays for `stages` (one kind, one resource shape), each with the
    array it follows task by task, or None.

    Where every task of an array just submitted is the one input of one of
    these stages (an evaluation per training; one array per evaluation set),
    the stages are laid out in that array's task order and depend on it with
    aftercorr: each starts as soon as its own input is done, and a failed
    input blocks only its readers. The rest wait on whole input arrays
    (afterok)."""
    lanes: dict[str, dict[int, list[Stage]]] = defaultdict(lambda: defaultdict(list))
    rest = []
    for s in stages:
        source = task_of.get(s.inputs[0]) if len(s.inputs) == 1 else None
        if source:
            lanes[source[0]][source[1]].append(s)
        else:
            rest.append(s)
    out = []
    for array, by_task in lanes.items():
        n = array_tasks[array]
        full = min(len(by_task[i]) for i in range(n))  # readers every task of it has
        # Many readers per task (the trainings of one packed dataset) would
        # make many short arrays: those wait on the whole array instead.
        if full <= n:
            for _ in range(full):
                out.append(([by_task[i].pop(0) for i in range(n)], array))
        rest += [s for i in sorted(by_task) for s in by_task[i]]
    position = {s.id: n for n, s in enumerate(stages)}
    rest.sort(key=lambda s: position[s.id])
    return out + [(chunk, None) for chunk in chunks(rest, size)]

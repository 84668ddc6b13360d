"""The local backend: every stage on this machine, in dependency order.

Stages run in a pool of worker processes (`backend.workers`), each process
importing torch once and running many stages. A failed stage blocks only
what reads it; everything else still runs, so a relaunch has less to do.
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from synscale.plan import state
from synscale.plan.graph import KINDS, Plan, Stage
from synscale.plan.layout import RunDir


@dataclass
class Outcome:
    ran: list[str] = field(default_factory=list)
    skipped_done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)   # id -> last line of the error
    blocked: list[str] = field(default_factory=list)       # not run: an input failed


def _init_worker(threads: int, log_dir: str) -> None:
    # Die with the launcher: a killed launch must not leave workers writing.
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    # Libraries print (DeepSpeed's op builder, FFCV's tqdm bars); keep that off
    # the launcher's terminal and its --json output, in a log beside the run.
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(log_dir) / f"worker-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    # Inside a Slurm allocation, a local run is still a world of one.
    for var in ("SLURM_PROCID", "SLURM_NTASKS"):
        os.environ.pop(var, None)
    from synscale.runtime.device import use_threads
    use_threads(threads)


def _execute(run_root: str, stage: Stage, input_kinds: dict) -> dict:
    from synscale.runtime.harness import execute
    return execute(run_root, stage, input_kinds)


def run_plan(plan: Plan, run: RunDir, workers: int, progress=None) -> Outcome:
    """Run every stage that is not done. `progress(stage, status)` is called
    as stages finish (status: done, skipped, failed, blocked)."""
    report = progress or (lambda stage, status: None)
    kinds = {s.id: s.kind for s in plan.stages}
    out = Outcome()
    finished: set[str] = set()
    todo: list[Stage] = []
    again = state.needed_again(plan, run)
    for s in plan.order():
        if state.is_done(run.stage(s.kind, s.id)) and s.id not in again:
            out.skipped_done.append(s.id)
            finished.add(s.id)
            report(s, "skipped")
        else:
            todo.append(s)
    if not todo:
        return out
    _run_ready_first(todo, finished, kinds, run, workers, report, out)
    return out


def threads_per_stage(workers: int) -> int:
    """CPU threads of each local stage: this process's cores shared among the
    workers, or SYNSCALE_THREADS where the machine is shared with other work
    (the test suite's two processes on two cores: OpenMP threads spin, and
    oversubscribed they crawl)."""
    asked = os.environ.get("SYNSCALE_THREADS", "")
    if asked:
        if not asked.isdigit() or int(asked) < 1:
            raise ValueError(f"SYNSCALE_THREADS = {asked!r}: expected a whole number >= 1")
        return int(asked)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, workers))


def _run_ready_first(todo: list[Stage], finished: set[str], kinds: dict, run: RunDir,
                     workers: int, report, out: Outcome, pool=None, execute=None) -> None:
    """Keep `workers` stages in flight, each time the ready one furthest down
    the pipeline first (an evaluation before a training, a training before a
    generation), so a finished training is evaluated next and results fill
    in as the study runs instead of all at the end. Ties: plan order.
    (`pool` and `execute`: a test's stand-ins for the worker processes.)"""
    import heapq

    rank = {k: -i for i, k in enumerate(KINDS)}
    place = {s.id: i for i, s in enumerate(todo)}
    waiting = {s.id: sum(i not in finished for i in s.inputs) for s in todo}
    readers: dict[str, list[Stage]] = {}
    for s in todo:
        for i in s.inputs:
            readers.setdefault(i, []).append(s)
    ready = [(rank[s.kind], place[s.id], s) for s in todo if waiting[s.id] == 0]
    heapq.heapify(ready)
    left = {s.id for s in todo}  # not yet started, failed or blocked
    # Threads from the workers asked for, not from how many stages are left: on a CPU a
    # training's last bits depend on its thread count (README, "What is reproducible"), and
    # a relaunch with one stage to go must compute it as the first launch would have.
    threads = threads_per_stage(workers)
    workers = max(1, min(workers, len(todo)))
    running = {}

    def block(failed: Stage) -> None:
        stack = list(readers.get(failed.id, ()))
        while stack:
            s = stack.pop()
            if s.id in left:
                left.discard(s.id)
                out.blocked.append(s.id)
                report(s, "blocked")
                stack += readers.get(s.id, ())

    execute = execute or _execute
    pool = pool or ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                       initializer=_init_worker,
                                       initargs=(threads, str(run.root / "logs")))
    def settle(fut, s: Stage, first_loss: bool = True) -> bool:
        """Record how a finished future ended; False when the pool broke.
        A worker killed loses the stage it ran (failed: it says so) and
        every other one in flight (blocked); nothing of theirs counts until
        a relaunch reruns them."""
        try:
            fut.result()
        except BrokenProcessPool:
            if first_loss:
                out.failed[s.id] = "worker process died (killed?); relaunch to rerun"
                report(s, "failed")
            else:
                out.blocked.append(s.id)
                report(s, "blocked")
            return False
        except Exception as e:  # the worker already recorded error.json
            out.failed[s.id] = _last_line(run, s, e)
            report(s, "failed")
            block(s)
        else:
            finished.add(s.id)
            out.ran.append(s.id)
            report(s, "done")
            for r in readers.get(s.id, ()):
                waiting[r.id] -= 1
                if waiting[r.id] == 0:
                    heapq.heappush(ready, (rank[r.kind], place[r.id], r))
        return True

    with pool:
        broken = False
        while (ready or running) and not broken:
            while ready and len(running) < workers:
                s = heapq.heappop(ready)[2]
                if s.id not in left:
                    continue
                try:
                    fut = pool.submit(execute, str(run.root), s, {i: kinds[i] for i in s.inputs})
                except BrokenProcessPool:  # it broke since the last stage ended
                    broken = True
                    break
                left.discard(s.id)
                running[fut] = s
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                broken = not settle(fut, running.pop(fut), not broken) or broken
        if broken:
            # The stages in flight end at once (each done, failed, or lost
            # with the pool); what never started is blocked until a relaunch.
            for fut in wait(running).done:
                settle(fut, running.pop(fut), first_loss=False)
            for s in todo:
                if s.id in left:
                    left.discard(s.id)
                    out.blocked.append(s.id)
                    report(s, "blocked")


def _last_line(run: RunDir, s: Stage, e: BaseException) -> str:
    path = run.stage(s.kind, s.id) / "error.json"
    try:
        return state.read_json(path)["error"]
    except (OSError, ValueError, KeyError):
        return f"{type(e).__name__}: {e}"

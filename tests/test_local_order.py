"""The local backend's order: the ready stage furthest down the pipeline
runs first, so each training is evaluated as soon as it finishes (results
fill in as the study runs), and a failure blocks only what reads it.
Threads and a recording stand-in take the worker processes' place."""
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from synscale.backends.local import Outcome, _run_ready_first
from synscale.plan.graph import Stage
from synscale.plan.layout import RunDir


def _plan(trainings: int) -> list[Stage]:
    """A generation, its pack, then `trainings` trainings each read by two
    evaluations: in plan order every training comes before any evaluation."""
    gen = Stage("g", "generate", {})
    pack = Stage("p", "pack", {}, ("g",))
    trains = [Stage(f"t{i}", "train", {}, ("p",)) for i in range(trainings)]
    evals = [Stage(f"e{i}{j}", "evaluate", {}, (f"t{i}",)) for i in range(trainings)
             for j in range(2)]
    return [gen, pack, *trains, *evals]


def _run(stages, workers, fail=()):
    started, lock = [], threading.Lock()

    def execute(root, stage, input_kinds):
        with lock:
            started.append(stage.id)
        if stage.id in fail:
            raise RuntimeError(f"{stage.id} broke")
        return {}

    out, reports = Outcome(), []
    _run_ready_first(list(stages), set(), {s.id: s.kind for s in stages}, RunDir(Path("/nonexistent")),
                     workers, lambda s, status: reports.append((s.id, status)), out,
                     pool=ThreadPoolExecutor(workers), execute=execute)
    return started, out, reports


def test_one_worker_evaluates_each_training_before_the_next_training():
    started, out, _ = _run(_plan(4), workers=1)
    assert started == ["g", "p", "t0", "e00", "e01", "t1", "e10", "e11", "t2", "e20", "e21",
                       "t3", "e30", "e31"]
    assert sorted(out.ran) == sorted(started) and not out.failed and not out.blocked


def test_two_workers_never_leave_a_ready_evaluation_behind_a_training():
    started, out, _ = _run(_plan(6), workers=2)
    assert len(started) == 2 + 6 + 12 and len(out.ran) == 20
    # when the last training starts, at most the evaluations of the two
    # trainings still in flight (or just done) can be outstanding
    last = started.index("t5")
    assert sum(s.startswith("e") for s in started[:last]) >= 2 * (5 - 2)


def test_a_failed_training_blocks_its_evaluations_only():
    started, out, reports = _run(_plan(3), workers=1, fail={"t1"})
    assert "t1" in out.failed and sorted(out.blocked) == ["e10", "e11"]
    assert "e10" not in started and {"e00", "e01", "t2", "e20", "e21"} <= set(out.ran)
    assert ("e10", "blocked") in reports and ("t1", "failed") in reports


def test_a_killed_worker_keeps_what_finished_and_blocks_the_rest():
    """t0's worker dies (the pool breaks) while t1 runs on the other: t1
    still counts as done, t0 failed with the relaunch hint, and what never
    started (the evaluations, t2) is blocked for the next launch."""
    import time
    from concurrent.futures.process import BrokenProcessPool

    def execute(root, stage, input_kinds):
        if stage.id == "t0":
            raise BrokenProcessPool("a worker died")
        if stage.id == "t1":
            time.sleep(0.2)  # still running when t0's loss is seen
        return {}

    stages = _plan(3)
    out, reports = Outcome(), []
    _run_ready_first(list(stages), set(), {s.id: s.kind for s in stages},
                     RunDir(Path("/nonexistent")), 2,
                     lambda s, status: reports.append((s.id, status)), out,
                     pool=ThreadPoolExecutor(2), execute=execute)
    assert "t1" in out.ran and "worker process died" in out.failed["t0"]
    assert set(out.blocked) >= {"t2", "e00", "e01"} and "t1" not in out.blocked
    assert len(reports) == len(stages)  # every stage told once
    assert len({s for s, _ in reports}) == len(stages)


def test_threads_per_stage_follow_the_workers_asked_not_the_stages_left(monkeypatch):
    """On a CPU a result's last bits depend on its threads: a stage computes with
    the cores shared among the workers asked for, whatever is left to run."""
    import os

    import pytest

    from synscale.backends.local import threads_per_stage
    monkeypatch.delenv("SYNSCALE_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert threads_per_stage(1) == cores and threads_per_stage(2 * cores) == 1
    assert threads_per_stage(2) == max(1, cores // 2)
    monkeypatch.setenv("SYNSCALE_THREADS", "3")
    assert threads_per_stage(1) == threads_per_stage(64) == 3
    monkeypatch.setenv("SYNSCALE_THREADS", "0")
    with pytest.raises(ValueError, match="SYNSCALE_THREADS = '0': expected a whole number >= 1"):
        threads_per_stage(1)

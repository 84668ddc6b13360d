"""The Slurm backend's decisions from data alone (backends/decide.py): what a
launch skips, submits, retries with more, leaves failed and cancels, given
the plan, the run's records, squeue and the verdicts of stages that left
the queue; squeue's and scontrol's texts as Slurm prints them; the array
layout. No Slurm, no root, no files: these run in seconds anywhere; the
real-Slurm tests (test_slurm.py, test_faults.py) drive the same code live."""
from types import SimpleNamespace

import pytest

from synscale.backends.decide import batches, decide, parse_max_array_size, parse_squeue
from synscale.backends.failures import Queued, Verdict
from synscale.backends.profile import Profile
from synscale.plan.graph import Plan, Stage
from synscale.study.schema import Resources, RetryPolicy

# generate g -> pack p -> train t1, t2 -> evaluate e1 (t1), e2 (t2)
STAGES = [Stage("g", "generate", {}), Stage("p", "pack", {}, ("g",)),
          Stage("t1", "train", {}, ("p",)), Stage("t2", "train", {}, ("p",)),
          Stage("e1", "evaluate", {}, ("t1",)), Stage("e2", "evaluate", {}, ("t2",))]
PLAN = Plan("study", STAGES)
KINDS = ("generate", "pack", "train", "evaluate")
RESOURCES = {k: Resources(mem_gb=4.0, time_min=60) for k in KINDS}
RETRY = {k: RetryPolicy(attempts=3, max_mem_gb=16.0, max_time_min=240) for k in KINDS}
PROFILE = Profile(max_mem_gb=12.0, max_time_min=600)

OOM = Verdict("failed", "out of memory", "oom-kill")
TIMEOUT = Verdict("failed", "timeout", "DUE TO TIME LIMIT")
BUG = Verdict("failed", "python exception", "KeyError: 'x'")
PREEMPTED = Verdict("failed", "preemption", "")
CANCELLED = Verdict("failed", "cancelled", "left the queue before it started")


def _decide(done=(), again=(), jobs=None, live=None, verdicts=None, attempts=None, asked=None):
    """`jobs`: stage -> its last job; `live`: job -> squeue state;
    `verdicts`: stage -> why its job (gone from the queue) did not finish."""
    records = {"stages": dict(jobs or {}), "attempts": dict(attempts or {}),
               "resources": dict(asked or {}), "arrays": []}
    asked_for = []

    def verdict(stage, job):
        asked_for.append(stage.id)
        return (verdicts or {})[stage.id]
    d = decide(PLAN, set(done), set(again), records,
               {j: Queued(s) for j, s in (live or {}).items()}, verdict, RESOURCES, RETRY,
               PROFILE)
    submitted = {s.id: res for (kind, res), stages in d.submit.items() for s in stages}
    return d, submitted, asked_for


def test_a_first_launch_submits_every_stage_as_the_study_asks():
    d, submitted, asked = _decide()
    assert list(submitted) == ["g", "p", "t1", "t2", "e1", "e2"]
    assert all(r == RESOURCES["train"] for r in submitted.values())
    assert not (d.skipped_done or d.skipped_live or d.cancel or d.retried or asked)


CASES = [
    # (name, arguments, submitted, skipped done, skipped live, not retried, cancelled)
    ("done stages are skipped, the rest submitted",
     dict(done={"g", "p", "t1"}, jobs={"t2": "9_1"}, verdicts={"t2": PREEMPTED}),
     {"t2", "e1", "e2"}, {"g", "p", "t1"}, {}, {}, []),
    ("a queued stage stays queued, and so do its queued readers",
     dict(done={"g", "p"}, jobs={"t1": "7_0", "t2": "7_1", "e1": "8_0", "e2": "8_1"},
          live={"7_0": "RUNNING", "7_1": "PENDING", "8_0": "PENDING", "8_1": "PENDING"}),
     set(), {"g", "p"}, {"t1": "7_0", "t2": "7_1", "e1": "8_0", "e2": "8_1"}, {}, []),
    ("a job whose dependency can never be met is replaced",
     dict(done={"g", "p", "t1"}, jobs={"t2": "7_1", "e1": "8_0", "e2": "8_1"},
          live={"8_0": "PENDING", "8_1": "NEVER"}, verdicts={"t2": PREEMPTED}),
     {"t2", "e2"}, {"g", "p", "t1"}, {"e1": "8_0"}, {}, ["8_1"]),
    ("a reader queued behind an input submitted again is replaced with it",
     dict(done={"g", "p"}, jobs={"t1": "7_0", "t2": "7_1", "e1": "8_0", "e2": "8_1"},
          live={"7_1": "RUNNING", "8_0": "PENDING", "8_1": "PENDING"},
          verdicts={"t1": PREEMPTED}),
     {"t1", "e1"}, {"g", "p"}, {"t2": "7_1", "e2": "8_1"}, {}, ["8_0"]),
    ("a bug is not retried; its readers stay failed and leave the queue",
     dict(done={"g", "p"}, jobs={"t1": "7_0", "t2": "7_1", "e1": "8_0", "e2": "8_1"},
          live={"8_0": "NEVER"}, verdicts={"t1": BUG, "t2": PREEMPTED, "e2": CANCELLED}),
     {"t2", "e2"}, {"g", "p"}, {},
     {"t1": "python exception: a python exception is usually a bug",
      "e1": "an input stays failed"}, ["8_0"]),
    ("a reader still pending behind a failed input leaves the queue before Slurm says so",
     dict(done={"g", "p", "t2", "e2"}, jobs={"t1": "7_0", "e1": "8_0"},
          live={"8_0": "PENDING"}, verdicts={"t1": BUG}),
     set(), {"g", "p", "t2", "e2"}, {}, {"t1": "python exception", "e1": "an input stays failed"},
     ["8_0"]),
    ("the last allowed attempt is not followed by another",
     dict(done={"g", "p", "t2", "e2"}, jobs={"t1": "7_0"}, attempts={"t1": 3},
          verdicts={"t1": PREEMPTED}),
     set(), {"g", "p", "t2", "e2"}, {}, {"t1": "preemption: failed 3 time(s)",
                                         "e1": "an input stays failed"}, []),
]


@pytest.mark.parametrize("name, args, submit, done, live, failed, cancelled", CASES,
                         ids=[c[0] for c in CASES])
def test_decisions(name, args, submit, done, live, failed, cancelled):
    d, submitted, _ = _decide(**args)
    assert set(submitted) == submit
    assert set(d.skipped_done) == done
    assert d.skipped_live == live
    assert set(d.not_retried) == set(failed)
    for stage, why in failed.items():
        assert d.not_retried[stage].startswith(why), d.not_retried[stage]
    assert sorted(d.cancel) == sorted(cancelled)
    # those cancelled behind an input that stays failed are recorded as blocked (status)
    assert d.blocked == {s: j for s, j in args.get("jobs", {}).items()
                         if failed.get(s) == "an input stays failed" and j in cancelled}


def test_out_of_memory_retries_with_more_memory_up_to_the_profiles_cap():
    args = dict(done={"g", "p", "t2", "e2"}, jobs={"t1": "7_0"}, verdicts={"t1": OOM})
    d, submitted, _ = _decide(**args, attempts={"t1": 1})
    assert submitted["t1"].mem_gb == 8.0 and submitted["e1"].mem_gb == 4.0
    verdict, before, after = d.retried["t1"]
    assert verdict is OOM and before.mem_gb == 4.0 and after.mem_gb == 8.0
    # the last attempt asked for 8 GB (records): the next asks for the profile's 12, not 16
    d, submitted, _ = _decide(**args, attempts={"t1": 2}, asked={"t1": {"mem_gb": 8.0}})
    assert submitted["t1"].mem_gb == 12.0
    d, submitted, _ = _decide(**args, attempts={"t1": 2}, asked={"t1": {"mem_gb": 12.0}})
    assert "t1" not in submitted and d.not_retried["t1"].endswith("12 GB, the cap")


def test_a_timeout_retries_with_more_time_in_its_own_array_shape():
    d, submitted, _ = _decide(done={"g", "p"}, jobs={"t1": "7_0", "t2": "7_1"},
                              verdicts={"t1": TIMEOUT, "t2": PREEMPTED})
    assert submitted["t1"].time_min == 120 and submitted["t2"].time_min == 60
    # two resource shapes of one kind: two arrays
    assert {(k, r.time_min) for k, r in d.submit if k == "train"} == {("train", 120),
                                                                       ("train", 60)}


def test_a_released_stage_read_again_runs_again_without_a_verdict():
    """`again`: done, but its outputs were released and a stage not done
    reads them: it is submitted as it is, not classified or retried."""
    d, submitted, asked = _decide(done={"g", "p", "t1", "t2", "e1"}, again={"p"},
                                  jobs={"p": "5_0", "e2": "8_1"}, verdicts={"e2": PREEMPTED})
    assert set(submitted) == {"p", "e2"} and asked == ["e2"] and not d.cancel
    assert submitted["p"] == RESOURCES["pack"] and "p" not in d.retried


SQUEUE = """\
4512345_0|RUNNING|None|0|(null)
4512345_1|PENDING|Priority|0|(null)
4512345_[2-9%4]|PENDING|JobArrayTaskLimit|0|(null)
4512399_3|PENDING|DependencyNeverSatisfied|0|(null)
4512400|RUNNING|None|2|synscale:0123abcd:ff00|another tool's|comment
4512401|PENDING|JobHeldUser|0|synscale:0123abcd:ee11

"""


def test_squeue_lines_as_slurm_prints_them():
    q = parse_squeue(SQUEUE)
    assert q["4512345_0"] == Queued("RUNNING", 0, "None") and \
        q["4512345_1"] == Queued("PENDING", 0, "Priority")
    assert q["4512345_[2-9%4]"].state == "PENDING"  # a pending range keeps squeue's name
    assert q["4512399_3"].state == "NEVER" and q["4512400"].restarts == 2
    # the comment is the last column, taken whole; "(null)" is none
    assert q["4512400"].comment == "synscale:0123abcd:ff00|another tool's|comment"
    assert q["4512345_0"].comment == "" and q["4512401"].reason == "JobHeldUser"
    assert len(q) == 6 and parse_squeue("") == {}


def test_max_array_size_from_scontrol_or_slurms_default():
    text = "MaxArraySize            = 40001\nMaxJobCount             = 10000\n"
    assert parse_max_array_size(text) == 40001
    assert parse_max_array_size("MaxJobCount = 10000\n") == 1001


def test_evaluations_follow_their_trainings_task_by_task():
    """Two evaluations per training (two eval sets): two arrays, each in the
    training array's task order and following it (aftercorr); a stage with
    no input in that array waits on whole arrays; chunks respect the size."""
    trains = [Stage(f"t{i}", "train", {}) for i in range(3)]
    evals = [Stage(f"e{i}{s}", "evaluate", {}, (f"t{i}",)) for s in "ab" for i in (2, 0, 1)]
    extra = Stage("x", "evaluate", {}, ("other",))
    task_of = {t.id: ("900", i) for i, t in enumerate(trains)}
    out = batches([*evals, extra], 2, task_of, {"900": 3})
    follows = [([s.id for s in chunk], dep) for chunk, dep in out]
    assert follows == [(["e0a", "e1a", "e2a"], "900"), (["e0b", "e1b", "e2b"], "900"),
                       (["x"], None)]
    alone = batches([*trains, extra], 2, {}, {})
    assert [[s.id for s in c] for c, _ in alone] == [["t0", "t1"], ["t2", "x"]]


def test_a_retry_of_a_training_out_of_gpu_memory_halves_its_micro_batch():
    from dataclasses import replace
    train = Stage("t1", "train", {"recipe": {"batch_size": 64}}, ("p",))
    plan = Plan("study", [STAGES[0], STAGES[1], train, STAGES[4]])
    res = {**RESOURCES, "train": replace(RESOURCES["train"], gpus=4, tasks_per_node=4)}
    d = decide(plan, {"g", "p"}, set(), {"stages": {"t1": "7_0"}, "attempts": {"t1": 1}},
               {}, lambda s, job: Verdict("failed", "out of GPU memory", ""), res, RETRY,
               SimpleNamespace(max_mem_gb=12.0, max_time_min=600))
    (after,) = [r for (k, r) in d.submit if k == "train"]
    assert after.micro_batch_size == 8  # 64 images over 4 tasks: 16 each, halved

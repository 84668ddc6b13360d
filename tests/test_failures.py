"""failures.classify on recorded Slurm answers: every state and class status
can show, without a cluster (the real-Slurm tests produce them for real)."""
import json
import os

import pytest

from synscale.backends.failures import (
    CLASSES,
    STATES,
    Queued,
    classify,
    expand_job_ids,
    parse_sacct,
    retried_by_default,
)


@pytest.fixture
def stage(tmp_path):
    folder = tmp_path / "stages/train/abc"
    folder.mkdir(parents=True)
    return folder


def log_with(tmp_path, *lines, name="12_0_log.out"):
    path = tmp_path / name
    path.write_text("submitit INFO (...) - Starting with JobEnvironment(job_id=12_0)\n"
                    + "\n".join(lines) + "\n")
    return path


def test_sacct_array_ranges_expand_to_every_task():
    assert expand_job_ids("2472_[0-1%2]") == ["2472_0", "2472_1"]
    assert expand_job_ids("7_[0-2,5,8-12:2]") == ["7_0", "7_1", "7_2", "7_5", "7_8", "7_10", "7_12"]
    assert expand_job_ids("7_3") == ["7_3"] and expand_job_ids("9") == ["9"]
    acct = parse_sacct("2472_[0-1%2]|CANCELLED by 0|0:0\n2472_2|COMPLETED|0:0\n")
    assert set(acct) == {"2472_0", "2472_1", "2472_2"}
    assert acct["2472_1"].state == "CANCELLED"


def test_a_cancelled_pending_array_shows_every_task_cancelled(stage, tmp_path):
    log = tmp_path / "never_started.out"  # a pending task never wrote a log
    for recorded in ("2472_[0-1%2]|CANCELLED by 0|0:0\n", "2472|CANCELLED by 0|0:0\n"):
        acct = parse_sacct(recorded)
        for task in ("2472_0", "2472_1"):
            v = classify(stage, task, {}, acct, log)
            assert (v.state, v.klass) == ("failed", "cancelled"), recorded
    # without accounting: no log and no attempt means it never started
    v = classify(stage, "2472_1", {}, None, log)
    assert (v.state, v.klass) == ("failed", "cancelled")


def test_dependency_never_satisfied_is_blocked_not_pending(stage):
    v = classify(stage, "5_0", {"5_0": Queued("NEVER")}, None, None)
    assert v.state == "blocked" and "input" in v.message
    assert classify(stage, "5_0", {"5_0": Queued("PENDING")}, None, None).state == "pending"
    assert classify(stage, "5_0", {"5_0": "RUNNING"}, None, None).state == "running"


def test_a_killed_task_is_failed_at_once_whatever_its_heartbeat(stage, tmp_path):
    (stage / "heartbeat").touch()  # fresh: it beat a second ago
    (stage / "attempt.json").write_text("{}")
    log = log_with(tmp_path, "srun: error: node1: task 0: Killed")
    v = classify(stage, "12_0", {}, None, log)
    assert (v.state, v.klass) == ("failed", "killed (signal 9)")
    v = classify(stage, "12_0", {}, None, log_with(tmp_path, "srun: error: node2: task 1: "
                                                   "Segmentation fault (core dumped)"))
    assert v.klass == "killed (signal 11)"
    v = classify(stage, "12_0", {}, None, log_with(tmp_path, "srun: error: node1: task 0: "
                                                   "Exited with exit code 3"))
    assert v.klass == "exited (code 3)"
    # with accounting and a log that says nothing: the exit code tells
    quiet = log_with(tmp_path)
    assert classify(stage, "12_0", {}, parse_sacct("12_0|FAILED|137:0"), quiet).klass == \
        "killed (signal 9)"
    assert classify(stage, "12_0", {}, parse_sacct("12_0|FAILED|0:15"), quiet).klass == \
        "killed (signal 15)"
    assert classify(stage, "12_0", {}, parse_sacct("12_0|FAILED|2:0"), quiet).klass == \
        "exited (code 2)"


def test_node_failure_and_slurms_own_requeues_are_shown(stage, tmp_path):
    acct = parse_sacct("12_0|NODE_FAIL|0:0\n12_0|PENDING|0:0\n")
    assert acct["12_0"].earlier == ("NODE_FAIL",)
    v = classify(stage, "12_0", {"12_0": Queued("PENDING", restarts=1)}, acct, None)
    assert v.state == "pending" and v.note == "requeued 1x: node failure"
    # without accounting: submitit logs the requeues it asked for; the rest were Slurm's
    log = log_with(tmp_path, "submitit INFO - Requeued job 12_0 (2 remaining timeouts)")
    v = classify(stage, "12_0", {"12_0": Queued("RUNNING", restarts=2)}, None, log)
    assert v.state == "running"
    assert v.note == "requeued 2x: checkpointed at USR2, by Slurm (node failure or preemption)"
    v = classify(stage, "12_0", {}, parse_sacct("12_0|NODE_FAIL|0:0"), log_with(tmp_path))
    assert (v.state, v.klass) == ("failed", "node failure")
    # what srun says when a node stops answering, whatever sacct records after it
    lost = log_with(tmp_path, "srun: error: Node failure on node1")
    v = classify(stage, "12_0", {}, parse_sacct("12_0|FAILED|1:0"), lost)
    assert (v.state, v.klass) == ("failed", "node failure")
    # with accounting, submitit's requeue is REQUEUED in sacct too: said once, as what it was
    acct = parse_sacct("12_0|REQUEUED|0:0\n12_0|REQUEUED|0:0\n12_0|RUNNING|0:0\n")
    log = log_with(tmp_path, "submitit INFO - Requeued job 12_0 (2 remaining timeouts)")
    v = classify(stage, "12_0", {"12_0": Queued("RUNNING", restarts=2)}, acct, log)
    assert v.note == "requeued 2x: checkpointed at USR2, scontrol requeue"


def test_a_class_the_stage_recorded_wins(stage):
    (stage / "error.json").write_text(json.dumps({
        "error": "torch.distributed.DistNetworkError: address already in use",
        "class": "infrastructure"}))
    v = classify(stage, "12_0", {}, parse_sacct("12_0|FAILED|1:0"), None)
    assert (v.state, v.klass) == ("failed", "infrastructure")
    assert retried_by_default("infrastructure") and retried_by_default("killed (signal 9)")
    assert not retried_by_default("python exception") and not retried_by_default("exited (code 1)")


def test_every_class_classify_returns_is_a_listed_one(stage, tmp_path):
    """Whatever sacct says, the class is one of CLASSES (with N filled in)."""
    import re
    shapes = {re.sub(r"\(.* N\)", "", c).strip() for c in CLASSES}
    answers = ["OUT_OF_MEMORY|0:125", "TIMEOUT|0:0", "DEADLINE|0:0", "NODE_FAIL|0:0",
               "BOOT_FAIL|0:0", "PREEMPTED|0:0", "CANCELLED by 7|0:15", "REVOKED|0:0",
               "FAILED|1:0", "FAILED|0:9", "COMPLETED|0:0", "SPECIAL_EXIT|3:0", "WHATEVER|0:0"]
    for answer in answers:
        v = classify(stage, "12_0", {}, parse_sacct(f"12_0|{answer}"), log_with(tmp_path))
        assert v.state in STATES and v.state == "failed"
        assert re.sub(r"\(.*\d+\)", "", v.klass).strip() in shapes, (answer, v.klass)
    assert classify(stage, "12_0", {}, None, log_with(tmp_path)).klass == "unknown"


def test_a_local_stage_whose_process_died_is_not_running(stage):
    """No queue to ask: the attempt's pid on this host decides, not the heartbeat."""
    import socket
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (stage / "heartbeat").touch()
    (stage / "attempt.json").write_text(json.dumps({"pid": int(dead),
                                                    "host": socket.gethostname()}))
    v = classify(stage, None, None, None)
    assert (v.state, v.klass) == ("failed", "unknown")
    (stage / "attempt.json").write_text(json.dumps({"pid": os.getpid(),
                                                    "host": socket.gethostname()}))
    assert classify(stage, None, None, None).state == "running"
    # on another host only the heartbeat can tell
    (stage / "attempt.json").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    assert classify(stage, None, None, None).state == "running"
    os.utime(stage / "heartbeat", (0, 0))
    assert classify(stage, None, None, None).state == "pending"


def test_exceptions_the_cluster_causes_are_classed_as_such():
    from synscale.backends.failures import exception_class

    class UncompletedJobError(RuntimeError):  # submitit's, by name
        pass

    class DistNetworkError(RuntimeError):  # torch.distributed's, by name
        pass

    too_many = UncompletedJobError("Job not requeued because: timed-out too many times.")
    assert exception_class(too_many) == "timeout"
    assert exception_class(DistNetworkError("The server socket has failed to listen on any "
                                            "local network address. port: 29500, "
                                            "useIpv6: 0, code: -98, name: EADDRINUSE")) == \
        "infrastructure"
    assert exception_class(OSError(98, "Address already in use")) == "infrastructure"
    assert exception_class(ValueError("bad spec")) == "python exception"

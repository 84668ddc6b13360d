"""Atomic writes, DONE markers, failure records and the launch lock."""
import subprocess
import sys

import pytest

from synscale.plan import state
from synscale.plan.graph import Stage
from synscale.runtime.harness import execute


def test_atomic_write_keeps_old_file_when_the_writer_dies(tmp_path):
    target = tmp_path / "out.json"
    state.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with state.atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert state.read_json(target) == {"v": 1}
    assert list(tmp_path.iterdir()) == [target]


def test_killed_writer_leaves_only_a_temporary_that_is_cleaned(tmp_path):
    code = ("import os; from pathlib import Path; from synscale.plan import state\n"
            f"with state.atomic_path(Path({str(tmp_path / 'm.json')!r})) as tmp:\n"
            "    tmp.write_text('partial'); os._exit(9)\n")
    subprocess.run([sys.executable, "-c", code])
    assert not (tmp_path / "m.json").exists()
    leftovers = list(tmp_path.glob(".*.tmp"))
    assert leftovers
    state.clean_temporaries(tmp_path)
    assert not list(tmp_path.iterdir())


def test_lock_refuses_a_second_holder(tmp_path):
    lock = tmp_path / "run" / ".launch.lock"
    with state.exclusive(lock):
        code = ("from pathlib import Path; from synscale.plan import state\n"
                "try:\n"
                f"    with state.exclusive(Path({str(lock)!r})): print('got it')\n"
                "except state.Locked as e: print('refused:', e)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.startswith("refused:") and "in use by another launch" in out
    with state.exclusive(lock):  # released on exit
        pass


class Boom(Exception):
    pass


def test_failed_stage_records_error_and_no_done(tmp_path, monkeypatch):
    import synscale.runtime.harness as worker

    class Runner:
        calls = 0

        @staticmethod
        def run(ctx):
            Runner.calls += 1
            if Runner.calls == 1:
                state.write_json(ctx.dir / "part.json", {"ok": True})
                raise Boom("disk on fire")
            return {"answer": 42}

    monkeypatch.setattr(worker, "runner", lambda kind: Runner)
    stage = Stage("abc123", "pack", {})
    with pytest.raises(Boom):
        execute(str(tmp_path), stage, {})
    folder = tmp_path / "stages" / "pack" / "abc123"
    assert not state.is_done(folder)
    assert "Boom: disk on fire" in state.read_json(folder / "error.json")["error"]
    summary = execute(str(tmp_path), stage, {})
    assert summary["answer"] == 42 and state.is_done(folder)
    assert not (folder / "error.json").exists()
    assert execute(str(tmp_path), stage, {})["skipped"] and Runner.calls == 2


def test_heartbeat_beats_until_stopped_and_goes_stale(tmp_path):
    import time
    stop = state.start_heartbeat(tmp_path)
    deadline = time.time() + 5
    while not (tmp_path / "heartbeat").exists():
        assert time.time() < deadline
        time.sleep(0.01)
    stop()
    assert state.heartbeat_fresh(tmp_path)
    assert not state.heartbeat_fresh(tmp_path, now=time.time() + 4 * state.HEARTBEAT_SECONDS)
    assert not state.heartbeat_fresh(tmp_path / "elsewhere")

"""Submission records (backends/records.py) without Slurm: the journal read
back after a kill at any byte, and what a relaunch adopts from squeue."""
import json

from synscale.backends import records
from synscale.backends.failures import Queued
from synscale.plan.layout import RunDir

RES = {"mem_gb": 4.0, "time_min": 60, "micro_batch_size": 0, "cpus": 1}


def _submitted(run, recs, stages, job, kind="train"):
    intent = records.intend(run, recs, kind, stages, RES, [], "", False)
    records.record(run, recs, intent, job)
    return intent


def test_the_journal_replays_to_what_was_in_memory_and_ignores_a_cut_line(tmp_path):
    run = RunDir(tmp_path / "run")
    recs = records.load(run)
    records.compact(run, recs)
    _submitted(run, recs, ["a", "b"], "100")
    _submitted(run, recs, ["c"], "101")
    pending = records.intend(run, recs, "evaluate", ["d"], RES, ["100"], "afterok", False)
    assert records.load(run) == recs  # nothing rewritten: all of it from the journal
    assert recs["stages"] == {"a": "100_0", "b": "100_1", "c": "101"}
    assert recs["unreleased"] == ["100", "101"] and list(recs["intents"]) == [pending]

    # a kill halfway through appending the next line: that step never happened
    journal = tmp_path / "run/slurm" / f"submissions.{recs['generation']}.log"
    line = json.dumps({"op": "record", "intent": pending, "job": "102"})
    with open(journal, "a") as f:
        f.write(line[:len(line) // 2])
    back = records.load(run)
    assert back["stages"] == recs["stages"] and pending in back["intents"]

    # folded into one file; the old journal goes, and a stale one is not read
    records.compact(run, back)
    assert not journal.exists() and records.load(run) == back
    journal.write_text(line + "\n")
    assert records.load(run) == back


def test_adopt_records_what_reached_slurm_and_names_what_it_cannot_map(tmp_path):
    run = RunDir(tmp_path / "run")
    recs = records.load(run)
    _submitted(run, recs, ["a"], "100")                               # recorded, not released
    _submitted(run, recs, ["z"], "99")                                # recorded, ended since
    reached = records.intend(run, recs, "train", ["b", "c"], RES, ["100"], "afterok", False)
    lost = records.intend(run, recs, "train", ["d"], RES, [], "", False)  # sbatch never ran
    mine = records.comment(run, "")
    live = {"100": Queued("PENDING", 0, "JobHeldUser", records.comment(run, "x")),
            "105_0": Queued("PENDING", 0, "JobHeldUser", mine + reached),
            "105_1": Queued("PENDING", 0, "JobHeldUser", mine + reached),
            "106": Queued("PENDING", 0, "JobHeldUser", mine + "feedfacecafe"),  # records lost it
            "107": Queued("RUNNING", 0, "None", "synscale:another-run0:" + lost)}
    adoption = records.adopt(run, recs, live)
    assert adoption.adopted == {"105": {"kind": "train", "stages": ["b", "c"], "resources": RES,
                                        "dependency": ["100"], "dependency_type": "afterok",
                                        "held_by_request": False}}
    assert recs["stages"]["b"] == "105_0" and recs["stages"]["c"] == "105_1"
    assert adoption.dropped == [lost] and "d" not in recs["stages"] and not recs["intents"]
    # 99 left the queue: nothing to release; 106 carries an intent nobody wrote
    assert adoption.release == ["100", "105"] == recs["unreleased"]
    assert adoption.unknown == ["106"]


def test_jobs_held_by_request_stay_held(tmp_path):
    run = RunDir(tmp_path / "run")
    recs = records.load(run)
    intent = records.intend(run, recs, "train", ["a"], RES, [], "", True)
    records.record(run, recs, intent, "100")
    assert recs["unreleased"] == [] and recs["stages"] == {"a": "100"}
    records.journal(run, recs, {"op": "release", "jobs": ["100"]})
    assert records.load(run)["unreleased"] == []


FAKE = {  # a login node whose controller went away after the preflight's ping
    "scontrol": 'case "$1" in ping) echo "Slurmctld(primary) at ctl is UP";; '
                'show) echo "MaxArraySize = 1001";; esac',
    "squeue": "exit 0",
    "sacct": "exit 0",
    "sbatch": 'echo "sbatch: error: Batch job submission failed: Unable to contact slurm '
              'controller (connect failure)" >&2; exit 1'}


def test_sbatch_refused_mid_launch_is_one_line_and_exit_4(small_study, tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    study = small_study("refused", **{'sources = ["real", "synthetic"]': 'sources = ["real"]'})
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "synscale.launch", str(study), "--root",
                        str(tmp_path), "--backend", "slurm"], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 4, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert "error: sbatch: error: Batch job submission failed: Unable to contact" in r.stderr
    assert "once `scontrol ping` says UP" in r.stderr
    # the pack's intent is journalled, and the next launch drops it (no job carries it)
    run = RunDir(tmp_path / "refused")
    recs = records.load(run)
    assert len(recs["intents"]) == 1 and not recs["stages"]
    adoption = records.adopt(run, recs, {})
    assert len(adoption.dropped) == 1 and not recs["intents"]

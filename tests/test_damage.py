"""Finished work damaged after the fact (plan/outputs.py), on the local
backend: a DONE cut in half, a manifest overwritten, shards lost after and
before their pack. Each is found (by the launch where something is about to
read it, else by python -m synscale.verify), said, and redone, and the
finished metrics equal the clean run's."""
import json
import os
import subprocess
import sys

from conftest import ROOT, run_module
from synscale.plan import outputs, state
from synscale.plan.graph import Plan
from synscale.plan.layout import RunDir

NUMBERS = ("loss", "top1", "per_class_top1", "per_class_loss")

# One stage run in a process of its own (as a worker runs it), printing its failure's class
RUN_PACK = """
import json, pathlib, sys
from synscale.backends.failures import exception_class
from synscale.plan.graph import Plan
from synscale.plan.layout import RunDir
from synscale.runtime.harness import execute
run = RunDir(pathlib.Path(sys.argv[1]))
plan = Plan.from_json(run.plan_file.read_text())
pack = plan.by_id[sys.argv[2]]
try:
    execute(str(run.root), pack, {i: plan.by_id[i].kind for i in pack.inputs})
except Exception as e:
    print(json.dumps([exception_class(e), str(e)]))
"""


def launch(study, root) -> dict:
    r = run_module("synscale.launch", study, "--root", root, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def metrics(folder) -> dict:
    m = state.read_json(folder / "metrics.json")
    return {k: m[k] for k in NUMBERS}


def test_damaged_outputs_are_found_said_and_redone_to_the_same_metrics(small_study, tmp_path):
    study = small_study("damage", **{'sources = ["real", "synthetic"]': 'sources = ["synthetic"]',
                                     "synthetic_images_per_class = [4, 8, 16]":
                                         "synthetic_images_per_class = [8]"})
    launch(study, tmp_path)
    run = RunDir(tmp_path / "damage")
    plan = Plan.from_json(run.plan_file.read_text())
    (gen, *_), (pack,), (train,), (ev,) = (plan.of_kind(k) for k in
                                           ("generate", "pack", "train", "evaluate"))
    folder = {s.id: run.stage(s.kind, s.id) for s in plan.stages}
    clean = metrics(folder[ev.id])
    covers = state.read_json(folder[gen.id] / "DONE")["covers"]
    pool = (folder[gen.id] / covers["pool"]).resolve()
    class0 = {p.name: p.read_bytes() for p in pool.glob("shard-00000-*")}
    assert class0 and outputs.check(folder[gen.id]) is None

    # A DONE cut in half, not yet indexed: the launch finds it and redoes the stage
    done = folder[ev.id] / "DONE"
    done.write_bytes(done.read_bytes()[:len(done.read_bytes()) // 2])
    run.done_index.unlink()
    out = launch(study, tmp_path)
    assert "does not parse" in out["damaged"][ev.id], out
    assert metrics(folder[ev.id]) == clean and outputs.check(folder[ev.id]) is None

    # A manifest overwritten after the index has the stage: verify finds it and
    # marks it; status says so; the launch redoes the training and then the
    # evaluation that read the old one (its manifest differs: timings, memory)
    (folder[train.id] / "manifest.json").write_text("garbage")
    r = run_module("synscale.verify", run.root, "--json")
    assert r.returncode == 1, r.stderr[-2000:]
    (marked,) = json.loads(r.stdout)["marked"].items()
    assert marked[0] == train.id and "manifest.json: 7 bytes" in marked[1]["why"], marked
    info = json.loads(run_module("synscale.status", run.root, "--json").stdout)
    (failure,) = info["failures"]
    assert failure["class"] == "damaged" and "manifest.json" in failure["error"], failure
    r = run_module("synscale.launch", study, "--root", tmp_path)
    assert r.returncode == 0 and "redoing" in r.stdout, r.stdout + r.stderr[-2000:]
    assert metrics(folder[ev.id]) == clean
    assert run_module("synscale.verify", run.root, "--deep").returncode == 0

    # Shards lost after their pack: verify marks the generate stage; it renders
    # them again bit for bit, and nothing that read it changes
    pack_done = (folder[pack.id] / "DONE").read_bytes()
    for name in class0:
        (pool / name).unlink()
    r = run_module("synscale.verify", run.root, "--json")
    assert list(json.loads(r.stdout)["marked"]) == [gen.id], r.stdout
    out = launch(study, tmp_path)
    assert {p.name: p.read_bytes() for p in pool.glob("shard-00000-*")} == class0
    assert (folder[pack.id] / "DONE").read_bytes() == pack_done
    assert metrics(folder[ev.id]) == clean

    # Shards lost before their pack ran: the pack, run by hand, fails as
    # "input damaged" and marks the generate stage; the launch redoes both
    for name in class0:
        (pool / name).unlink()
    outputs.quarantine(run, "pack", pack.id, "not run yet")
    child = subprocess.run([sys.executable, "-c", RUN_PACK, str(run.root), pack.id],
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.stdout.strip(), (child.returncode, child.stderr[-3000:])
    klass, said = json.loads(child.stdout.splitlines()[-1])
    assert klass == "input damaged" and "no shard holds class 0" in said, child.stderr
    assert outputs.damaged(folder[gen.id]) and not state.is_done(folder[gen.id])
    # status: the pack failed as "input damaged", the generate stage as damaged
    info = json.loads(run_module("synscale.status", run.root, "--json").stdout)
    assert {f["id"]: f["class"] for f in info["failures"]} == {pack.id: "input damaged",
                                                               gen.id: "damaged"}, info
    launch(study, tmp_path)
    assert {p.name: p.read_bytes() for p in pool.glob("shard-00000-*")} == class0
    assert state.is_done(folder[pack.id]) and metrics(folder[ev.id]) == clean
    assert run_module("synscale.verify", run.root).returncode == 0


def test_a_shard_added_in_the_tick_of_a_cached_pool_listing_is_not_called_missing(tmp_path):
    """The pool's listing is kept while the folder's mtime is unchanged; a
    shard renamed in within that mtime tick (another launch filling the next
    chunk) must not make its stage look damaged."""
    from synscale.plan.layout import shard_path
    pool = tmp_path / "pool" / "cfg"
    pool.mkdir(parents=True)

    def stage(name, first):
        folder = tmp_path / "stages" / "generate" / name
        folder.mkdir(parents=True)
        state.write_json(folder / "DONE", {"outputs": {}, "covers": {
            "pool": "../../../pool/cfg", "classes": [0, 1], "indices": [first, first + 8]}})
        return folder

    shard_path(pool, 0, 0, 8).write_bytes(b"x")
    first, second = stage("a", 0), stage("b", 8)
    tick = pool.stat().st_mtime_ns
    assert outputs.check(first) is None  # lists the pool, and keeps the listing
    assert "class 0 images [8, 16)" in outputs.check(second)
    shard_path(pool, 0, 8, 8).write_bytes(b"x")
    os.utime(pool, ns=(tick, tick))  # as if in the same tick as the listing
    assert outputs.check(second) is None
    shard_path(pool, 0, 8, 8).unlink()
    assert "class 0 images [8, 16)" in outputs.check(second)

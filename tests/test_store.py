"""A store shared by studies: a generation config two studies share is
rendered once, two launches racing on one store compute each stage once,
the files are the group's, and gc removes only what no run directory plans."""
import json
import stat
import subprocess
import sys

import pytest

from conftest import ROOT, run_module
from synscale.plan import state
from synscale.plan.graph import Plan

pytestmark = pytest.mark.slow

# synthetic only, two sizes: the shared part is the generation config and its pack
TRIM = {'sources = ["real", "synthetic"]': 'sources = ["synthetic"]',
        "synthetic_images_per_class = [4, 8, 16]": "synthetic_images_per_class = [8, 16]",
        "min_steps = 20": "min_steps = 10", "max_steps = 40": "max_steps = 10"}


def _launch(study, root, store, *more):
    r = run_module("synscale.launch", study, "--root", root, "--store", store, "--json", *more)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def _plan(run) -> Plan:
    return Plan.from_json((run / "plan.json").read_text())


def test_two_studies_share_a_store_and_gc_keeps_what_is_planned(small_study, tmp_path):
    store = tmp_path / "store"
    a = small_study("a", **TRIM)
    b = small_study("b", **TRIM, **{"width = [16]": "width = [24]\nheads = 2"})
    first = _launch(a, tmp_path / "runs", store)
    assert first["failed"] == 0
    second = _launch(b, tmp_path / "runs", store)
    plan_a, plan_b = _plan(tmp_path / "runs/a"), _plan(tmp_path / "runs/b")
    shared = {s.id for s in plan_a.stages} & {s.id for s in plan_b.stages}
    assert {plan_b.by_id[i].kind for i in shared} == {"generate", "pack"}
    # the second study ran none of them: done on the store; no image rendered twice
    assert second["skipped_done"] == len(shared) and second["failed"] == 0
    assert second["submitted"] == len(plan_b.stages) - len(shared)
    assert not (tmp_path / "runs/b/stages").exists() and (tmp_path / "runs/b/results").is_dir()
    rendered = [state.read_json(store / "stages/generate" / g.id / "DONE")["images_rendered"]
                for g in plan_a.of_kind("generate")]
    assert sum(rendered) == 10 * 16  # one config, 16 images a class, once
    # the team's: folders keep the store's group (setgid), files are group-writable
    assert store.stat().st_mode & stat.S_ISGID
    for path in (store / "stages/generate", *(store / "pool").rglob("shard-*.npz"),
                 *(store / "stages/train").rglob("DONE")):
        assert path.stat().st_mode & stat.S_IWGRP, path
    assert (store / "pool").stat().st_mode & stat.S_ISGID

    # nothing unreferenced while both run directories plan it all
    dry = json.loads(run_module("synscale.gc", store, "--dry-run", "--json").stdout)
    assert dry["stages"] == [] and dry["pools"] == [] and len(dry["runs"]) == 2
    # study b deleted by hand: its own trainings and evaluations, and only they, go
    import shutil
    shutil.rmtree(tmp_path / "runs/b")
    only_b = {(s.kind, s.id) for s in plan_b.stages if s.id not in shared}
    dry = json.loads(run_module("synscale.gc", store, "--dry-run", "--json").stdout)
    assert {(x["kind"], x["id"]) for x in dry["stages"]} == only_b and dry["pools"] == []
    assert dry["bytes"] > 0 and all((store / "stages" / k / i).is_dir() for k, i in only_b)
    done = run_module("synscale.gc", store, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["vanished_runs"]
    assert not any((store / "stages" / k / i).exists() for k, i in only_b)
    # study a is whole: a relaunch finds everything done
    again = run_module("synscale.launch", a, "--root", tmp_path / "runs", "--store", store)
    assert again.returncode == 0 and "Nothing to do" in again.stdout
    # a run directory stays on its store
    other = run_module("synscale.launch", a, "--root", tmp_path / "runs", "--store",
                       tmp_path / "elsewhere")
    assert other.returncode == 2 and "was launched on the store" in other.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_two_launches_racing_on_one_store_compute_each_stage_once(small_study, tmp_path):
    store = tmp_path / "store"
    studies = [small_study(name, **TRIM) for name in ("one", "two")]  # the same stages
    env = {"PYTHONPATH": str(ROOT), "COLUMNS": "160"}
    import os
    procs = [subprocess.Popen([sys.executable, "-m", "synscale.launch", str(s), "--root",
                               str(tmp_path / "runs"), "--store", str(store), "--json"],
                              cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in studies]
    outs = [p.communicate(timeout=900) for p in procs]
    # the traceback, not the progress bars, is what a failure needs to show
    assert [p.returncode for p in procs] == [0, 0], [e[e.find("Traceback"):][:4000]
                                                     for _, e in outs]
    plan = _plan(tmp_path / "runs/one")
    assert {s.id for s in plan.stages} == {s.id for s in _plan(tmp_path / "runs/two").stages}
    results = [json.loads(o) for o, _ in outs]
    # each stage ran in one of the two launches; the other found it done
    assert sum(r["submitted"] for r in results) >= len(plan.stages)
    for s in plan.stages:
        log = (store / "stages" / s.kind / s.id / "log.txt").read_text()
        assert log.count(f"start {s.kind} {s.id}") == 1, (s.kind, log)
    rendered = sum(state.read_json(store / "stages/generate" / g.id / "DONE")["images_rendered"]
                   for g in plan.of_kind("generate"))
    assert rendered == 10 * 16


def test_launches_creating_one_new_store_at_once_all_get_it(tmp_path):
    """Four at once, a hundred times: none fails with 'File exists' (the CI
    failure of the racing test above), each gets the store, which is setgid
    with its subfolders inside."""
    import threading

    from synscale.plan.store import open_store
    def one(path, start, errors, got):
        start.wait()
        try:
            got.append(open_store(path))
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            errors.append(e)

    for r in range(100):
        path = tmp_path / f"r{r}" / "store"
        start, errors, got = threading.Barrier(4), [], []
        threads = [threading.Thread(target=one, args=(path, start, errors, got))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, (r, errors)
        assert got == [path] * 4 and path.stat().st_mode & stat.S_ISGID
        assert sorted(p.name for p in path.parent.iterdir()) == ["store"]  # no temporaries left
        assert all((path / sub).stat().st_mode & stat.S_ISGID for sub in ("stages", "pool", "runs"))


def test_a_store_this_user_cannot_write_is_refused_before_anything_is_written(small_study,
                                                                               tmp_path):
    import os
    if os.geteuid() == 0:  # root writes anywhere; a file in the way is what root is refused
        blocker = tmp_path / "shared"
        blocker.write_text("not a folder")
        store = blocker / "store"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        store = locked / "store"
    study = small_study("refused", **TRIM)
    r = run_module("synscale.launch", study, "--root", tmp_path / "runs", "--store", store)
    assert r.returncode == 2, r.stderr
    assert "--store" in r.stderr and str(store) in r.stderr and "Traceback" not in r.stderr
    assert ("is a file, not a folder" if os.geteuid() == 0 else "not writable") in r.stderr
    assert not (tmp_path / "runs").exists()

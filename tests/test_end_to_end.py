"""The real entry point through every stage (real FFCV, real DeepSpeed), and
what happens when a launch is killed or launched twice."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_module
from synscale.plan import state

pytestmark = pytest.mark.slow


def done_files(run_dir):
    return {p.parent.name: p.read_text() for p in (run_dir / "stages").glob("*/*/DONE")}


def spawn_launch(study, root, *args, **popen):
    """A launch in the background, as a user's shell would start it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "synscale.launch", str(study), "--root",
                             str(root), *args], stderr=subprocess.DEVNULL, env=env, cwd=ROOT,
                            **popen)


def test_reduced_study_end_to_end(small_study, tmp_path):
    # one more seed at size 8: a repeat of each source's training there
    study = small_study("e2e", workers=2, **{"[generate]": "repeats = {8 = 2}\n\n[generate]"})
    root = tmp_path / "runs"
    r = run_module("synscale.launch", study, "--root", root, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["stages"] == {"generate": 2, "pack": 2, "train": 8, "evaluate": 8}
    assert out["submitted"] == 20 and out["failed"] == 0 and out["skipped_done"] == 0
    run = root / "e2e"
    assert (run / "study.toml").read_text() == study.read_text()

    # generate: every image has its seed and class; sizes are per-class prefixes
    gens = sorted((run / "stages/generate").iterdir())
    manifest = state.read_json(gens[0] / "manifest.json")
    assert manifest["guidance"] == 1.0 and manifest["guidance_scale"] == 2.0
    packs = [state.read_json(p / "index.json") for p in (run / "stages/pack").iterdir()]
    assert sorted(p["rows"] for p in packs)[0] == 160  # 16 synthetic per class
    quality = [json.loads(p.read_text()) for p in (run / "stages/pack").glob("*/quality.json")]
    assert len(quality) == 1 and 0 <= quality[0]["recognizability"] <= 1

    # train: DeepSpeed ran the recipe's steps and recorded the rule
    trained = [state.read_json(p / "manifest.json") for p in (run / "stages/train").iterdir()]
    assert {t["steps"] for t in trained} <= set(range(20, 41))
    assert all("clamp(" in t["step_rule"] for t in trained)

    # evaluate + gather: one row per trained model, losses that are numbers
    rows = list(csv.DictReader(open(run / "results/metrics.csv")))
    assert len(rows) == 8 and {r["source"] for r in rows} == {"real", "synthetic"}
    for source in ("real", "synthetic"):  # the repeat: another seed, another loss
        at8 = [r for r in rows if r["source"] == source and r["images_per_class"] == "8"]
        assert len({r["seed"] for r in at8}) == 2 and len({r["loss"] for r in at8}) == 2
    assert all(0 < float(r["loss"]) < 10 and 0 <= float(r["top1"]) <= 1 for r in rows)
    metrics = [state.read_json(p / "metrics.json") for p in (run / "stages/evaluate").iterdir()]
    assert all(m["n"] == 450 and len(m["per_class_top1"]) == 10 for m in metrics)

    fits = json.loads((run / "results/fits.json").read_text())
    assert len(fits["series"]) == 2
    assert all(f["x"] == [4, 8, 8, 16] for f in fits["series"])  # the repeat: one series
    assert (run / "results/plots/scaling.png").stat().st_size > 1000
    assert "k" in (run / "results/summary.md").read_text()

    # a finished study does nothing on relaunch, and says so
    before = done_files(run)
    again = run_module("synscale.launch", study, "--root", root)
    assert again.returncode == 0 and "Nothing to do" in again.stdout
    assert done_files(run) == before

    # a stage run again (a generate stage lost its DONE) leaves the finished
    # evaluations as they were: the launch does not refit
    fitted = (run / "results/fits.json").stat().st_mtime_ns
    (gens[0] / "DONE").unlink()
    (run / "index/done.jsonl").unlink()  # the index is a cache of DONE files
    again = run_module("synscale.launch", study, "--root", root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "No evaluation finished since the results were fitted" in again.stdout
    assert (gens[0] / "DONE").exists()
    assert (run / "results/fits.json").stat().st_mtime_ns == fitted

    status = run_module("synscale.status", run, "--json")
    kinds = json.loads(status.stdout)["kinds"]
    assert all(k["done"] == k["total"] for k in kinds.values())
    # the fits status shows as evaluations land: here all final, as the results say
    fits = json.loads(status.stdout)["fits"]
    assert [r["final"] for r in fits["series"]] == [True, True]
    final_k = {f["key"]["source"]: f["fits"]["power"]["params"]["k"]
               for f in json.loads((run / "results/fits.json").read_text())["series"]}
    assert {r["key"]["source"]: r["k"] for r in fits["series"]} == pytest.approx(final_k)
    assert len(fits["synthetic_per_real"]) == 1


def test_kill_then_relaunch_finishes_without_redoing_work(small_study, tmp_path):
    study = small_study("killed", workers=1)
    root = tmp_path / "runs"
    run = root / "killed"
    proc = spawn_launch(study, root, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while len(list(run.glob("stages/train/*/DONE"))) < 2:
        assert time.time() < deadline and proc.poll() is None, "launch ended before the kill"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = done_files(run)
    assert 0 < len(finished) < 16

    r = run_module("synscale.launch", study, "--root", root, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["skipped_done"] == len(finished) and out["submitted"] == 16 - len(finished)
    after = done_files(run)
    assert len(after) == 16
    # finished stages were not run again: their DONE records are untouched
    assert all(after[k] == v for k, v in finished.items())
    # no half-written file was taken for an output
    assert not list(run.rglob(".*.tmp"))


def test_second_launch_refuses_while_the_first_holds_the_study(small_study, tmp_path):
    study = small_study("locked")
    run = tmp_path / "runs" / "locked"
    with state.exclusive(run / ".launch.lock"):
        r = run_module("synscale.launch", study, "--root", tmp_path / "runs")
    assert r.returncode == 3
    assert "in use by another launch" in r.stderr
    assert not (run / "stages").exists()


def test_killed_stage_process_fails_the_launch_and_a_relaunch_recovers(small_study, tmp_path):
    study = small_study("worker", workers=1)
    root = tmp_path / "runs"
    run = root / "worker"
    proc = spawn_launch(study, root, "--json", stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    victim = None
    while victim is None:
        assert time.time() < deadline and proc.poll() is None, "launch ended before the kill"
        for attempt in run.glob("stages/train/*/attempt.json"):
            if not (attempt.parent / "DONE").exists():
                try:
                    victim = state.read_json(attempt)["pid"]
                except ValueError:
                    continue
                break
        time.sleep(0.05)
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1
    assert json.loads(out)["failed"] >= 1
    assert len(done_files(run)) < 16

    r = run_module("synscale.launch", study, "--root", root, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(done_files(run)) == 16


def test_accumulated_micro_batches_train_like_the_whole_batch(small_study, tmp_path):
    """The global batch is the study's whatever a task can hold: micro batches
    of 8 accumulated four times give the losses of batches of 32."""
    curves = []
    for micro in (0, 8):
        study = small_study(f"acc{micro}", **{
            'sources = ["real", "synthetic"]': 'sources = ["real"]',
            "real_images_per_class = [4, 8, 16]": "real_images_per_class = [16]",
            "[train]": f"[train]\nmicro_batch_size = {micro}\nlog_every = 5"})
        r = run_module("synscale.launch", study, "--root", tmp_path / str(micro), "--json")
        assert r.returncode == 0, r.stderr[-2000:]
        (manifest,) = (tmp_path / str(micro)).glob("*/stages/train/*/manifest.json")
        m = state.read_json(manifest)
        assert m["gradient_accumulation_steps"] == (4 if micro else 1)
        curves.append(m["loss_curve"])
    assert [s for s, _ in curves[0]] == [s for s, _ in curves[1]]
    for (_, a), (_, b) in zip(*curves):
        assert b == pytest.approx(a, abs=2e-3)

"""Growing a study redoes nothing: larger synthetic and real sizes, a repeat,
another classes_per_task and shard_images on a finished run keep every
finished training's id and DONE, render only the new images, and give the
metrics a run of the grown study from nothing gives, bit for bit; a training
on the grown pack traces the same loss curve as on the pack it was first
trained on."""
import json

import pytest

from conftest import run_module
from synscale.plan import state
from synscale.plan.graph import Plan

pytestmark = pytest.mark.slow

FIRST = {"real_images_per_class = [4, 8, 16]": "real_images_per_class = [4, 8]",
         "synthetic_images_per_class = [4, 8, 16]": "synthetic_images_per_class = [4, 8]",
         "min_steps = 20": "min_steps = 6\nlog_every = 2", "max_steps = 40": "max_steps = 6"}
GROWN = {"real_images_per_class = [4, 8]": "real_images_per_class = [4, 8, 16]",
         "synthetic_images_per_class = [4, 8]": "synthetic_images_per_class = [4, 8, 16]\n"
                                                "repeats = {8 = 2}",
         "classes_per_task = 5": "classes_per_task = 3\nshard_images = 8"}


def _launch(study, root) -> dict:
    r = run_module("synscale.launch", study, "--root", root, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def _done(run, kind) -> dict:
    return {p.parent.name: p.read_bytes() for p in run.glob(f"stages/{kind}/*/DONE")}


def test_a_grown_study_runs_only_what_it_adds_and_matches_a_fresh_run(small_study, tmp_path):
    first = small_study("grow", **FIRST)
    _launch(first, tmp_path / "runs")
    run = tmp_path / "runs/grow"
    trained, evaluated = _done(run, "train"), _done(run, "evaluate")
    assert len(trained) == 4
    grown_text = first.read_text()
    for old, new in GROWN.items():
        assert old in grown_text
        grown_text = grown_text.replace(old, new)
    first.write_text(grown_text)
    grown = _launch(first, tmp_path / "runs")
    plan = Plan.from_json((run / "plan.json").read_text())
    # what the grown plan no longer has: the chunks cut by 5 classes (their images serve
    # the new chunks from the pool) and the pack of 8 a class
    assert grown["not_in_plan"] == {"generate": 2, "pack": 1}
    # every finished training and evaluation is in the grown plan, untouched
    assert set(trained) <= {s.id for s in plan.of_kind("train")}
    assert all(_done(run, "train")[k] == v for k, v in trained.items())
    assert all(_done(run, "evaluate")[k] == v for k, v in evaluated.items())
    assert grown["skipped_done"] >= len(trained) + len(evaluated)
    new = [s for s in plan.of_kind("train") if s.id not in trained]
    assert sorted((s.axes["source"], s.spec["images_per_class"]) for s in new) == [
        ("real", 8), ("real", 16), ("synthetic", 8), ("synthetic", 16)]  # 8: the repeat
    # generation: the new chunks (classes by 3) render images 8 to 15 of each class only
    gens = [state.read_json(run / "stages/generate" / g.id / "DONE") for g in
            plan.of_kind("generate")]
    assert sum(g["images_rendered"] for g in gens) == 10 * 8
    assert sum(g["images_found"] for g in gens) == 10 * 8

    # the grown study from nothing: the same metrics, bit for bit, and the old
    # trainings (on the pack of 8 a class) trace the curves of those on the pack of 16
    _launch(first, tmp_path / "fresh")
    fresh = tmp_path / "fresh/grow"
    compared = 0
    for s in plan.of_kind("evaluate"):
        a = state.read_json(run / "stages/evaluate" / s.id / "metrics.json")
        b = state.read_json(fresh / "stages/evaluate" / s.id / "metrics.json")
        assert a == b, s.axes
        compared += 1
    assert compared == len(plan.of_kind("evaluate")) == 8  # 3 sizes and a repeat a source
    for sid in trained:
        a = state.read_json(run / "stages/train" / sid / "manifest.json")
        b = state.read_json(fresh / "stages/train" / sid / "manifest.json")
        assert a["loss_curve"] == b["loss_curve"] and len(a["loss_curve"]) == 3
    packs = {s.spec["source"]: s for s in plan.of_kind("pack")}
    assert state.read_json(fresh / "stages/pack" / packs["synthetic"].id / "index.json")[
        "class_counts"] == [16] * 10

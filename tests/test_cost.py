"""Compute before launching: a pilot measures the rates, the dry-run costs
the plan with them (or with the planning rules), and max_gpu_hours stops a
launch above its budget."""
import json

import pytest

from conftest import ROOT, run_module

# README, "What a study costs": planning rates for imagen_sweep's stages on A100s
README_RATES = {"generate": {"imagen": 0.15}, "pack_per_cpu": 400,
                "train": {"vit_base_patch16_224": 900}, "evaluate": {"vit_base_patch16_224": 2700}}


def _dry(study, root, *args):
    r = run_module("synscale.launch", study, "--root", root, "--dry-run", "--json", *args)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)["cost"]


def test_imagen_sweep_costs_gpu_hours_per_kind_from_a_calibration(tmp_path):
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"date": "README", "hardware": {"device": "A100"},
                                       "rates": README_RATES}))
    study = ROOT / "studies/imagen_sweep.toml"
    got = _dry(study, tmp_path, "--calibration", calibration)
    k = got["kinds"]
    # 96M images at 0.15 images/s on one GPU each
    assert k["generate"]["device"] == "gpu" and k["generate"]["rates_from"] == "calibration"
    assert k["generate"]["hours"] == pytest.approx(96e6 / 0.15 / 3600, rel=1e-3)
    # every training: its steps x 1024 samples over 900 samples/s on each of its 8 GPUs
    assert k["train"]["device"] == "gpu" and 0 < k["train"]["hours"] < k["generate"]["hours"]
    assert k["pack"]["device"] == "cpu"
    assert got["gpu_hours"] == pytest.approx(sum(v["hours"] for v in k.values()
                                                 if v["device"] == "gpu"), rel=1e-3)
    # generation alone, 64 tasks at once: at least its GPU-hours / 64 of wall time
    assert k["generate"]["wall_hours"] >= k["generate"]["hours"] / 64 * 0.999
    # without a calibration: the planning rules, said so
    plain = _dry(study, tmp_path / "none")
    assert {v["rates_from"] for v in plain["kinds"].values()} == {"table"}
    assert plain["calibration"] is None and plain["gpu_hours"] > 0
    # the table view names the hours per kind
    r = run_module("synscale.launch", study, "--root", tmp_path, "--dry-run", "--calibration",
                   calibration)
    assert "GPU-h" in r.stdout and "GPU-hours" in r.stdout


def test_pilot_measures_rates_and_a_launch_over_budget_stops(small_study, tmp_path):
    study = small_study("budget", **{"seed = 0": "seed = 0\nmax_gpu_hours = 0.0001"})
    r = run_module("synscale.launch", study, "--root", tmp_path / "runs", "--pilot", "--json",
                   timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    cal = json.loads(r.stdout)
    # shrunk, by its plan not a stopwatch (seconds depend on the machine): one generation
    # of the two configs' classes, two packs, one training and evaluation per source
    assert cal["stages"] == 7 and cal["failed"] == 0 and cal["pilot_seconds"] > 0
    assert (tmp_path / "runs/budget/calibration.json").exists()
    assert (tmp_path / "runs/budget/pilot/stages").is_dir()
    rates = cal["rates"]
    assert len(rates["generate"]) == 1 and all(v > 0 for v in rates["generate"].values())
    assert rates["pack_per_cpu"] > 0 and len(rates["train"]) == 1 and len(rates["evaluate"]) == 1
    # the dry-run reads it: every kind's rate from the pilot
    got = _dry(study, tmp_path / "runs")
    assert got["calibration"]["date"] == cal["date"]
    assert {v["rates_from"] for k, v in got["kinds"].items()} == {"calibration"}
    # the local backend computes on CPUs: no GPU-hours, so the budget holds
    assert got["gpu_hours"] == 0
    # on Slurm with a GPU per training (the pilot's rates) the budget is exceeded: the
    # launch stops before submitting, whatever else it finds wrong
    gpus = study.read_text() + "\n[resources.train]\ngpus = 1\n"
    over = tmp_path / "over.toml"
    over.write_text(gpus.replace('name = "budget"', 'name = "over"'))
    r = run_module("synscale.launch", over, "--root", tmp_path / "runs", "--backend", "slurm",
                   "--calibration", tmp_path / "runs/budget/calibration.json")
    assert r.returncode == 2
    assert "study.max_gpu_hours = 0.0001: the plan's estimated cost is" in r.stderr.replace("\n", "")
    assert not (tmp_path / "runs/over").exists()


def test_a_grown_study_costs_the_images_and_trainings_it_adds():
    """imagen_sweep grown from 4,000 to 8,000 synthetic images per class, priced as
    --suggest prices an addition: the generation hours of the new 4,000 images a class
    (half the grown study's), the new size's trainings, nothing of the rest again."""
    from dataclasses import replace

    from synscale.plan import cost
    from synscale.study.expand import expand
    from synscale.study.load import load_study

    study = load_study(ROOT / "studies/imagen_sweep.toml")
    grown = replace(study, sweep=replace(study.sweep, synthetic_images_per_class=(
        *study.sweep.synthetic_images_per_class, 8000)))
    before, after = expand(study), expand(grown)
    old = {s.id for s in before.stages}
    new = [s for s in after.stages if s.id not in old]
    assert {s.kind for s in new} == {"generate", "pack", "train", "evaluate"}
    assert all(s.spec["indices"][0] >= 4000 for s in new if s.kind == "generate")
    assert all(s.spec["images_per_class"] == 8000 for s in new if s.kind == "train")
    calibration, have = {"rates": README_RATES}, cost.chunk_coverage(before.stages)
    added = cost.estimate(grown, after, "slurm", calibration, only={s.id for s in new},
                          covered=lambda c: have.get(c, {}))
    whole = cost.estimate(grown, after, "slurm", calibration)
    assert added["generate"].hours == pytest.approx(whole["generate"].hours / 2)
    assert added["generate"].hours == pytest.approx(96e6 / 0.15 / 3600, rel=1e-3)
    assert added["train"].stages == 24 and added["train"].hours < whole["train"].hours / 4


def test_the_embedded_studys_next_size_is_priced_by_what_it_adds():
    """--suggest's "synthetic size 512" on the embedded study: its 9 trainings and
    the 7,680 images (3 configs x 10 classes x 256) the study does not have yet."""
    from collections import Counter

    from synscale.plan import additions, cost
    from synscale.study.expand import expand
    from synscale.study.load import load_study

    study = load_study(ROOT / "studies/digits_sweep.toml")
    planned = expand(study)
    (edit,) = [e for e in additions.edits(study) if e.label == "synthetic size 512"]
    (added,) = additions.expand_all(study, planned, [edit], "local", None)
    kinds = Counter(s.kind for s in added.new)
    assert kinds["train"] == kinds["evaluate"] == 9 and added.redone == 0
    have = cost.chunk_coverage(planned.stages)
    assert sum(cost.to_render(g.spec, have.get(g.content_key, {}))
               for g in added.new if g.kind == "generate") == 3 * 10 * 256

"""CLIP at embedded scale: a tiny CLIP trained on captioned real, generated
and mixed digits through the real entry point, judged zero-shot on the real
test digits; and its exact resume after a kill."""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from test_end_to_end import done_files, spawn_launch

from conftest import SMALL_STUDY, read_generated, run_module
from synscale.plan import state
from synscale.plan.graph import Plan

pytestmark = pytest.mark.slow

CLIP_EDITS = {
    'sources = ["real", "synthetic"]':
        'sources = ["real", "synthetic", "mixture"]\nmixture_images_per_class = [16]\n'
        'synthetic_shares = [0.25]',
    "real_images_per_class = [4, 8, 16]": "real_images_per_class = [16]",
    "synthetic_images_per_class = [4, 8, 16]": "synthetic_images_per_class = [16]",
    "[generate]": '[generate]\nprompts = ["clip-templates-80"]',
    "[model]": '[model]\nobjective = "clip"\nembed_dim = 32\ncontext_length = 16',
    "width = [16]": "width = [32]",
    "min_steps = 20": "min_steps = 120\nlr = 2e-3\nlog_every = 10\ncheckpoint_every = 40",
    "max_steps = 40": "max_steps = 120",
    "[backend]": '[evaluate]\nzero_shot_templates = ["clip-templates-80", "clip-templates-7"]'
                 '\n\n[backend]',
}


def clip_study(tmp_path, name, **more):
    text = SMALL_STUDY.format(name=name, workers=2)
    for old, new in {**CLIP_EDITS, **more}.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_tiny_clip_on_captioned_digits_classifies_zero_shot_above_chance(tmp_path):
    study = clip_study(tmp_path, "clip")
    r = run_module("synscale.launch", study, "--root", tmp_path / "runs", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs/clip"
    plan = Plan.from_json((run / "plan.json").read_text())
    evaluations = plan.of_kind("evaluate")
    # three trainings (real, synthetic, a 25% mixture), each scored with both template sets
    assert len(evaluations) == 6 and all(state.is_done(run / "stages/evaluate" / e.id)
                                         for e in evaluations)
    for e in evaluations:
        m = state.read_json(run / "stages/evaluate" / e.id / "metrics.json")
        assert m["zero_shot_templates"] == e.axes["templates"]
        assert m["top1"] > 0.3, (e.axes, m["top1"])  # chance is 0.1 over ten digits
        assert np.isfinite(m["loss"]) and m["classes_scored"] == 10
    # captions: a generated image's is its prompt; a real one's a template around its name
    real_pack, synthetic_pack = (next(p for p in plan.of_kind("pack") if p.spec["source"] == s)
                                 for s in ("real", "synthetic"))
    captions = state.read_json(run / "stages/pack" / synthetic_pack.id / "captions.json")
    prompts = np.concatenate([read_generated(run / "stages/generate" / g)["prompts"]
                              for g in synthetic_pack.inputs])
    assert captions == [[str(p)] for p in prompts]
    real = state.read_json(run / "stages/pack" / real_pack.id / "captions.json")
    from synscale.prompts.strategies import templates
    index = state.read_json(run / "stages/pack" / real_pack.id / "index.json")
    first_of = {c: o for c, o in enumerate(index["class_offsets"])}
    for c, row in first_of.items():
        (caption,) = real[row]
        assert caption in {t.format(f"digit {c}").rstrip(".") for t in templates(80)}
    # the mixture: 12 real + 4 generated images per class, and batches of 24 + 8
    (mixture,) = [t for t in plan.of_kind("train") if t.axes["source"] == "mixture"]
    m = state.read_json(run / "stages/train" / mixture.id / "manifest.json")
    assert mixture.inputs == (real_pack.id, synthetic_pack.id)
    assert [(p["pack"], p["share"], p["images_per_class"], p["micro_batch"])
            for p in m["parts"]] == [(real_pack.id, 0.75, 12, 24), (synthetic_pack.id, 0.25, 4, 8)]
    assert m["objective"] == "clip" and m["images"] == 160
    # the analysis keeps the template sets and the share apart
    with open(run / "results/metrics.csv") as f:
        header = f.readline().strip().split(",")
    assert "templates" in header and "synthetic_share" in header
    fits = json.loads((run / "results/fits.json").read_text())
    assert fits  # gathered and fitted without error

    # Killed after its checkpoint at step 40, the real CLIP training resumes
    # there and ends with the losses of the uninterrupted one above.
    killed = clip_study(tmp_path, "clip", **{
        'sources = ["real", "synthetic"]': 'sources = ["real"]',
        "[backend]": '[evaluate]\nzero_shot_templates = ["clip-templates-7"]\n\n[backend]'})
    (train,) = [t for t in plan.of_kind("train") if t.axes["source"] == "real"]
    root = tmp_path / "killed"
    proc = spawn_launch(killed, root, "--json", stdout=subprocess.PIPE, text=True)
    log = root / "clip/stages/train" / train.id / "log.txt"
    deadline = time.time() + 600
    while not (log.exists() and "step 60/" in log.read_text()):
        assert time.time() < deadline and proc.poll() is None, "launch ended before the kill"
        time.sleep(0.05)
    os.kill(state.read_json(log.parent / "attempt.json")["pid"], signal.SIGKILL)
    proc.communicate(timeout=600)
    assert proc.returncode == 1 and not (log.parent / "DONE").exists()
    assert list((log.parent / "checkpoints").glob("step*/COMPLETE"))
    r = run_module("synscale.launch", killed, "--root", root, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = state.read_json(log.parent / "manifest.json")
    whole = state.read_json(run / "stages/train" / train.id / "manifest.json")
    assert resumed["resumed_at_steps"] == [40] and whole["resumed_at_steps"] == []
    assert [s for s, _ in resumed["loss_curve"]] == [s for s, _ in whole["loss_curve"]]
    for (_, a), (_, b) in zip(resumed["loss_curve"], whole["loss_curve"]):
        assert a == pytest.approx(b, abs=1e-4)
    assert len(done_files(root / "clip")) == 1 + 1 + 1  # pack, train, one evaluation


@pytest.mark.parametrize("arch,embed", [("ViT-S-32", 384), ("vit_tiny_patch16_224", 512)])
def test_named_clip_models_build_at_the_study_resolution(arch, embed):
    """open_clip configurations by name, and a timm image tower with
    open_clip's ViT-B-16 text tower, at 64 px and 16-token captions."""
    import torch

    from synscale.models.clip import build_clip, tokenizer, zero_shot_weights
    from synscale.prompts.classes import digits
    from synscale.study.specs import ModelSpec

    model = build_clip(ModelSpec(arch, context_length=16), (3, 64, 64))
    tokens = tokenizer(16)(["a photo of a digit 3", "a sketch of a digit 4"])
    assert tokens.shape == (2, 16)
    with torch.no_grad():
        image, text, scale = model(torch.randn(2, 3, 64, 64), tokens)
    assert image.shape == text.shape == (2, embed)
    assert torch.allclose(image.norm(dim=1), torch.ones(2), atol=1e-5)  # normalized features
    weights = zero_shot_weights(model.eval(), digits()[:3], ["a photo of a {}."], tokenizer(16))
    assert weights.shape == (3, embed)

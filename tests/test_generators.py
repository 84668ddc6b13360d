"""The diffusers generators, each a tiny random pipeline saved like a real
checkpoint, through the real generate stage on the CPU."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tiny_pipelines as tiny
from conftest import ROOT, at_second_shard, read_generated
from synscale.data.shards import paths
from synscale.plan import state
from synscale.plan.graph import Stage
from synscale.prompts.classes import imagenet1k
from synscale.prompts.strategies import pick, templates
from synscale.runtime.harness import execute

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    stage1, stage2 = tiny.imagen(root / "if")
    return {"sd": str(tiny.stable_diffusion(root / "sd")),
            "sdxl": str(tiny.stable_diffusion_xl(root / "sdxl")),
            "if": [str(stage1), str(stage2)], "if-base": [str(stage1)],
            "muse": str(tiny.muse(root / "muse"))}


def spec(generator, weights, **changes):
    out = {"generator": generator, "weights": weights, "prompts": "clip-templates-7",
           "guidance": 2.0, "scheduler": "default", "steps": 2, "batch_size": 2,
           "shard_images": 2, "image_format": "png", "seed": 5,
           "indices": [0, 4], "classes": [0, 2],
           "data": {"dataset": "imagefolder", "classes": "imagenet-1k"},
           "resolution": 0, "precision": "fp32", "attention": "sdpa", "channels_last": False,
           "compile": False, "device": "cpu",
           "options": {"sr_steps": 2, "sr_guidance": 3.0, "noise_level": 250}
           if generator == "imagen" else {}}
    return {**out, **changes}


@pytest.mark.parametrize("generator, key, side, pipeline", [
    ("stable-diffusion", "sd", 32, "StableDiffusionPipeline"),
    ("stable-diffusion", "sdxl", 32, "StableDiffusionXLPipeline"),
    ("imagen", "if", 16, "IFPipeline + IFSuperResolutionPipeline"),
    ("imagen", "if-base", 8, "IFPipeline"),
    ("muse", "muse", 4, "AmusedPipeline"),
])
def test_each_generator_renders_shards_with_per_image_metadata(checkpoints, tmp_path, generator,
                                                               key, side, pipeline):
    from synscale.plan.footprint import image_side
    planned = spec(generator, checkpoints[key])
    assert image_side(planned) == side  # the dry run reads it from the checkpoint's configs
    summary = execute(str(tmp_path), Stage("g", "generate", planned), {})
    assert summary["images_rendered"] == 8 and summary["shards"] == 4
    folder = tmp_path / "stages/generate/g"
    data = read_generated(folder)
    assert data["images"].dtype == np.uint8 and data["images"].shape == (8, side, side, 3)
    assert data["images"].std() > 0  # not a blank canvas
    assert list(data["labels"]) == [0] * 4 + [1] * 4
    tench, goldfish = imagenet1k()[:2]
    assert list(data["prompts"]) == [pick([t.format(c.clip_name).rstrip(".") for t in templates(7)],
                                          5, c.index, i) for c in (tench, goldfish) for i in range(4)]
    with np.load(paths(folder)[0]) as shard:
        assert list(shard["guidance"]) == [2.0, 2.0] and list(shard["steps"]) == [2, 2]
        assert list(shard["generator"]) == [generator] * 2 and list(shard["resolution"]) == [side] * 2
    manifest = state.read_json(folder / "manifest.json")
    assert manifest["guidance"] == 2.0 and manifest["guidance_scale"] == 3.0
    assert manifest["pipeline"]["pipeline"] == pipeline
    assert manifest["image_shape"] == [side, side, 3]
    assert set(manifest["prompt_pool_sizes"].values()) == {7}


def test_guidance_t_reaches_each_pipeline_as_one_plus_t(checkpoints):
    from synscale import generators
    from synscale.generators.pipeline import RenderOptions

    calls = []

    def spy(pipe):
        real = pipe.__call__

        class Spy:
            def __getattr__(self, name):
                return getattr(pipe, name)

            def __call__(self, *args, **kwargs):
                calls.append(kwargs)
                return real(*args, **kwargs)
        return Spy()

    sd = generators.load("stable-diffusion", checkpoints["sd"], RenderOptions(device="cpu"),
                         "dpm-solver", {})
    assert type(sd.pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    sd.pipe = spy(sd.pipe)
    sd.render(["a tench"], [1], 0.5, 2)
    imagen = generators.load("imagen", checkpoints["if"], RenderOptions(device="cpu"), "default",
                             {"sr_steps": 2, "sr_guidance": 1.0, "noise_level": 100})
    imagen.denoise, imagen.sr = spy(imagen.denoise), spy(imagen.sr)
    imagen.render(["a tench"], [1], 4.0, 2)
    assert [(c["guidance_scale"], c["num_inference_steps"]) for c in calls] == \
        [(1.5, 2), (5.0, 2), (2.0, 2)]
    assert calls[2]["noise_level"] == 100


# killed with the second shard written under its temporary name
RENDER = """
import json, sys
from synscale.runtime.harness import execute
from synscale.plan.graph import Stage
print(json.dumps(execute(sys.argv[1], Stage("g", "generate", {spec!r}), {{}})))
"""
STOP_AT_SECOND_SHARD = at_second_shard("os._exit(9)") + RENDER


def render(script: str, s: dict, root):
    """The stage in a process of its own, as a worker or a Slurm task runs it
    (a process that ran other work before may differ in float details, such
    as its thread count or matmul settings)."""
    return subprocess.run([sys.executable, "-c", script.format(spec=s), str(root)], cwd=ROOT,
                          capture_output=True, text=True)


def test_kill_mid_shard_then_resume_gives_bit_identical_images(checkpoints, tmp_path):
    import json
    s = spec("stable-diffusion", checkpoints["sd"])
    assert render(RENDER, s, tmp_path / "whole").returncode == 0
    whole = tmp_path / "whole/pool/g"  # the config's pool (the stage's content: its id here)
    r = render(STOP_AT_SECOND_SHARD, s, tmp_path / "killed")
    assert r.returncode == 9, r.stderr[-2000:]
    killed = tmp_path / "killed/pool/g"
    assert not (tmp_path / "killed/stages/generate/g/DONE").exists()
    assert len(list(killed.glob("shard-*.npz"))) == 1
    assert len(list(killed.glob(f".shard-*{state.TMP_SUFFIX}"))) == 1
    r = render(RENDER, s, tmp_path / "killed")
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads(r.stdout.strip().splitlines()[-1])
    assert again["images_rendered"] == 8 - 2  # the first shard was kept
    assert not list(killed.glob(f".*{state.TMP_SUFFIX}"))
    for shard in whole.glob("shard-*.npz"):
        assert (killed / shard.name).read_bytes() == shard.read_bytes()


def test_scores_are_stored_per_image(checkpoints, tmp_path):
    s = spec("stable-diffusion", checkpoints["sd"], scores=["recognizability", "clip"],
             score_classifier=str(tiny.classifier(tmp_path / "classifier")),
             score_clip_model=str(tiny.clip_model(tmp_path / "clip")))
    execute(str(tmp_path / "run"), Stage("g", "generate", s), {})
    data = {}
    for shard in paths(tmp_path / "run/stages/generate/g"):
        with np.load(shard) as z:
            for key in ("recognizability", "clip_score"):
                data.setdefault(key, []).extend(z[key].tolist())
    assert len(data["recognizability"]) == len(data["clip_score"]) == 8
    # a random 1000-way classifier: probabilities near 1/1000, never outside [0, 1]
    assert all(0 < p < 0.05 for p in data["recognizability"])
    assert all(0 <= c <= 100 for c in data["clip_score"]) and len(set(data["clip_score"])) > 1


def test_embedded_ddpm_images_score_as_recognizable_digits(tmp_path):
    from test_generate import SPEC
    execute(str(tmp_path), Stage("g", "generate", {**SPEC, "scores": ["recognizability"]}), {})
    scores = np.concatenate([np.load(p)["recognizability"]
                             for p in paths(tmp_path / "stages/generate/g")])
    assert len(scores) == 16 and scores.mean() > 0.8  # the DDPM draws recognizable digits


CACHED = """
import sys
from synscale import generators
from synscale.generators.pipeline import RenderOptions
from synscale.generators.weights import WeightsError, resolve
print(resolve("tiny-org/tiny-sd"))
sd = generators.load("stable-diffusion", "tiny-org/tiny-sd", RenderOptions(device="cpu"), "default", {})
print(sd.render(["a tench"], [3], 1.0, 2)[0].shape)
try:
    resolve("tiny-org/absent")
except WeightsError as e:
    print("ERROR", e)
"""


def test_hugging_face_ids_load_from_the_local_cache_offline(checkpoints, tmp_path):
    import os
    import shutil
    # the cache's layout: models--<org>--<name>/{refs/main, snapshots/<revision>/...}
    repo = tmp_path / "hub/models--tiny-org--tiny-sd"
    shutil.copytree(checkpoints["sd"], repo / "snapshots/0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text("0123abcd")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", CACHED], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0] == str(repo / "snapshots/0123abcd")
    assert lines[1] == "(1, 32, 32, 3)"
    assert lines[2].startswith("ERROR tiny-org/absent: not in the Hugging Face cache") \
        and "HF_HUB_OFFLINE=1 is set" in lines[2] and "huggingface-cli download" in lines[2]


def test_speed_options_render_the_same_images_within_rounding(checkpoints, tmp_path):
    from synscale import generators
    from synscale.generators.pipeline import RenderOptions

    def render(**options):
        g = generators.load("stable-diffusion", checkpoints["sd"],
                            RenderOptions(device="cpu", **options), "default", {})
        return g.render(["a tench", "a goldfish"], [1, 2], 2.0, 2)[0].astype(int)

    plain = render()
    assert np.abs(render(attention="eager", channels_last=True) - plain).max() <= 2
    half = render(precision="bf16")
    assert half.shape == plain.shape and np.abs(half - plain).mean() < 20


def test_safety_checker_flags_are_stored_per_image(tmp_path):
    weights = str(tiny.stable_diffusion(tmp_path / "sd-checked", flag_everything=True))
    done = execute(str(tmp_path / "run"), Stage("g", "generate", spec("stable-diffusion", weights)), {})
    assert done["flagged_unsafe"] == 8
    folder = tmp_path / "run/stages/generate/g"
    flags = np.concatenate([np.load(p)["nsfw"] for p in paths(folder)])
    assert flags.tolist() == [True] * 8
    assert state.read_json(folder / "manifest.json")["pipeline"]["safety_checker"] is True


def test_footprint_counts_the_parameters_a_render_loads_from_the_files(checkpoints):
    import diffusers
    import torch

    from synscale.plan import footprint

    def loaded(pipe):
        return sum(p.numel() for m in pipe.components.values()
                   if isinstance(m, torch.nn.Module) for p in m.parameters())

    sd = diffusers.StableDiffusionPipeline.from_pretrained(checkpoints["sd"])
    assert footprint.generator_params({"generator": "stable-diffusion",
                                       "weights": checkpoints["sd"]}) == loaded(sd)
    stage1 = diffusers.IFPipeline.from_pretrained(checkpoints["if"][0], watermarker=None)
    stage2 = diffusers.IFSuperResolutionPipeline.from_pretrained(
        checkpoints["if"][1], text_encoder=None, tokenizer=None, watermarker=None)
    assert footprint.generator_params({"generator": "imagen", "weights": checkpoints["if"]}) \
        == loaded(stage1) + loaded(stage2)
    # stage II's folder has a text encoder of its own, which the render leaves out
    from synscale.generators.weights import parameter_count
    assert parameter_count(Path(checkpoints["if"][1])) > loaded(stage2)
    # weights that are not here: the table's figure for the usual checkpoint
    assert footprint.generator_params({"generator": "muse", "weights": "nobody/absent"}) \
        == footprint.GENERATOR_PARAMS["muse"]


def test_imagen_holds_t5_at_a_precision_of_its_own(checkpoints):
    """bf16 T5 beside fp32 UNets: how IF fits a machine without native bf16
    (fp32 T5-XXL is 19 GB); the render and the dry run's memory both say so."""
    import torch

    from synscale import generators
    from synscale.generators.pipeline import RenderOptions
    from synscale.plan import footprint

    def render(**options):
        g = generators.load("imagen", checkpoints["if"], RenderOptions(device="cpu", **options),
                            "default", {"sr_steps": 2})
        return g, g.render(["a tench", "a goldfish"], [1, 2], 2.0, 2)[0].astype(int)

    mixed, images = render(text_encoder_precision="bf16")
    assert mixed.base.text_encoder.dtype == torch.bfloat16
    assert mixed.base.unet.dtype == mixed.sr.unet.dtype == torch.float32
    _, plain = render()
    assert images.shape == plain.shape and np.abs(images - plain).mean() < 20
    both = footprint.generator_params({"generator": "imagen", "weights": checkpoints["if"]})
    t5 = sum(p.numel() for p in mixed.base.text_encoder.parameters())
    planned = {"generator": "imagen", "weights": checkpoints["if"], "precision": "fp32"}
    assert footprint.generator_bytes(planned) == 4 * both
    assert footprint.generator_bytes({**planned, "text_encoder_precision": "bf16"}) \
        == 4 * both - 2 * t5


def test_sixteen_bit_rendering_on_a_cpu_that_emulates_it_is_said(monkeypatch):
    from synscale.generators import pipeline
    from synscale.stages.generate import emulated_half
    from synscale.study.specs import GenerateSpec

    planned = spec("stable-diffusion", "/ckpt/sd", precision="bf16")
    planned = GenerateSpec(**{k: v for k, v in planned.items() if k not in ("data",)},
                           data=None)
    monkeypatch.setattr(pipeline, "cpu_has_native_bf16", lambda: False)
    assert "~300x slower" in emulated_half(planned) and "fp32" in emulated_half(planned)
    assert emulated_half(GenerateSpec(**{**planned.__dict__, "precision": "fp32"})) == ""
    assert emulated_half(GenerateSpec(**{**planned.__dict__, "device": "cuda"})) == ""
    monkeypatch.setattr(pipeline, "cpu_has_native_bf16", lambda: True)
    assert emulated_half(planned) == ""

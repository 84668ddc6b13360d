#!/usr/bin/env python
"""The generate stage through pipelines built at the real models'
configurations, with random weights: Stable Diffusion 1.5 at 512 px, DeepFloyd
IF stage I-M then stage II-M to 256 px (with T5-XXL's encoder), aMUSEd-256.
The tiny pipelines of the tests prove the code paths; these prove the shapes,
the memory and the files of the checkpoints users load.

    tools/real_pipelines.py [--only sd15,if-m,amused-256] [--dir DIR]
                            [--precision auto] [--device cpu|cuda] [--keep] [--json]

For each pipeline, three fresh processes, each reporting its seconds and peak
RSS (getrusage):
  build     every component from tools/real_configs/<name>.json with random
            weights, saved with save_pretrained: a downloaded checkpoint's
            layout, which the generators load through their real code;
  generate  the generate stage's runner, as a worker runs it, on a one-class
            study (two images in two sampler steps, JPEG 95 shards);
  pack      the pack stage over those shards (FFCV, 224 px).
Prints the parameters per component, the bytes on disk, each step's seconds
and peak memory, and the dry-run's estimates for the same stage beside them.
The checkpoint is saved in bf16 (fp16 under --precision fp16), as the
published 16-bit variants are, and deleted after its pipeline unless --keep:
SD 1.5 takes 2.7 GB on disk, IF 11.2 GB (T5-XXL's encoder is 9.5 of them).

--precision auto renders in bf16 on a GPU or a CPU that computes bf16 in
hardware (AVX512-BF16, AMX). On one that does not (AVX2: torch emulates bf16
and a UNet's convolutions run ~300x slower than fp32), it renders in fp32,
IF with T5-XXL held in bf16 ([generate] text_encoder_precision): in fp32
T5-XXL alone is 19 GB.

Tokenizers: CLIP's is the real one (its BPE merges ship with open_clip);
T5's sentencepiece model does not ship here, so IF reads a character-level
vocabulary (the prompt's token count differs, the shapes do not).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import string
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS = ROOT / "tools" / "real_configs"
PIPELINES = ("sd15", "if-m", "amused-256")
# what the study's [generate] table says for each
GENERATOR = {"sd15": "stable-diffusion", "if-m": "imagen", "amused-256": "muse"}
SIDE = {"sd15": 512, "if-m": 256, "amused-256": 256}
# disk a pipeline's checkpoint and run take while it is checked, bf16 (measured 2.7, 11.2, 2.0)
DISK_GB = {"sd15": 3.5, "if-m": 12.5, "amused-256": 3.0}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def configs(name: str) -> dict:
    return {k: v for k, v in json.loads((CONFIGS / f"{name}.json").read_text()).items()
            if not k.startswith("_")}  # "_source" and other notes


@contextmanager
def default_dtype(dtype):
    """Weights created in `dtype` from the start: T5-XXL's encoder is 19 GB
    in fp32, more than a 24 GB machine holds beside anything else."""
    import torch
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def clip_tokenizer():
    """CLIP's own BPE tokenizer (49,408 tokens), from the merges open_clip ships."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode().split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + \
        ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                         model_max_length=77)


def t5_tokenizer():
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    chars = string.ascii_letters + string.digits + string.punctuation
    pieces += [(c, -5.0) for c in chars] + [("\u2581" + c, -4.0) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=77)


def build_sd15(folder: Path, dtype) -> None:
    import diffusers
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

    c = configs("sd15")
    scheduler = diffusers.PNDMScheduler(**c["scheduler"])
    with default_dtype(dtype):
        pipe = diffusers.StableDiffusionPipeline(
            unet=diffusers.UNet2DConditionModel(**c["unet"]),
            vae=diffusers.AutoencoderKL(**c["vae"]),
            text_encoder=CLIPTextModel(CLIPTextConfig(**c["text_encoder"])),
            tokenizer=clip_tokenizer(), scheduler=scheduler,
            safety_checker=StableDiffusionSafetyChecker(CLIPConfig(**c["safety_checker"])),
            feature_extractor=CLIPImageProcessor(**c["feature_extractor"]),
            requires_safety_checker=True)
    pipe.save_pretrained(folder, max_shard_size="2GB")


def build_if_m(folder: Path, dtype) -> None:
    import diffusers
    from transformers import T5Config, T5EncoderModel

    c = configs("if-m")
    tokenizer = t5_tokenizer()
    schedulers = {k: diffusers.DDPMScheduler(**c[k])
                  for k in ("scheduler", "sr_scheduler", "sr_image_noising_scheduler")}
    with default_dtype(dtype):
        text = T5EncoderModel(T5Config(**c["text_encoder"]))
        diffusers.IFPipeline(
            tokenizer=tokenizer, text_encoder=text,
            unet=diffusers.UNet2DConditionModel(**c["unet"]),
            scheduler=schedulers["scheduler"], safety_checker=None, feature_extractor=None,
            watermarker=None, requires_safety_checker=False,
        ).save_pretrained(folder / "stage1", max_shard_size="2GB")
        del text
        # stage II renders from stage I's embeddings (generators/imagen.py loads
        # it without a text encoder), so none is saved with it
        diffusers.IFSuperResolutionPipeline(
            tokenizer=tokenizer, text_encoder=None,
            unet=diffusers.UNet2DConditionModel(**c["sr_unet"]),
            scheduler=schedulers["sr_scheduler"],
            image_noising_scheduler=schedulers["sr_image_noising_scheduler"],
            safety_checker=None, feature_extractor=None, watermarker=None,
            requires_safety_checker=False,
        ).save_pretrained(folder / "stage2", max_shard_size="2GB")


def build_amused_256(folder: Path, dtype) -> None:
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    c = configs("amused-256")
    scheduler = diffusers.AmusedScheduler(**c["scheduler"])
    with default_dtype(dtype):
        pipe = diffusers.AmusedPipeline(
            vqvae=diffusers.VQModel(**c["vqvae"]), tokenizer=clip_tokenizer(),
            text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**c["text_encoder"])),
            transformer=diffusers.UVit2DModel(**c["transformer"]), scheduler=scheduler)
    pipe.save_pretrained(folder, max_shard_size="2GB")


BUILDERS = {"sd15": build_sd15, "if-m": build_if_m, "amused-256": build_amused_256}


def weights_of(name: str, folder: Path):
    return [str(folder / "stage1"), str(folder / "stage2")] if name == "if-m" else str(folder)


def render_precision(name: str, asked: str, device: str) -> tuple[str, str]:
    """(precision, text_encoder_precision) of a pipeline's render."""
    from synscale.generators.pipeline import cpu_has_native_bf16

    if asked != "auto":
        return asked, ""
    if device == "cuda" or cpu_has_native_bf16():
        return "bf16", ""
    return "fp32", "bf16" if name == "if-m" else ""


def _build_here(name: str, folder: Path, precision: str) -> dict:
    import torch

    from synscale.generators.weights import parameter_count

    torch.manual_seed(0)
    started = time.perf_counter()
    BUILDERS[name](folder, {"bf16": torch.bfloat16, "fp16": torch.float16,
                            "fp32": torch.float32}[precision])
    seconds = time.perf_counter() - started
    parts = {}
    for stage in ([folder / "stage1", folder / "stage2"] if name == "if-m" else [folder]):
        for sub in sorted(p for p in stage.iterdir() if p.is_dir()):
            n = parameter_count(sub)
            if n:
                parts[(f"{stage.name}/" if name == "if-m" else "") + sub.name] = n
    return {"seconds": seconds, "peak_rss_gb": peak_rss_gb(), "components": parts,
            "params": sum(parts.values()),
            "bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())}


STUDY = """
[study]
name = "real-{name}"
[data]
dataset = "imagefolder"
classes = "{root}/classes.txt"
train_dir = "{root}/train"
val_dir = "{root}/val"
resolution = 224
[sweep]
sources = ["synthetic"]
synthetic_images_per_class = [2]
[generate]
generators = ["{generator}"]
weights = {{ {generator} = {weights} }}
prompts = ["clip-templates-7"]
guidance = [3.0]
steps = 2
batch_size = 2
device = "{device}"
precision = "{precision}"
{text_encoder}image_format = "jpeg"
image_quality = 95
{options}
[model]
width = [32]
depth = 1
[evaluate]
sets = ["imagenet-val"]
"""


def write_study(name: str, root: Path, weights, precision: str, device: str = "cpu",
                text_encoder: str = "") -> Path:
    """A one-class (tench) study of two synthetic images, in the study format."""
    for sub in ("train", "val"):
        (root / sub / "n01440764").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("n01440764\n")
    options = "[generate.options.imagen]\nsr_steps = 2\n" if name == "if-m" else ""
    path = root / f"{name}.toml"
    path.write_text(STUDY.format(name=name, root=root, generator=GENERATOR[name],
                                 weights=json.dumps(weights), precision=precision,
                                 text_encoder=f'text_encoder_precision = "{text_encoder}"\n'
                                 if text_encoder else "",
                                 device=device, options=options))
    return path


def _stage_here(study: str, kind: str, root: str) -> dict:
    from synscale.runtime.harness import execute
    from synscale.study.expand import expand
    from synscale.study.load import load_study

    plan = expand(load_study(study))
    (stage,) = plan.of_kind(kind)
    started = time.perf_counter()
    summary = execute(root, stage, {i: plan.by_id[i].kind for i in stage.inputs})
    return {"seconds": time.perf_counter() - started, "peak_rss_gb": peak_rss_gb(),
            "summary": summary, "id": stage.id}


def in_fresh_process(*args: str) -> dict:
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_one(name: str, work: Path, precision: str, keep: bool, device: str = "cpu") -> dict:
    import numpy as np

    from synscale.data.shards import Rows, Shard, paths
    from synscale.plan import footprint
    from synscale.study.expand import expand
    from synscale.study.load import load_study

    folder = work / "weights" / name
    render, text = render_precision(name, precision, device)
    build = in_fresh_process("--build", name, str(folder), "fp16" if render == "fp16" else "bf16")
    study = write_study(name, work / name, weights_of(name, folder), render, device, text)
    run = work / name / "run"
    generate = in_fresh_process("--stage", str(study), "generate", str(run))
    pack = in_fresh_process("--stage", str(study), "pack", str(run))
    gen_dir = run / "stages/generate" / generate["id"]
    rows = Rows([gen_dir])
    images = np.stack([rows[i] for i in range(len(rows))])
    first = Shard(paths(gen_dir)[0])
    spec = expand(load_study(study)).of_kind("generate")[0].spec
    estimate = footprint.KindFootprint()
    footprint._generate(estimate, spec, gpu=False)
    index = json.loads((run / "stages/pack" / pack["id"] / "index.json").read_text())
    out = {"name": name, "precision": render, "text_encoder_precision": text or render,
           "build": build, "generate": generate,
           "pack": pack, "image_shape": list(images.shape[1:]),
           "image_std": float(images.std()), "encoding": first.encoding,
           "nsfw": rows.meta("nsfw").tolist() if "nsfw" in first.files else None,
           "shard_bytes": sum(p.stat().st_size for p in paths(gen_dir)),
           "pack_rows": index["rows"], "pack_shape": index["shape"],
           "estimated_params": footprint.generator_params(spec),
           "estimated_node_gb": estimate.node_gb, "estimated_bytes": estimate.bytes}
    if not keep:
        shutil.rmtree(folder)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(PIPELINES))
    p.add_argument("--dir", type=Path, help="scratch folder (default: a temporary one)")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="the render's (auto: bf16 where the device computes it natively)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the generate stage renders (the build is always on the CPU)")
    p.add_argument("--keep", action="store_true", help="keep the checkpoints and runs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--build", nargs=3, metavar=("NAME", "FOLDER", "PRECISION"),
                   help=argparse.SUPPRESS)  # one step, in a process of its own
    p.add_argument("--stage", nargs=3, metavar=("STUDY", "KIND", "ROOT"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.build:
        print(json.dumps(_build_here(a.build[0], Path(a.build[1]), a.build[2])))
        return {}
    if a.stage:
        print(json.dumps(_stage_here(*a.stage), default=str))
        return {}
    names = [n for n in a.only.split(",") if n]
    unknown = sorted(set(names) - set(PIPELINES))
    if unknown:
        p.error(f"--only: {', '.join(unknown)} unknown; choose from {', '.join(PIPELINES)}")
    need = max(DISK_GB[n] for n in names)
    free = shutil.disk_usage(a.dir or tempfile.gettempdir()).free / 1e9
    if free < need:  # each checkpoint is deleted before the next is built: the largest counts
        print(f"error: {a.dir or tempfile.gettempdir()}: {free:.1f} GB free; the checkpoints "
              f"built here need {need:.0f} GB (--dir elsewhere)", file=sys.stderr)
        raise SystemExit(2)
    work = Path(tempfile.mkdtemp(prefix="real-pipelines-", dir=a.dir))
    try:
        from synscale.generators.pipeline import cpu_has_native_bf16
        result = {"cpu_native_bf16": cpu_has_native_bf16(),
                  "pipelines": [run_one(n, work, a.precision, a.keep, a.device) for n in names]}
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        print(json.dumps(result, indent=1, default=str))
    else:
        _show(result)
    return result


def _show(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title="real-configuration pipelines, random weights, on this machine's CPU")
    for col in ("pipeline", "precision", "params", "disk GB", "build s/GB", "generate s/GB", "pack s/GB",
                "image", "est. GB"):
        t.add_column(col, justify="right")
    for r in result["pipelines"]:
        steps = [f"{r[k]['seconds']:.0f}/{r[k]['peak_rss_gb']:.1f}"
                 for k in ("build", "generate", "pack")]
        held = r["precision"] + (f" (T5 {r['text_encoder_precision']})"
                                 if r["text_encoder_precision"] != r["precision"] else "")
        t.add_row(r["name"], held, f"{r['build']['params'] / 1e9:.2f}B",
                  f"{r['build']['bytes'] / 1e9:.1f}", *steps,
                  f"{r['image_shape'][0]} px {r['encoding']}",
                  f"{r['estimated_node_gb']:.1f}")
    console = Console()
    console.print(t)
    for r in result["pipelines"]:
        console.print(f"{r['name']}: " + ", ".join(f"{k} {v / 1e6:.0f}M"
                                                   for k, v in r["build"]["components"].items()))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Images per second of synscale's generate stage against a plain loop over
the same diffusers pipeline called with its default settings.

    tools/bench_generate.py [--weights PATH_OR_ID] [--images 32] [--batch 8]
                            [--steps 20] [--sampler dpm-solver] [--precision fp16]
                            [--compile] [--channels-last] [--device auto] [--json]

Both sides render the same prompts (clip-templates-7 over ImageNet classes)
with the same checkpoint on the same device. The baseline is what a script
would do: `from_pretrained(path).to(device)`, then `pipe(prompt)` once per
image with the pipeline's defaults (its own sampler, 50 steps, fp32). synscale
batches, samples with --sampler at --steps (DPM-Solver++ at 20-25 steps
matches 50-step samplers in FID in its paper), and applies the precision,
attention and compile options. Model loading is left out of both timings.
Without --weights a tiny random Stable Diffusion is built (CPU smoke run;
its figures say nothing about a real model). `ratio` = synscale / baseline.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _prompts(n: int) -> list[str]:
    from synscale.prompts.classes import imagenet1k
    from synscale.prompts.strategies import pick, templates

    pool = list(templates(7))
    classes = imagenet1k()
    return [pick([t.format(c.clip_name).rstrip(".") for t in pool], 0, c.index, 0)
            for c in (classes[i % 1000] for i in range(n))]


def baseline(weights: str, prompts: list[str], device: str) -> dict:
    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(weights).to(device)
    pipe.set_progress_bar_config(disable=True)
    pipe(prompts[0])  # warm-up, as the stage's first batch is not excluded either
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    for prompt in prompts:
        pipe(prompt)
    sync()
    seconds = time.perf_counter() - start
    return {"images_per_second": len(prompts) / seconds, "seconds": seconds,
            "sampler": type(pipe.scheduler).__name__, "steps": 50, "batch": 1,
            "precision": "fp32"}


def synscale_stage(weights: str, n: int, args, device: str, root: Path) -> dict:
    from synscale.plan.graph import Stage
    from synscale.runtime.harness import execute

    spec = {"generator": "stable-diffusion", "weights": weights, "prompts": "clip-templates-7",
            "guidance": 6.5, "scheduler": args.sampler, "steps": args.steps,
            "batch_size": args.batch, "shard_images": args.batch, "image_format": "png",
            "seed": 0, "indices": [0, args.batch],
            "classes": [0, max(1, n // args.batch)],
            "data": {"dataset": "imagefolder", "classes": "imagenet-1k"},
            "resolution": 0, "precision": args.precision, "attention": "sdpa",
            "channels_last": args.channels_last, "compile": args.compile, "device": device,
            "options": {}}
    done = execute(str(root), Stage("bench", "generate", spec), {})
    return {"images_per_second": done["images_per_second"], "seconds": done["render_seconds"],
            "images": done["images_rendered"], "sampler": args.sampler, "steps": args.steps,
            "batch": args.batch, "precision": args.precision, "compile": args.compile,
            "channels_last": args.channels_last}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default="", help="a Stable Diffusion folder or HF id "
                   "(default: a tiny random one, built here)")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sampler", default="dpm-solver", choices=("ddim", "dpm-solver", "euler"))
    p.add_argument("--precision", default="", help="fp32, fp16 or bf16 (default: fp16 on a "
                   "GPU, fp32 on the CPU)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available()
                                                        else "cpu")
    args.precision = args.precision or ("fp16" if device == "cuda" else "fp32")
    n = max(args.batch, args.images // args.batch * args.batch)  # whole batches per class
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if not weights:
            sys.path.insert(0, str(ROOT / "tests"))
            import tiny_pipelines
            weights = str(tiny_pipelines.stable_diffusion(Path(tmp) / "tiny-sd"))
        ours = synscale_stage(weights, n, args, device, Path(tmp) / "run")
        base = baseline(weights, _prompts(n), device)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    result = {"device": name, "weights": args.weights or "tiny random Stable Diffusion",
              "images": n, "baseline": base, "synscale": ours,
              "ratio": ours["images_per_second"] / base["images_per_second"]}
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"generate: {result['weights']} on {name}, {n} images")
    for col in ("", "images/s", "sampler", "steps", "batch", "precision"):
        table.add_column(col)
    for label, r in (("diffusers default loop", base), ("synscale generate stage", ours)):
        table.add_row(label, f"{r['images_per_second']:.2f}", r["sampler"], str(r["steps"]),
                      str(r["batch"]), r["precision"])
    console = Console()
    console.print(table)
    console.print(f"ratio: {result['ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

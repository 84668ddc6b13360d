"""Train the embedded digits DDPM that ships in synscale/generators/weights/.

    .venv/bin/python tools/train_digits_ddpm.py --seed 0 --steps 10000

Reads the real training pool of `load_split(0, 45)` only; the held-out test
set is never touched. CPU-only and seeded: the same seed, step count and
thread count reproduce the same weights. Labels are replaced by the null
class with probability --class-dropout so that one network also learns the
unconditional model that classifier-free guidance subtracts. The exponential
moving average of the weights is what gets saved, because single late
iterates of a small diffusion model sample visibly worse than their average.

At the end it scores samples at several guidance values with the reference
classifier (recognizability and within-class diversity) and records that
table in the json next to the weights.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synscale.data.digits import NUM_CLASSES, load_split  # noqa: E402
from synscale.generators import ddpm  # noqa: E402

SPLIT_SEED, TEST_PER_CLASS = 0, 45
EVAL_GUIDANCE = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
# Chosen by hand from the evaluation table of the shipped seed-0 weights and
# stored in the json, so that weights and their sampling advice travel
# together. 50 DDPM steps: 30 scored the same, 50 leaves margin, and 5,000
# images at each of three guidance values still take under two minutes on
# one core. Recognizability saturates by t = 1 (diversity is lowest there);
# t = 4 is where over-guidance shows, which the study should see.
RECOMMENDED = {"steps": 50, "scheduler": "ddpm", "guidance": [0.0, 1.0, 4.0], "best_guidance": 1.0}


def unet_config(channels: tuple[int, ...]) -> dict:
    # No attention: at 8x8 and below it buys little and costs time. The
    # 8x8 level stays narrow because sampling cost is dominated by it.
    return {
        "sample_size": 8, "in_channels": 1, "out_channels": 1,
        "num_class_embeds": NUM_CLASSES + 1,  # + the null class for CFG
        "block_out_channels": list(channels), "layers_per_block": 1,
        "down_block_types": ["DownBlock2D"] * len(channels),
        "up_block_types": ["UpBlock2D"] * len(channels),
        "norm_num_groups": 4, "add_attention": False,
    }


def train(args, config: dict, x: np.ndarray, y: np.ndarray):
    import torch
    from diffusers import DDPMScheduler
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    unet = ddpm.build_unet(config["unet"]).train()
    ema = ddpm.build_unet(config["unet"]).eval().requires_grad_(False)
    ema.load_state_dict(unet.state_dict())
    noise_sched = DDPMScheduler(num_train_timesteps=config["num_train_timesteps"],
                                beta_schedule=config["beta_schedule"])
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = 200
    lr_at = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / args.steps))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    data_x, data_y = torch.from_numpy(x), torch.from_numpy(y)

    columns = (TextColumn("train"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn())
    running = None
    with Progress(*columns) as progress:
        task = progress.add_task("train", total=args.steps, loss=float("nan"))
        for step in range(args.steps):
            idx = torch.randint(len(data_x), (args.batch_size,), generator=gen)
            x0, labels = data_x[idx], data_y[idx].clone()
            labels[torch.rand(args.batch_size, generator=gen) < args.class_dropout] = ddpm.NULL_CLASS
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(config["num_train_timesteps"], (args.batch_size,), generator=gen)
            pred = unet(noise_sched.add_noise(x0, noise, t), t, class_labels=labels).sample
            loss = torch.nn.functional.mse_loss(pred, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            sched.step()
            # EMA warm-up: early on the average would be dominated by the
            # random init, so the decay ramps up to its target.
            decay = min(args.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for e, p in zip(ema.parameters(), unet.parameters()):
                    e.lerp_(p, 1 - decay)
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            if step % 20 == 0 or step == args.steps - 1:
                progress.update(task, completed=step + 1, loss=running)
    return ema, running


def evaluate(unet, config, split, per_class: int, steps: int, scheduler: str) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

    from synscale.models.reference import diversity, fit_reference, recognizability

    ref = fit_reference(split.train_x, split.train_y, seed=0)
    labels = np.repeat(np.arange(NUM_CLASSES), per_class)
    # Seeds far from anything the study draws, so this check never overlaps it.
    seeds = 1_000_000 + np.arange(len(labels))
    rows = [{"guidance": "real test", "recognizability": recognizability(ref, split.test_x, split.test_y),
             "diversity": diversity(ref, split.test_x, split.test_y), "images_per_s": None}]
    for g in EVAL_GUIDANCE:
        t0 = time.perf_counter()
        imgs = ddpm.sample(unet, config, labels, seeds, guidance=g, steps=steps, scheduler=scheduler)
        dt = time.perf_counter() - t0
        rows.append({"guidance": g, "recognizability": recognizability(ref, imgs, labels),
                     "diversity": diversity(ref, imgs, labels), "images_per_s": len(labels) / dt})
    table = Table(title=f"{per_class}/class, {scheduler} {steps} steps")
    for col in ("guidance", "recognizability", "diversity", "images/s"):
        table.add_column(col, justify="right")
    for r in rows:
        ips = "" if r["images_per_s"] is None else f"{r['images_per_s']:.0f}"
        table.add_row(str(r["guidance"]), f"{r['recognizability']:.3f}", f"{r['diversity']:.3f}", ips)
    Console().print(table)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--class-dropout", type=float, default=0.15)
    p.add_argument("--channels", default="8,16,32", help="UNet block_out_channels")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-per-class", type=int, default=50)
    p.add_argument("--out", type=Path, default=ddpm.WEIGHTS_DIR)
    args = p.parse_args(argv)

    import diffusers
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    split = load_split(SPLIT_SEED, TEST_PER_CLASS)
    config = {
        "unet": unet_config(tuple(int(c) for c in args.channels.split(","))),
        "num_train_timesteps": 1000,
        # Cosine schedule: the linear one wipes out an 8x8 image within the
        # first few hundred steps, wasting most timesteps on pure noise.
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "epsilon",
        "recommended": RECOMMENDED,
    }
    t0 = time.perf_counter()
    ema, loss = train(args, config, split.train_x, split.train_y)
    train_s = time.perf_counter() - t0
    config["training"] = {
        "seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        "lr_schedule": "200-step warmup, cosine to 0", "optimizer": "AdamW, grad clip 1.0",
        "ema_decay": args.ema, "class_dropout": args.class_dropout, "final_loss": round(loss, 5),
        "data": {"dataset": "sklearn digits", "split": "synscale.data.digits.load_split",
                 "split_seed": SPLIT_SEED, "test_per_class": TEST_PER_CLASS,
                 "train_images": int(len(split.train_y)), "uses_test_set": False},
        "threads": args.threads, "wall_s": round(train_s, 1),
        "torch": torch.__version__, "diffusers": diffusers.__version__,
        "python": platform.python_version(),
    }
    torch.set_num_threads(1)  # the evaluation's images/s is the one-core figure
    config["evaluation"] = evaluate(ema, config, split, args.eval_per_class,
                                    RECOMMENDED["steps"], RECOMMENDED["scheduler"])
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / ddpm.WEIGHTS_FILE.name
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(weights))
    weights.chmod(0o644)  # safetensors writes 0600; the file ships with the package
    (args.out / ddpm.CONFIG_FILE.name).write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB) after {train_s:.0f} s of training")


if __name__ == "__main__":
    main()

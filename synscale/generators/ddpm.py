"""The embedded generator: a small class-conditional DDPM for 8x8 digits.

A diffusers `UNet2DModel` with a class embedding predicts the noise. Class id
`NULL_CLASS` is the "no label" token it was trained with (by label dropout),
which gives the unconditional prediction classifier-free guidance needs.

Guidance follows the paper's convention, eps = (1 + t) * eps_cond - t * eps_uncond,
so t = 0 is the plain conditional model, not the unconditional one.

Each image draws its initial noise and every step's noise from its own
`torch.Generator` seeded by its seed, so an image is a function of (seed,
label, guidance, steps, scheduler) and not of which other images share the
batch - up to float rounding in batched convolutions (see `sample`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synscale.generators import SAMPLERS

NULL_CLASS = 10
SCHEDULERS = tuple(s for s in SAMPLERS["embedded-ddpm"] if s != "default")
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "digits_ddpm.safetensors"
CONFIG_FILE = WEIGHTS_DIR / "digits_ddpm.json"
# Images per UNet call: from a few hundred up, per-call Python overhead is
# negligible; the cap only bounds memory for very large requests.
CHUNK = 1000


def build_unet(config: dict):
    """A fresh `UNet2DModel` from its constructor kwargs (the json's "unet" entry)."""
    from diffusers import UNet2DModel

    # json turns tuples into lists; diffusers wants tuples for the block specs.
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return UNet2DModel(**kwargs)


def load_embedded():
    """The shipped weights and their config (UNet kwargs, schedule, provenance)."""
    from safetensors.torch import load_file

    for path in (CONFIG_FILE, WEIGHTS_FILE):
        if not path.is_file():
            raise FileNotFoundError(
                f"embedded DDPM file missing: {path} "
                "(regenerate it with tools/train_digits_ddpm.py)")
    config = json.loads(CONFIG_FILE.read_text())
    unet = build_unet(config["unet"])
    unet.load_state_dict(load_file(str(WEIGHTS_FILE)))
    unet.eval().requires_grad_(False)
    return unet, config


def make_scheduler(config: dict, name: str = "ddpm"):
    """The noise schedule the UNet was trained with, as a sampler.

    "ddpm" (ancestral, stochastic) is the default because it tolerates
    guidance; "ddim" (eta = 0) overshoots under guidance even at 50 steps
    (shipped weights: recognizability 0.71 at t = 1, 0.09 at t = 4).
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}
    if name not in classes:
        raise ValueError(f"unknown scheduler {name!r}; accepted: {', '.join(SCHEDULERS)}")
    # "trailing" spacing makes the first sampling step start from pure noise
    # (t = T-1); the default "leading" skips the noisiest steps when sampling
    # with few steps. Clipping the x0 estimate to the data range keeps guided
    # samples from running away.
    return classes[name](
        num_train_timesteps=config["num_train_timesteps"],
        beta_schedule=config["beta_schedule"],
        prediction_type=config.get("prediction_type", "epsilon"),
        clip_sample=True,
        timestep_spacing="trailing",
    )


def sample(unet, config: dict, labels: np.ndarray, seeds: Sequence[int],
           guidance: float, steps: int, scheduler: str = "ddpm") -> np.ndarray:
    """Generate one image per (label, seed): float32 (N, 1, 8, 8) in [-1, 1].

    Repeated calls with the same arguments are bit-identical. The same seed in
    a different batch gets the same noise, but the UNet's batched convolutions
    may round differently for other batch sizes, so cross-batch equality is
    only up to float tolerance.
    """
    import torch

    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    seeds = [int(s) for s in seeds]
    if len(labels) != len(seeds):
        raise ValueError(f"{len(labels)} labels but {len(seeds)} seeds")
    sched = make_scheduler(config, scheduler)  # validates the name before any work
    sched.set_timesteps(steps)
    shape = (1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    out = [np.zeros((0, *shape[1:]), np.float32)]
    with torch.inference_mode():
        for lo in range(0, len(seeds), CHUNK):
            out.append(_sample_chunk(unet, sched, labels[lo:lo + CHUNK],
                                     seeds[lo:lo + CHUNK], float(guidance), shape))
    return np.concatenate(out)


def _sample_chunk(unet, sched, labels, seeds, guidance, shape):
    import torch

    gens = [torch.Generator().manual_seed(s) for s in seeds]
    x = torch.cat([torch.randn(shape, generator=g) for g in gens]) * sched.init_noise_sigma
    y = torch.as_tensor(labels)
    # At t = 0 the unconditional branch has zero weight: skipping it halves the cost.
    guided = guidance != 0.0
    if guided:
        y = torch.cat([y, torch.full_like(y, NULL_CLASS)])
    for t in sched.timesteps:
        if guided:
            eps_c, eps_u = unet(torch.cat([x, x]), t, class_labels=y).sample.chunk(2)
            eps = (1.0 + guidance) * eps_c - guidance * eps_u
        else:
            eps = unet(x, t, class_labels=y).sample
        # Given a list, diffusers' randn_tensor draws each image's step noise
        # from that image's own generator, one call per batch item.
        x = sched.step(eps, t, x, generator=gens).prev_sample
    return x.clamp(-1.0, 1.0).numpy().astype(np.float32)

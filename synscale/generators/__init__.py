"""Text-to-image generators by study name. Heavy imports (torch, diffusers)
stay inside the classes, so naming and validating them is cheap.

Every generator renders a batch from (labels, prompts, seeds) at guidance t
(the paper's eps = (1+t)*eps_c - t*eps_u) and returns (images, safety flags
or None): uint8 NHWC RGB for the diffusers pipelines, float [-1, 1] NCHW
for the embedded DDPM, which conditions on the label instead of the prompt.
"""
from __future__ import annotations

import importlib

# name -> (module, class); each module's OPTIONS are its own study keys
# ([generate.options.<name>]) with their defaults.
FAMILIES = {
    "stable-diffusion": ("synscale.generators.stable_diffusion", "StableDiffusion"),
    "imagen": ("synscale.generators.imagen", "Imagen"),
    "muse": ("synscale.generators.muse", "Muse"),
}
# Samplers each accepts; "default" keeps the checkpoint's own.
SAMPLERS = {
    "embedded-ddpm": ("default", "ddpm", "ddim"),
    "stable-diffusion": ("default", "ddpm", "ddim", "dpm-solver", "euler"),
    "imagen": ("default", "ddpm", "dpm-solver"),
    "muse": ("default",),
}


def options_of(name: str) -> dict:
    if name not in FAMILIES:
        return {}
    return importlib.import_module(FAMILIES[name][0]).OPTIONS


def load(name: str, weights, options, sampler: str, extra: dict):
    module, cls = FAMILIES[name]
    return getattr(importlib.import_module(module), cls)(weights, options, sampler, extra)


class EmbeddedDDPM:
    """The shipped digits DDPM behind the same interface."""

    def __init__(self, sampler: str):
        from synscale.generators import ddpm

        self.unet, self.config = ddpm.load_embedded()
        self.sampler = "ddpm" if sampler == "default" else sampler
        self.describe = {"pipeline": "embedded DDPM (UNet2DModel)", "weights": "embedded"}

    def render(self, labels, prompts, seeds, t: float, steps: int):
        from synscale.generators import ddpm

        return ddpm.sample(self.unet, self.config, labels, seeds, t, steps, self.sampler), None

"""`muse`: the open Muse-class masked-token model aMUSEd (AmusedPipeline).

aMUSEd takes one random generator for a whole call (its token sampling is
batched), so each image is rendered in its own call with its own seed: that
keeps an image a function of (seed, class, index) at the cost of batching,
which matters little for a 12-step model."""
from __future__ import annotations

import numpy as np

from synscale.generators.pipeline import (
    RenderOptions,
    device_and_dtype,
    guidance_scale,
    speed_up,
    to_uint8,
    use_sampler,
)
from synscale.generators.weights import resolve

OPTIONS: dict = {}


class Muse:
    def __init__(self, weights: str, options: RenderOptions, sampler: str, extra: dict):
        import diffusers

        device, dtype = device_and_dtype(options)
        self.pipe = diffusers.AmusedPipeline.from_pretrained(resolve(weights), dtype=dtype)
        use_sampler(self.pipe, sampler)
        speed_up(self.pipe, options, denoiser="transformer")
        self.pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        native = self.pipe.transformer.config.sample_size * self.pipe.vae_scale_factor \
            if hasattr(self.pipe.transformer.config, "sample_size") else 256
        self.resolution = options.resolution or native
        self.describe = {"pipeline": "AmusedPipeline", "weights": str(weights)}

    def render(self, prompts: list[str], seeds: list[int], t: float, steps: int):
        import torch

        images = []
        for prompt, seed in zip(prompts, seeds):
            out = self.pipe(prompt=[prompt], generator=torch.Generator("cpu").manual_seed(int(seed)),
                            num_inference_steps=steps, guidance_scale=guidance_scale(t),
                            height=self.resolution, width=self.resolution, output_type="np")
            images.append(to_uint8(out.images))
        return np.concatenate(images), None

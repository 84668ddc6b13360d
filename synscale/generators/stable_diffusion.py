"""`stable-diffusion`: Stable Diffusion 1.x/2.x (StableDiffusionPipeline) and
SDXL (StableDiffusionXLPipeline), told apart by the checkpoint's
model_index.json."""
from __future__ import annotations

import json

from synscale.generators.pipeline import (
    RenderOptions,
    device_and_dtype,
    generators,
    guidance_scale,
    safety_flags,
    speed_up,
    to_uint8,
    use_sampler,
)
from synscale.generators.weights import resolve

OPTIONS: dict = {}  # no options of its own


class StableDiffusion:
    def __init__(self, weights: str, options: RenderOptions, sampler: str, extra: dict):
        import diffusers

        path = resolve(weights)
        kind = json.loads((path / "model_index.json").read_text()).get("_class_name", "")
        self.xl = "XL" in kind
        device, dtype = device_and_dtype(options)
        kwargs = {"dtype": dtype}
        if self.xl:
            kwargs["add_watermarker"] = False  # an invisible watermark is noise to a classifier
        cls = diffusers.StableDiffusionXLPipeline if self.xl else diffusers.StableDiffusionPipeline
        self.pipe = cls.from_pretrained(path, **kwargs)
        use_sampler(self.pipe, sampler)
        speed_up(self.pipe, options)
        self.pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        native = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        self.resolution = options.resolution or native
        self.describe = {"pipeline": cls.__name__, "weights": str(weights),
                         "safety_checker": getattr(self.pipe, "safety_checker", None) is not None}

    def render(self, prompts: list[str], seeds: list[int], t: float, steps: int):
        out = self.pipe(prompt=list(prompts), generator=generators(seeds),
                        num_inference_steps=steps, guidance_scale=guidance_scale(t),
                        height=self.resolution, width=self.resolution, output_type="np")
        flags = getattr(out, "nsfw_content_detected", None)
        return to_uint8(out.images), safety_flags(flags)

"""`imagen`: the open Imagen-class cascade, DeepFloyd IF. Stage I (IFPipeline)
renders 64 px from T5 text embeddings; stage II (IFSuperResolutionPipeline)
upsamples to 256 px from the same embeddings. The study's weights are the
stages in order: one id renders 64 px, two render 256 px."""
from __future__ import annotations

from synscale.generators.pipeline import (
    RenderOptions,
    device_and_dtype,
    dtype_of,
    generators,
    guidance_scale,
    safety_flags,
    speed_up,
    to_uint8,
    use_sampler,
)
from synscale.generators.weights import resolve

# Stage II's settings: diffusers' defaults (guidance_scale 4.0 is t = 3).
OPTIONS = {"sr_steps": 50, "sr_guidance": 3.0, "noise_level": 250}


class Imagen:
    def __init__(self, weights, options: RenderOptions, sampler: str, extra: dict):
        import diffusers

        stages = [weights] if isinstance(weights, str) else list(weights)
        device, dtype = device_and_dtype(options)
        self.extra = {**OPTIONS, **extra}
        # T5-XXL may be held at a precision of its own (bf16 beside fp32 UNets:
        # 9.5 GB instead of 19, on a CPU without native bf16 convolutions)
        text = options.text_encoder_precision
        base_dtype = {"default": dtype, "text_encoder": dtype_of(text)} if text else dtype
        self.base = diffusers.IFPipeline.from_pretrained(resolve(stages[0]), dtype=base_dtype,
                                                         watermarker=None)
        use_sampler(self.base, sampler)
        parts = [self.base]
        self.sr = None
        if len(stages) > 1:
            # Stage II reads stage I's embeddings: no second T5 in memory.
            self.sr = diffusers.IFSuperResolutionPipeline.from_pretrained(
                resolve(stages[1]), dtype=dtype, text_encoder=None, tokenizer=None,
                watermarker=None)
            parts.append(self.sr)
        for p in parts:
            speed_up(p, options)
            p.to(device)
            p.set_progress_bar_config(disable=True)
        # the denoising loop without T5: given embeddings, it casts them to the
        # UNet's precision rather than T5's (the same modules, nothing copied)
        self.denoise = diffusers.IFPipeline(**{**self.base.components, "text_encoder": None})
        self.denoise.set_progress_bar_config(disable=True)
        base = self.base.unet.config.sample_size
        self.resolution = (self.sr.unet.config.sample_size if self.sr else base)
        if options.resolution and options.resolution != self.resolution:
            raise ValueError(f"imagen renders {self.resolution} px with these stages; "
                             f"generate.resolution = {options.resolution} is not available")
        self.describe = {"pipeline": "IFPipeline" + (" + IFSuperResolutionPipeline" if self.sr else ""),
                         "weights": stages, **({"sr": self.extra} if self.sr else {}),
                         "safety_checker": self.base.safety_checker is not None}

    def render(self, prompts: list[str], seeds: list[int], t: float, steps: int):
        positive, negative = self.base.encode_prompt(list(prompts), do_classifier_free_guidance=True,
                                                     clean_caption=False)
        out = self.denoise(prompt_embeds=positive, negative_prompt_embeds=negative,
                        generator=generators(seeds), num_inference_steps=steps,
                        guidance_scale=guidance_scale(t), output_type="pt")
        images, flags = out.images, getattr(out, "nsfw_detected", None)
        if self.sr is None:
            return to_uint8(((images + 1) / 2).permute(0, 2, 3, 1)), safety_flags(flags)
        out = self.sr(image=images, prompt_embeds=positive, negative_prompt_embeds=negative,
                      generator=generators([s ^ 0x5EED for s in seeds]),
                      num_inference_steps=self.extra["sr_steps"],
                      guidance_scale=guidance_scale(self.extra["sr_guidance"]),
                      noise_level=self.extra["noise_level"], output_type="np")
        return to_uint8(out.images), safety_flags(getattr(out, "nsfw_detected", None))

"""What the diffusers text-to-image generators share: device and precision,
the speed options, the sampler by name, per-image random generators, and
uint8 output.

Each image draws its noise from its own CPU `torch.Generator` seeded by the
image's seed (diffusers' way to make results independent of the device and
of the other images in the batch), so an image is a function of (seed,
class, index) and the settings, up to float rounding in batched kernels.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

SAMPLERS = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler",
            "dpm-solver": "DPMSolverMultistepScheduler", "euler": "EulerDiscreteScheduler"}


@dataclass(frozen=True)
class RenderOptions:
    device: str = "auto"          # auto: the GPU when there is one
    precision: str = "fp32"       # fp32, fp16 or bf16 weights and activations
    text_encoder_precision: str = ""  # imagen's T5 where it differs ("": as precision)
    attention: str = "sdpa"       # sdpa: torch's fused kernels (diffusers' default); eager
    channels_last: bool = False   # NHWC memory format for the convolutions (faster on GPUs)
    compile: bool = False         # torch.compile the denoiser (pays off over many batches)
    resolution: int = 0           # output side in pixels; 0: the model's native size

    @classmethod
    def from_spec(cls, spec) -> RenderOptions:
        """A generate or caption stage's settings (study/specs.py); those it
        leaves out (None) keep the defaults here."""
        given = {f.name: getattr(spec, f.name, None) for f in fields(cls)}
        return cls(**{k: v for k, v in given.items() if v is not None})


def guidance_scale(t: float) -> float:
    """The paper's t as diffusers' scale: eps_u + s (eps_c - eps_u) equals
    (1+t) eps_c - t eps_u at s = 1 + t."""
    return 1.0 + t


def device_and_dtype(options: RenderOptions):
    import torch

    device = options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device), dtype_of(options.precision)


def dtype_of(precision: str):
    import torch
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX). Where
    it does not (AVX2 machines), torch emulates it: a UNet's 3x3 convolutions
    run ~300x slower than in fp32 (tools/real_pipelines.py measured it)."""
    import torch
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check else False
    except RuntimeError:
        return False


def use_sampler(pipe, name: str) -> None:
    """Swap in a sampler by name, keeping the model's noise schedule."""
    if name == "default":
        return
    import diffusers

    pipe.scheduler = getattr(diffusers, SAMPLERS[name]).from_config(pipe.scheduler.config)


def speed_up(pipe, options: RenderOptions, denoiser: str = "unet") -> None:
    import torch

    model = getattr(pipe, denoiser)
    # diffusers already attends through torch's fused SDPA kernels on torch 2;
    # "eager" puts back the plain matmul-softmax ones (to measure the gain).
    if options.attention == "eager" and hasattr(model, "set_default_attn_processor"):
        model.set_default_attn_processor()
    if options.channels_last:
        for part in (model, getattr(pipe, "vae", None)):
            if part is not None:
                part.to(memory_format=torch.channels_last)
    if options.compile:
        setattr(pipe, denoiser, torch.compile(model, mode="max-autotune", fullgraph=False))


def generators(seeds) -> list:
    import torch

    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def safety_flags(flags) -> np.ndarray | None:
    """The safety checker's per-image flags, or None where the pipeline has none."""
    return None if flags is None else np.asarray(flags, dtype=bool)


def to_uint8(images) -> np.ndarray:
    """Pipeline output (NHWC floats in [0, 1], numpy or torch) -> uint8 NHWC."""
    if not isinstance(images, np.ndarray):
        images = images.float().cpu().numpy()
    return (np.clip(images, 0.0, 1.0) * 255.0).round().astype(np.uint8)

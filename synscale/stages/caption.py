"""Caption: real training images of a class range -> captions, for the
IN-Captions prompt strategy.

An image-to-text model (BLIP-2 class: any transformers model that
AutoModelForImageTextToText loads, from a local folder or the Hugging Face
cache) captions the first `per_class` images of each class folder, in file
name order, with greedy decoding, so the captions are a function of the
images and the model. Each class is written atomically as it finishes
(`captions-<class>.json`) and a rerun skips finished classes; `captions.json`
(class key -> captions, the format prompts/captions.py reads) comes last.
"""
from __future__ import annotations

from pathlib import Path

from synscale.data.folders import class_key, images_of
from synscale.plan import state
from synscale.prompts.classes import of_data
from synscale.study.specs import CaptionSpec

VERSION = "1"


def run(ctx) -> dict:
    spec: CaptionSpec = ctx.spec
    lo, hi = spec.classes
    classes = of_data(spec.data)[lo:hi]
    captioner = None
    captioned = 0
    for c in classes:
        part = ctx.dir / f"captions-{c.index:05d}.json"
        if part.exists():
            continue
        files = images_of(spec.data.train_dir, class_key(c), spec.per_class)
        captioner = captioner or _Captioner(spec)
        captions = captioner(files)
        state.write_json(part, {"class": class_key(c),
                                "images": [f.name for f in files], "captions": captions})
        captioned += len(files)
        ctx.log.info("class %d: %d captions", c.index, len(files))
    merged = {}
    for c in classes:
        part = state.read_json(ctx.dir / f"captions-{c.index:05d}.json")
        merged[part["class"]] = part["captions"]
    state.write_json(ctx.dir / "captions.json", merged)
    state.write_json(ctx.dir / "manifest.json", {"model": spec.model, "classes": list(spec.classes),
                                                 "per_class": spec.per_class})
    return {"images_captioned": captioned, "classes": len(classes)}


class _Captioner:
    def __init__(self, spec: CaptionSpec):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from synscale.generators.pipeline import RenderOptions, device_and_dtype
        from synscale.generators.weights import resolve

        path = resolve(spec.model)
        self.device, dtype = device_and_dtype(RenderOptions.from_spec(spec))
        self.processor = AutoProcessor.from_pretrained(path)
        self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
        self.model.to(self.device).eval()
        self.dtype, self.torch = dtype, torch
        self.batch, self.max_new_tokens = spec.batch_size, spec.max_new_tokens

    def __call__(self, files: list[Path]) -> list[str]:
        from PIL import Image

        out = []
        for lo in range(0, len(files), self.batch):
            images = [Image.open(f).convert("RGB") for f in files[lo:lo + self.batch]]
            inputs = self.processor(images=images, return_tensors="pt").to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            with self.torch.inference_mode():
                ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                          do_sample=False)
            out += [" ".join(t.split()) for t in
                    self.processor.batch_decode(ids, skip_special_tokens=True)]
        return out

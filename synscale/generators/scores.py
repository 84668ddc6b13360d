"""Per-image scores stored with the generated images, for curation to filter on.

- recognizability: the probability a reference classifier of real images
  gives the image's intended class. Digits: the MLP fitted on the real pool
  (models/reference.py). Image folders: a timm classifier
  (`[generate] score_classifier`, a local folder saved by timm or a
  Hugging Face id in the cache) whose outputs are the study's classes in
  order, ImageNet-1k for a 1k-class head.
- clip: CLIPScore, 100 * max(cos(image, prompt), 0) in a CLIP model's
  embedding space (`[generate] score_clip_model`, transformers CLIPModel).
The safety checker's flag needs no scorer: the pipeline returns it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from synscale.study.specs import GenerateSpec

# score name ([generate] scores) -> its column in scores.npz (what curation reads)
COLUMNS = {"recognizability": "recognizability", "clip": "clip_score"}
SCORES = tuple(COLUMNS)


class Scorer:
    def __init__(self, spec: GenerateSpec):
        self.spec, self.wanted = spec, spec.scores or ()
        self._models: dict = {}

    def __call__(self, images: np.ndarray, labels: np.ndarray, prompts: list[str]) -> dict:
        out = {}
        if "recognizability" in self.wanted:
            out[COLUMNS["recognizability"]] = self._recognizability(images, labels)
        if "clip" in self.wanted:
            out[COLUMNS["clip"]] = self._clip(images, prompts)
        return out

    def _recognizability(self, images, labels) -> np.ndarray:
        if self.spec.data.dataset == "digits":
            if "reference" not in self._models:
                from synscale.data.digits import load_split
                from synscale.models.reference import fit_reference
                d = self.spec.data
                split = load_split(d.split_seed, d.test_per_class)
                self._models["reference"] = fit_reference(split.train_x, split.train_y,
                                                          seed=d.split_seed)
            return self._models["reference"].proba_of(images, labels).astype(np.float32)
        import torch
        model, transform = self._classifier()
        with torch.inference_mode():
            x = torch.stack([transform(_pil(im)) for im in images])
            p = model(x).softmax(-1)
        return p[torch.arange(len(p)), torch.as_tensor(labels)].numpy().astype(np.float32)

    def _classifier(self):
        if "classifier" not in self._models:
            import timm

            from synscale.generators.weights import resolve
            model = timm.create_model(f"local-dir:{resolve(self.spec.score_classifier)}",
                                      pretrained=True).eval()
            config = timm.data.resolve_data_config({}, model=model)
            self._models["classifier"] = (model, timm.data.create_transform(**config))
        return self._models["classifier"]

    def _clip(self, images, prompts) -> np.ndarray:
        import torch
        if "clip" not in self._models:
            from transformers import CLIPModel, CLIPProcessor

            from synscale.generators.weights import resolve
            path = resolve(self.spec.score_clip_model)
            self._models["clip"] = (CLIPModel.from_pretrained(path).eval(),
                                    CLIPProcessor.from_pretrained(path))
        model, processor = self._models["clip"]
        batch = processor(text=list(prompts), images=[_pil(im) for im in images],
                          return_tensors="pt", padding=True, truncation=True)
        with torch.inference_mode():
            out = model(**batch)
        cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)
        return (100.0 * cos.clamp(min=0)).numpy().astype(np.float32)


def _pil(image: np.ndarray):
    from PIL import Image
    return Image.fromarray(image)

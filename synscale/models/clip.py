"""CLIP models from open_clip, their tokenizer, and zero-shot classifiers.

Three kinds of model spec (study.expand._models):
- arch "vit": a small CLIP whose text tower mirrors the image tower (width,
  depth, heads) with embed_dim joint features; the embedded CLIP study.
- an open_clip configuration by name (ViT-S-32 ... ViT-B-16), built from its
  config file at the study's resolution and context length, no weights.
- a timm ViT name: that image tower with open_clip's ViT-B-16 text tower.
The tokenizer is open_clip's CLIP BPE, whose vocabulary ships in the wheel.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from synscale.study.specs import ModelSpec

from synscale.study.schema import CLIP_CONFIGS


class ClipModel(torch.nn.Module):
    """open_clip's CLIP, fed images of any channel count (the digits are grey)."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    @staticmethod
    def _rgb(images):
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images

    def encode_image(self, images, normalize: bool = True):
        return self.clip.encode_image(self._rgb(images), normalize=normalize)

    def encode_text(self, tokens, normalize: bool = True):
        return self.clip.encode_text(tokens, normalize=normalize)

    @property
    def logit_scale(self):
        return self.clip.logit_scale

    def forward(self, images, tokens):
        """(image features, text features, logit scale): what open_clip's ClipLoss takes."""
        return (self.encode_image(images), self.encode_text(tokens),
                self.clip.logit_scale.exp())


def _config(model: ModelSpec, size: int) -> dict:
    import open_clip

    ctx = model.context_length
    if model.arch == "vit":
        heads = model.heads
        tower = {"width": model.width, "layers": model.depth,
                 "mlp_ratio": model.mlp_ratio}
        return {"embed_dim": model.embed_dim,
                "vision_cfg": {**tower, "head_width": model.width // heads,
                               "patch_size": model.patch_size, "image_size": size},
                "text_cfg": {**tower, "heads": heads, "context_length": ctx}}
    name = model.arch if model.arch in CLIP_CONFIGS else "ViT-B-16"
    cfg = copy.deepcopy(open_clip.get_model_config(name))
    if model.arch in CLIP_CONFIGS:
        cfg["vision_cfg"]["image_size"] = size
    else:  # a timm image tower: its own pooling, a linear projection to the joint space
        cfg["vision_cfg"] = {"timm_model_name": model.arch, "timm_model_pretrained": False,
                             "timm_pool": "", "timm_proj": "linear", "image_size": size}
    cfg["text_cfg"]["context_length"] = ctx
    return cfg


def build_clip(model: ModelSpec, image_shape) -> ClipModel:
    """`model` is a train stage's model spec; image_shape (channels, side, side)."""
    import open_clip

    size = int(image_shape[1])
    cfg = _config(model, size)
    # a (1,)-shaped temperature: DeepSpeed's broadcast of parameters cannot view 0-dim ones
    clip = open_clip.CLIP(**cfg, nonscalar_logit_scale=True)
    if "timm_model_name" in cfg["vision_cfg"]:
        import timm
        # open_clip builds timm towers at their native size; the same trunk at ours
        clip.visual.trunk = timm.create_model(model.arch, pretrained=False, num_classes=0,
                                              img_size=size)
    return ClipModel(clip)


def tokenizer(context_length: int):
    """captions -> (n, context_length) token ids; longer captions are cut."""
    from open_clip.tokenizer import SimpleTokenizer
    return SimpleTokenizer(context_length=context_length)


def clip_loss(world: dict):
    """Symmetric InfoNCE over the whole global micro batch: features are
    gathered from every rank (with gradients), as in open_clip's training."""
    from open_clip.loss import ClipLoss
    return ClipLoss(local_loss=False, gather_with_grad=True, rank=world["rank"],
                    world_size=world["world_size"])


def zero_shot_weights(model: ClipModel, classes, templates, tokenize) -> torch.Tensor:
    """(classes, embed) text classifier: each class name in every template,
    encoded, normalized, averaged, normalized again (Radford et al.), on the
    model's device (under the caller's autocast, if any)."""
    from synscale.runtime.device import to_device

    device = next(model.parameters()).device
    rows = []
    with torch.inference_mode():
        for c in classes:
            tokens = tokenize([t.format(c.clip_name) for t in templates])
            features = model.encode_text(to_device(tokens, device))
            mean = features.float().mean(0)
            rows.append(mean / mean.norm())
    return torch.stack(rows)

"""timm ViT classifiers: a custom small one for tiny images, or a named one."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synscale.study.specs import ModelSpec


def build_classifier(model: ModelSpec, num_classes: int, image_shape: tuple[int, int, int]):
    """`model` is a train stage's model spec (study.expand._models)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    channels, size, _ = image_shape
    if model.arch == "vit":
        return VisionTransformer(img_size=size, patch_size=model.patch_size, in_chans=channels,
                                 num_classes=num_classes, embed_dim=model.width,
                                 depth=model.depth, num_heads=model.heads,
                                 mlp_ratio=model.mlp_ratio)
    return timm.create_model(model.arch, pretrained=False, num_classes=num_classes,
                             in_chans=channels, img_size=size)

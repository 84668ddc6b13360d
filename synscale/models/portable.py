"""How a trained model is rebuilt outside synscale, with its own library:
what a training's manifest records beside model.safetensors (README,
"Taking models away").

- a classifier: `timm.create_model(timm["model"], pretrained=False,
  **timm["kwargs"])` loads model.safetensors strictly. A custom "vit" is a
  registered timm ViT whose every architectural argument is overridden, so
  timm builds exactly the module synscale trained.
- a CLIP model: `open_clip.CLIP(**open_clip["model_cfg"], nonscalar_logit_scale=True)`
  loads the file's weights less their "clip." prefix (a timm image tower is
  rebuilt by `timm_trunk`, as synscale builds it, before loading).
- the class names in output order, and the input: the normalization and, for
  image folders, the evaluation transform (resize the short side, center
  crop), so that scores come out as synscale's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synscale.study.specs import ModelSpec

# a registered ViT whose arguments a custom "vit" overrides, all of them
_VIT_BASE_NAME = "vit_tiny_patch16_224"


def classifier(model: ModelSpec, num_classes: int, image_shape) -> dict:
    """{"model", "kwargs"} for timm.create_model (models/vit.build_classifier's module)."""
    channels, size, _ = (int(x) for x in image_shape)
    if model.arch == "vit":
        return {"model": _VIT_BASE_NAME, "kwargs": {
            "img_size": size, "patch_size": model.patch_size, "in_chans": channels,
            "num_classes": num_classes, "embed_dim": model.width, "depth": model.depth,
            "num_heads": model.heads, "mlp_ratio": model.mlp_ratio}}
    return {"model": model.arch, "kwargs": {"num_classes": num_classes, "in_chans": channels,
                                            "img_size": size}}


def clip(model: ModelSpec, image_shape) -> dict:
    """open_clip's configuration of models/clip.build_clip's model."""
    from synscale.models.clip import _config

    size = int(image_shape[1])
    cfg = _config(model, size)
    out = {"model_cfg": cfg, "nonscalar_logit_scale": True, "state_dict_prefix": "clip.",
           "tokenizer": {"kind": "open_clip SimpleTokenizer",
                         "context_length": model.context_length}}
    if "timm_model_name" in cfg["vision_cfg"]:
        out["timm_trunk"] = {"attribute": "visual.trunk", "model": model.arch,
                             "kwargs": {"num_classes": 0, "img_size": size}}
    if int(image_shape[0]) == 1:
        out["grey_input"] = "repeat the one channel three times before encode_image"
    return out


def preprocessing(index: dict) -> dict:
    """What the model's input is, from the index of the pack it trained on:
    the normalization, and how an image file becomes one (image folders) or
    what the packed arrays are (the digits)."""
    if index.get("kind") != "rgb":
        return {"input": "8x8 sklearn digits as float32 (1, 8, 8): intensity / 16 in [0, 1], "
                         "then normalized (onto [-1, 1])",
                "normalization": {"mean": [0.5], "std": [0.5]}, "eval_transform": None}
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from synscale.data.folders import CROP_FRACTION
    size = int(index["shape"][1])
    return {"input": "RGB, decoded as a viewer shows it (EXIF orientation, transparency "
                     "over white), values in [0, 1] before normalization",
            "normalization": {"mean": list(IMAGENET_DEFAULT_MEAN),
                              "std": list(IMAGENET_DEFAULT_STD)},
            "eval_transform": {"resize_short_side": int(round(size / CROP_FRACTION)),
                               "interpolation": "bilinear", "center_crop": size}}

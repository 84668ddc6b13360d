"""What a manifest records rebuilds the trained module with its own library
(timm, open_clip), loading model.safetensors strictly, with the same outputs."""
import json

import torch

from synscale.models import portable
from synscale.study.specs import ModelSpec


def _roundtrip(recipe):
    return json.loads(json.dumps(recipe))  # as the manifest holds it


def test_classifiers_rebuild_with_timm_create_model():
    import timm

    from synscale.models.vit import build_classifier
    for spec, shape in ((ModelSpec("vit", width=16, depth=1, heads=2, patch_size=4,
                                   mlp_ratio=2.0), (1, 8, 8)),
                        (ModelSpec("vit_small_patch16_224"), (3, 32, 32))):
        torch.manual_seed(0)
        ours = build_classifier(spec, 10, shape).eval()
        recipe = _roundtrip(portable.classifier(spec, 10, shape))
        theirs = timm.create_model(recipe["model"], pretrained=False, **recipe["kwargs"]).eval()
        theirs.load_state_dict(ours.state_dict(), strict=True)
        x = torch.randn(2, *shape)
        assert torch.equal(ours(x), theirs(x)), spec


def test_clip_rebuilds_with_open_clip():
    import open_clip

    from synscale.models.clip import build_clip
    spec = ModelSpec("vit", width=16, depth=1, heads=2, patch_size=4, mlp_ratio=2.0,
                     objective="clip", context_length=8, embed_dim=8)
    torch.manual_seed(0)
    ours = build_clip(spec, (3, 16, 16)).eval()
    recipe = _roundtrip(portable.clip(spec, (3, 16, 16)))
    theirs = open_clip.CLIP(**recipe["model_cfg"],
                            nonscalar_logit_scale=recipe["nonscalar_logit_scale"]).eval()
    cut = len(recipe["state_dict_prefix"])
    theirs.load_state_dict({k[cut:]: v for k, v in ours.state_dict().items()}, strict=True)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(ours.encode_image(x), theirs.encode_image(x, normalize=True))

"""Batch-side augmentations of the training recipe: RandAugment (per image,
before normalization) and mixup/cutmix (per batch, with soft targets).

Both draw from generators seeded by (seed, micro step), so a resumed run
sees the same augmentations as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synscale.study.schema import TrainSection


def _seed(seed: int, micro_step: int, what: str) -> int:
    digest = hashlib.sha256(f"{what}:{seed}:{micro_step}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class BatchAugment:
    def __init__(self, recipe: TrainSection, num_classes: int, seed: int):
        self.seed = seed
        self.randaugment = recipe.randaugment
        self.mixup = None
        if recipe.mixup or recipe.cutmix:
            from timm.data import Mixup
            # timm's Mixup folds label smoothing into its soft targets
            self.mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix,
                               label_smoothing=recipe.label_smoothing, num_classes=num_classes)

    @property
    def soft_targets(self) -> bool:
        return self.mixup is not None

    def __call__(self, images, labels, micro_step: int):
        """images: normalized floats, or uint8 NCHW when RandAugment runs."""
        import numpy as np
        import torch

        if self.randaugment:
            images = _randaugment(images, self.randaugment, _seed(self.seed, micro_step, "ra"))
        if self.mixup is not None and len(images) % 2 == 0:  # pairs within the batch
            np.random.seed(_seed(self.seed, micro_step, "mix"))
            images, labels = self.mixup(images, labels)
        elif self.mixup is not None:  # an odd last batch: one-hot with smoothing, unmixed
            from timm.data.mixup import one_hot
            smooth = self.mixup.label_smoothing
            n = self.mixup.num_classes
            labels = one_hot(labels, n, on_value=1 - smooth + smooth / n, off_value=smooth / n)
        return images, labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)


def _randaugment(images, magnitude: int, seed: int):
    """RandAugment image by image on uint8 NCHW, then ImageNet normalization."""
    import torch
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from torchvision.transforms import v2

    state = torch.get_rng_state()
    torch.manual_seed(seed)
    op = v2.RandAugment(num_ops=2, magnitude=magnitude)
    out = torch.stack([op(im) for im in images]).float().div_(255)
    torch.set_rng_state(state)  # the model's own randomness stays on its own stream
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return (out - mean) / std

"""What a training step minimizes: one class per model.objective.

The training loop (stages/train.py) is the same for both; an objective
builds the model, turns a micro batch into a loss, and measures what one
sample costs (forward FLOPs, for compute-optimal analyses).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synscale.study.schema import TrainSection
    from synscale.study.specs import TrainSpec


def forward_flops(model, *inputs) -> int:
    """FLOPs of one forward pass on these inputs, counted by torch's
    FlopCounterMode (matrix multiplies and convolutions, 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    return int(counter.get_total_flops())


def prepare_model(model, recipe: TrainSection, backend: str = "inductor"):
    """The recipe's speed options, before DeepSpeed wraps the model; neither
    changes results beyond float noise. channels_last: NHWC weights (the
    inputs follow, in model_input). compile: torch.compile in place, so the
    state dict's keys (checkpoints, model.safetensors) stay as they are."""
    import torch

    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    if recipe.compile:
        model.compile(backend=backend)
    return model


def model_input(images, engine, channels_last: bool = False):
    """A micro batch as the model takes it: on its device (copied without
    blocking), in its dtype (bf16 under DeepSpeed's bf16), NHWC with
    channels_last."""
    import torch

    from synscale.runtime.device import to_device

    images = to_device(images, engine.device).to(next(engine.module.parameters()).dtype)
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


class Classifier:
    """Cross-entropy of a timm ViT on the class labels, with the recipe's
    label smoothing, mixup/cutmix and RandAugment."""
    captions = False

    def __init__(self, spec: TrainSpec, image_shape, world: dict, index: dict):
        import torch

        from synscale.data.augment import BatchAugment
        from synscale.models.vit import build_classifier

        recipe = spec.recipe
        self.channels_last = recipe.channels_last
        self.model = build_classifier(spec.model, spec.num_classes, tuple(image_shape))
        self.augment = BatchAugment(recipe, spec.num_classes, spec.seed * 1000 + world["rank"])
        if self.augment.randaugment and index.get("kind") != "rgb":
            raise ValueError("train.randaugment works on image folders' RGB images, not the digits")
        if self.augment.soft_targets:  # mixup's targets already carry the label smoothing
            from timm.loss import SoftTargetCrossEntropy
            self.criterion = SoftTargetCrossEntropy()
        else:
            self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    @property
    def normalize(self) -> bool:
        return not self.augment.randaugment  # RandAugment reads uint8 and normalizes itself

    def loss(self, engine, images, labels, captions, micro_step: int):
        from synscale.runtime.device import to_device

        images, labels = self.augment(images, labels, micro_step)  # on the host: its RNG streams
        images = model_input(images, engine, self.channels_last)
        return self.criterion(engine(images).float(), to_device(labels, engine.device))

    def after_step(self, engine) -> None:
        pass

    def sample_flops(self, image_shape) -> int:
        import torch
        return forward_flops(self.model, torch.zeros(1, *image_shape))


class Contrastive:
    """CLIP's symmetric contrastive loss between images and their captions,
    negatives from the whole global micro batch."""
    captions = True
    normalize = True

    def __init__(self, spec: TrainSpec, image_shape, world: dict, index: dict):
        from synscale.models.clip import build_clip, clip_loss, tokenizer

        self.channels_last = spec.recipe.channels_last
        self.model = build_clip(spec.model, image_shape)
        self.tokenize = tokenizer(spec.model.context_length)
        self.criterion = clip_loss(world)

    def loss(self, engine, images, labels, captions, micro_step: int):
        from synscale.runtime.device import to_device

        images = model_input(images, engine, self.channels_last)
        tokens = to_device(self.tokenize(captions), engine.device)
        image_features, text_features, scale = engine(images, tokens)
        return self.criterion(image_features.float(), text_features.float(), scale.float())

    def after_step(self, engine) -> None:
        import torch
        # CLIP's clamp: a temperature below 1/100 makes training unstable
        with torch.no_grad():
            engine.module.logit_scale.clamp_(0, math.log(100))

    def sample_flops(self, image_shape) -> int:
        """One image and one caption through their towers."""
        import torch
        tokens = self.tokenize(["a"])
        return forward_flops(self.model, torch.zeros(1, *image_shape), tokens)


OBJECTIVES = {"classifier": Classifier, "clip": Contrastive}


def objective_for(spec: TrainSpec, image_shape, world: dict, index: dict):
    kind = spec.model.objective or "classifier"
    return OBJECTIVES[kind](spec, image_shape, world, index)

"""The recipe's batch augmentations: seeded by step, so a resume repeats them."""
from dataclasses import replace

import torch

from synscale.data.augment import BatchAugment
from synscale.study.schema import TrainSection

RECIPE = TrainSection(label_smoothing=0.1, mixup=0.8, cutmix=1.0, randaugment=9)


def batch(n=4):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 255, (n, 3, 16, 16), generator=g, dtype=torch.uint8), torch.arange(n)


def test_randaugment_then_mixup_are_a_function_of_the_step():
    augment = BatchAugment(RECIPE, num_classes=10, seed=3)
    images, labels = batch()
    a_img, a_lab = augment(images, labels, micro_step=7)
    b_img, b_lab = augment(images, labels, micro_step=7)
    c_img, _ = augment(images, labels, micro_step=8)
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    assert not torch.equal(a_img, c_img)
    assert a_img.dtype == torch.float32 and a_img.shape == (4, 3, 16, 16)
    assert abs(float(a_img.mean())) < 3  # normalized, not 0..255
    assert a_lab.shape == (4, 10) and torch.allclose(a_lab.sum(1), torch.ones(4))
    # each image is mixed with its mirror in the batch: two labels carry weight
    assert ((a_lab > 0.011).sum(1) == 2).all()


def test_an_odd_last_batch_gets_smoothed_one_hot_targets_unmixed():
    augment = BatchAugment(replace(RECIPE, randaugment=0), num_classes=10, seed=0)
    images = torch.randn(3, 3, 8, 8)
    out, targets = augment(images, torch.tensor([1, 2, 3]), micro_step=0)
    assert torch.equal(out, images)
    assert torch.allclose(targets[0, 1], torch.tensor(0.91)) and torch.allclose(targets.sum(1),
                                                                               torch.ones(3))


def test_off_by_default():
    augment = BatchAugment(TrainSection(label_smoothing=0.1), num_classes=10, seed=0)
    images, labels = batch()
    assert not augment.soft_targets
    out, same = augment(images, labels, 0)
    assert out is images and torch.equal(same, labels)

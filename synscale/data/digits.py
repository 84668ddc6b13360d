"""scikit-learn's digits as the embedded real dataset.

The 1,797 8x8 images ship inside scikit-learn, so the embedded study needs no
download. Pixels are rescaled from 0..16 to [-1, 1], the range the DDPM is
trained on, and kept as float32 arrays of shape (N, 1, 8, 8).

The split is fixed by a seed and stratified: `test_per_class` images of each
class form the held-out real test set that no training stage reads; the rest
is the real training pool, in a seeded per-class order so that a size of n
images per class is always the first n of that class (nested subsets).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_CLASSES = 10
CLASS_NAMES = tuple(str(i) for i in range(NUM_CLASSES))
IMAGE_SHAPE = (1, 8, 8)


@dataclass(frozen=True)
class Split:
    train_x: np.ndarray  # (N, 1, 8, 8) float32 in [-1, 1], grouped by class
    train_y: np.ndarray  # (N,) int64 labels
    test_x: np.ndarray   # held-out real test set, never trained on
    test_y: np.ndarray

    def train_per_class(self) -> np.ndarray:
        return np.bincount(self.train_y, minlength=NUM_CLASSES)


def to_unit_range(pixels: np.ndarray) -> np.ndarray:
    """Map sklearn's 0..16 intensities onto [-1, 1]."""
    return (pixels.astype(np.float32) / 8.0 - 1.0).reshape(-1, *IMAGE_SHAPE)


def load_split(seed: int = 0, test_per_class: int = 50) -> Split:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = to_unit_range(digits.data)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(y == c))
        if len(members) <= test_per_class:
            raise ValueError(
                f"digits class {c} has {len(members)} images; test_per_class="
                f"{test_per_class} must leave some for training")
        test_idx.append(members[:test_per_class])
        train_idx.append(members[test_per_class:])
    tr = np.concatenate(train_idx)
    te = np.concatenate(test_idx)
    return Split(x[tr], y[tr], x[te], y[te])


def smallest_class_pool(test_per_class: int) -> int:
    """Training images in the smallest class once the test set is held out."""
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target, minlength=NUM_CLASSES)
    return int(counts.min()) - test_per_class

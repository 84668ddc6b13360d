"""Real evaluation sets: the digits test split as arrays; ImageNet val and its
out-of-distribution variants (Sketch, R, A, V2) as folders of class folders.

A class folder is named by the class's wnid (ImageNet, Sketch, R, A), its
index (ImageNet-V2's 0..999) or its name (other class lists). ImageNet-R and
-A hold 200 of the 1,000 classes; a 1,000-way model is scored on them with
its logits masked to those 200 (Hendrycks et al.'s protocol).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from synscale.data.folders import CROP_FRACTION, is_image

if TYPE_CHECKING:
    from synscale.study.specs import DataSpec

FOLDER_SETS = ("imagenet-val", "imagenet-sketch", "imagenet-r", "imagenet-a", "imagenet-v2")
SUBSETS = {"imagenet-r": "imagenet_r_wnids.txt", "imagenet-a": "imagenet_a_wnids.txt"}


def load_eval_set(name: str, data: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits-test":
        from synscale.data.digits import load_split
        split = load_split(data.split_seed, data.test_per_class)
        return split.test_x, split.test_y
    raise ValueError(f"evaluation set {name!r} is an image folder; use ImageFolderSet")


def class_mask(name: str, classes, mask_file: str | None = None) -> np.ndarray | None:
    """Boolean mask over the class list of the classes `name` covers (a
    known subset's, or those `mask_file` names by wnid or class name, one
    per line), or None (all)."""
    if mask_file:
        listed = {line.strip() for line in Path(mask_file).read_text().splitlines()
                  if line.strip()}
        where = mask_file
    elif name in SUBSETS:
        from synscale.prompts.classes import DATA
        listed, where = set((DATA / SUBSETS[name]).read_text().split()), name
    else:
        return None
    mask = np.array([c.wnid in listed or c.clip_name in listed for c in classes])
    if not mask.any():
        raise ValueError(f"{where}: none of its {len(listed)} classes is in the study's class "
                         "list")
    return mask


def eval_transform(size: int):
    """Decode-side preprocessing of a real image for a model of input `size`."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from torchvision import transforms as T

    return T.Compose([T.Resize(int(round(size / CROP_FRACTION))), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])


class ImageFolderSet:
    """(image tensor, class index) over a folder of class folders, in the
    study's class order; files in name order."""

    def __init__(self, root: str, classes, size: int, skip_bad: bool = False):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such evaluation folder")
        from synscale.data.inventory import eval_problems, names_of
        by_name = names_of(classes)
        unknown = [p for p in eval_problems("evaluation folder", root, classes, set(), True)
                   if "not in the study's class list" in p]
        if unknown:
            raise ValueError(unknown[0])
        self.items = [(f, by_name[d.name]) for d in sorted(root.iterdir()) if d.is_dir()
                      for f in sorted(d.iterdir()) if is_image(f)]
        if not self.items:
            raise ValueError(f"{root}: no images in its class folders")
        self.transform = eval_transform(size)
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        """Decoded with care (data/decode.py); a file that does not decode
        raises BadImage naming it, which the loader passes to the stage, or
        with `skip_bad` gives no image."""
        from PIL import Image

        from synscale.data.decode import BadImage, rgb
        path, label = self.items[i]
        try:
            return self.transform(Image.fromarray(rgb(path))), label
        except BadImage:
            if not self.skip_bad:
                raise
            return None, label  # left out by `collate`, and counted


def collate(items):
    """A batch less the files left out (bad_images = "skip"): (images,
    labels, how many were left out)."""
    import torch
    kept = [(x, y) for x, y in items if x is not None]
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), len(items)
    return (torch.stack([x for x, _ in kept]), torch.tensor([y for _, y in kept]),
            len(items) - len(kept))

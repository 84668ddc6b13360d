"""FFCV files: how images travel from pack to train.

A .beton holds rows sorted by (class, index within class), and `index.json`
beside it records where each class starts. A training size of n images per
class is then the first n rows of every class, chosen by indices at load
time: one file serves every point of a scaling curve, and each smaller size
is a prefix of the next.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from synscale.plan import state


class _Rows:
    """The indexed-dataset protocol FFCV's writer reads."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def write_beton(folder: Path, images: np.ndarray, labels: np.ndarray, workers: int = 1) -> dict:
    """Write `data.beton` and `index.json` into `folder`, both atomically."""
    from ffcv.fields import IntField, NDArrayField
    from ffcv.writer import DatasetWriter

    order = np.argsort(labels, kind="stable")  # keeps each class's index order
    images, labels = np.ascontiguousarray(images[order], dtype=np.float32), labels[order]
    counts = np.bincount(labels)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    target = Path(folder) / "data.beton"
    with state.atomic_path(target) as tmp:
        fields = {"image": NDArrayField(shape=images.shape[1:], dtype=np.dtype("float32")),
                  "label": IntField()}
        DatasetWriter(str(tmp), fields, num_workers=workers).from_indexed_dataset(
            _Rows(images, labels))
    index = {"rows": int(len(labels)), "shape": list(images.shape[1:]),
             "class_counts": counts.tolist(), "class_offsets": offsets.tolist()}
    state.write_json(Path(folder) / "index.json", index)
    return index


class _RGBRows:
    """Rows of RGB images: uint8 HWC arrays, or image files read when written."""

    def __init__(self, items, labels: np.ndarray):
        self.items, self.labels = items, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        item = self.items[i]
        if isinstance(item, (str, Path)):
            from PIL import Image
            with Image.open(item) as im:
                item = np.asarray(im.convert("RGB"))
        return item, int(self.labels[i])


def write_rgb_beton(folder: Path, items, labels: np.ndarray, resolution: int,
                    workers: int = 1) -> dict:
    """RGB images (uint8 HWC arrays or file paths) as JPEG rows, the longest
    side at most resolution / 0.875 so that training crops `resolution` from
    them; labels must already be sorted (class order, index order within)."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    labels = np.asarray(labels)
    if np.any(np.diff(labels) < 0):
        raise ValueError("rows must come sorted by class")
    counts = np.bincount(labels)
    target = Path(folder) / "data.beton"
    with state.atomic_path(target) as tmp:
        fields = {"image": RGBImageField(write_mode="jpg", jpeg_quality=90,
                                         max_resolution=int(round(resolution / 0.875))),
                  "label": IntField()}
        DatasetWriter(str(tmp), fields, num_workers=workers).from_indexed_dataset(
            _RGBRows(items, labels))
    index = {"rows": int(len(labels)), "kind": "rgb", "shape": [3, resolution, resolution],
             "class_counts": counts.tolist(),
             "class_offsets": np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()}
    state.write_json(Path(folder) / "index.json", index)
    return index


def prefix_indices(index: dict, per_class: int) -> np.ndarray:
    """Rows of the first `per_class` images of every class."""
    short = [c for c, n in enumerate(index["class_counts"]) if n < per_class]
    if short:
        raise ValueError(f"{per_class} images per class asked, but classes {short[:10]} hold "
                         f"only {min(index['class_counts'])} in this pack")
    return np.concatenate([np.arange(o, o + per_class) for o in index["class_offsets"]])


def loader(folder: Path, indices: np.ndarray, batch_size: int, seed: int, workers: int = 1,
           train: bool = True, distributed: bool = False, normalize: bool = True):
    """An FFCV Loader over chosen rows: random order per epoch for training;
    `distributed` gives each torch.distributed rank its own share."""
    from ffcv.fields.decoders import IntDecoder, NDArrayDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import Squeeze, ToTensor

    index = state.read_json(Path(folder) / "index.json")
    image = _rgb_pipeline(index["shape"][1], train, normalize) if index.get("kind") == "rgb" else \
        [NDArrayDecoder(), ToTensor()]
    return Loader(str(Path(folder) / "data.beton"), batch_size=batch_size, num_workers=workers,
                  order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL,
                  indices=np.asarray(indices).tolist(), seed=seed, drop_last=False,
                  os_cache=True, distributed=distributed,
                  pipelines={"image": image, "label": [IntDecoder(), ToTensor(), Squeeze(1)]})


def _rgb_pipeline(size: int, train: bool, normalize: bool = True) -> list:
    """Decode, crop and normalize on the loader's CPU workers: a random
    resized crop and flip for training, the evaluation crop otherwise.
    Without `normalize`, uint8 images (for RandAugment, which normalizes)."""
    from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder
    from ffcv.transforms import NormalizeImage, RandomHorizontalFlip, ToTensor, ToTorchImage
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    mean, std = np.array(IMAGENET_DEFAULT_MEAN) * 255, np.array(IMAGENET_DEFAULT_STD) * 255
    first = ([RandomResizedCropRGBImageDecoder((size, size)), RandomHorizontalFlip()] if train
             else [CenterCropRGBImageDecoder((size, size), ratio=0.875)])
    return first + ([NormalizeImage(mean, std, np.float32)] if normalize else []) + [
        ToTensor(), ToTorchImage(channels_last=False)]

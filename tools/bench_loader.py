#!/usr/bin/env python
"""Images per second of the training input pipeline against a torch
DataLoader over the same images stored as JPEG files in class folders.

    tools/bench_loader.py [--images 2000] [--size 64] [--workers 2] [--batch 64] [--json]

Writes IMAGES random-content JPEGs (SIZE px, like a packed image folder) into
class folders, packs them the way the pack stage does, then reads every image
five epochs (after a warm-up one) four ways, each decoding JPEGs and
producing normalized float batches with WORKERS workers:
  ffcv_raw        FFCV's Loader with a plain decoder, nothing else
  ffcv_same       FFCV's Loader built by hand with the training pipeline's operations
  synscale        the training pipeline (random resized crop, flip, normalize)
  torch           torchvision ImageFolder + DataLoader with the same work
`ratio` = synscale / torch; `kept` = synscale / ffcv_raw (goal: >= 0.9);
`kept_same_work` = synscale / ffcv_same (what synscale's own code costs).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_folder(root: Path, images: int, size: int, classes: int = 10) -> None:
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"c{i % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        # smooth content compresses like a photo rather than like noise
        base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize((size, size), Image.BILINEAR).save(
            folder / f"{i:06d}.JPEG", quality=90)


def timed(batches, epochs: int = 5) -> float:
    """Images per second over EPOCHS epochs after a warm-up one (caches, workers)."""
    for _ in batches():
        pass
    start, n = time.perf_counter(), 0
    for _ in range(epochs):
        for images, _ in batches():
            n += len(images)
    return n / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import NormalizeImage, ToTensor, ToTorchImage
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from torchvision import datasets
    from torchvision import transforms as T

    from synscale.data.ffcv_io import loader, write_rgb_beton

    with tempfile.TemporaryDirectory() as tmp:
        root, pack = Path(tmp) / "train", Path(tmp) / "pack"
        make_folder(root, args.images, args.size)
        pack.mkdir()
        files = sorted(root.glob("*/*.JPEG"))
        labels = np.array([int(f.parent.name[1:]) for f in files])
        order = np.argsort(labels, kind="stable")
        index = write_rgb_beton(pack, [files[i] for i in order], labels[order],
                                resolution=int(args.size * 0.875), workers=args.workers)
        rows = np.arange(index["rows"])
        size = index["shape"][1]
        mean, std = np.array(IMAGENET_DEFAULT_MEAN) * 255, np.array(IMAGENET_DEFAULT_STD) * 255

        def raw():
            return Loader(str(pack / "data.beton"), batch_size=args.batch,
                          num_workers=args.workers, order=OrderOption.RANDOM, os_cache=True,
                          pipelines={"image": [SimpleRGBImageDecoder(),
                                               NormalizeImage(mean, std, np.float32), ToTensor(),
                                               ToTorchImage(channels_last=False)],
                                     "label": [IntDecoder(), ToTensor()]})

        def same():
            from synscale.data.ffcv_io import _rgb_pipeline
            return Loader(str(pack / "data.beton"), batch_size=args.batch,
                          num_workers=args.workers, order=OrderOption.RANDOM, os_cache=True,
                          pipelines={"image": _rgb_pipeline(size, train=True),
                                     "label": [IntDecoder(), ToTensor()]})

        ours = loader(pack, rows, args.batch, seed=0, workers=args.workers)
        folder = datasets.ImageFolder(str(root), T.Compose([
            T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
            T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)]))
        torch_loader = torch.utils.data.DataLoader(folder, batch_size=args.batch, shuffle=True,
                                                   num_workers=args.workers,
                                                   persistent_workers=args.workers > 0)
        raw_loader, same_loader = raw(), same()
        result = {"images": args.images, "size": args.size, "workers": args.workers,
                  "batch": args.batch,
                  "ffcv_raw": timed(lambda: raw_loader),
                  "ffcv_same": timed(lambda: same_loader),
                  "synscale": timed(lambda: ours),
                  "torch": timed(lambda: torch_loader)}
    result["ratio"] = result["synscale"] / result["torch"]
    result["kept"] = result["synscale"] / result["ffcv_raw"]
    result["kept_same_work"] = result["synscale"] / result["ffcv_same"]
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"{args.images} JPEGs of {args.size} px, {args.workers} workers")
    table.add_column("pipeline")
    table.add_column("images/s", justify="right")
    for key in ("ffcv_raw", "ffcv_same", "synscale", "torch"):
        table.add_row(key, f"{result[key]:.0f}")
    Console().print(table)
    print(f"ratio (synscale / torch): {result['ratio']:.2f}x; synscale keeps "
          f"{result['kept']:.0%} of the raw FFCV loader's rate and "
          f"{result['kept_same_work']:.0%} of FFCV doing the same work")
    return 0


if __name__ == "__main__":
    sys.exit(main())

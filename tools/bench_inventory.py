#!/usr/bin/env python
"""How long the folder checks take at ImageNet's size (data/inventory.py).

Builds an ImageNet-shaped tree of empty files (1,000 class folders of 1,300
training and 50 validation files, named by wnid), then times what the dry
run and the launch check (`train_problems`, `eval_problems`: listings only)
and, on a few hundred real 256-px JPEGs, the decoding rate of
`python -m synscale.check --decode`, per worker process.

    python tools/bench_inventory.py [--classes 1000] [--per-class 1300] [--decode 400] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _tree(root: Path, wnids: list[str], per_class: int) -> None:
    for w in wnids:
        folder = root / w
        folder.mkdir(parents=True)
        for i in range(per_class):
            os.close(os.open(folder / f"{w}_{i}.JPEG", os.O_CREAT | os.O_WRONLY, 0o644))


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from synscale.data import inventory
    from synscale.prompts.classes import imagenet1k

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--per-class", type=int, default=1300)
    p.add_argument("--decode", type=int, default=400, help="real JPEGs to decode (0: none)")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    classes = imagenet1k()[:args.classes]
    wnids = [c.wnid for c in classes]
    root = Path(tempfile.mkdtemp(prefix="bench-inventory-"))
    out = {"classes": len(wnids), "train_files": len(wnids) * args.per_class}
    try:
        t = time.perf_counter()
        _tree(root / "train", wnids, args.per_class)
        _tree(root / "val", wnids, 50)
        out["tree_made_s"] = round(time.perf_counter() - t, 1)
        os.sync()
        t = time.perf_counter()
        found = inventory.train_problems("data.train_dir", root / "train", classes, 1300)
        out["train_check_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        found += inventory.eval_problems("data.val_dir", root / "val", classes, None, False)
        out["val_check_s"] = round(time.perf_counter() - t, 2)
        assert found == [], found  # the tree is whole: the checks find nothing
        if args.decode:
            import numpy as np
            from PIL import Image
            rng = np.random.default_rng(0)
            files = []
            for i in range(args.decode):
                x = np.linspace(0, 255, 256)[None, :, None] * rng.uniform(0.3, 1, 3)
                image = (x + rng.normal(0, 12, (256, 256, 3))).clip(0, 255).astype(np.uint8)
                files.append(root / "jpeg" / f"{i}.JPEG")
                files[-1].parent.mkdir(exist_ok=True)
                Image.fromarray(image).save(files[-1], quality=90)
            inventory.decode_all(files[:8], 1)  # the pool's start, once
            t = time.perf_counter()
            bad = inventory.decode_all(files, args.workers)
            seconds = time.perf_counter() - t
            assert bad == []
            out.update(decode_workers=args.workers,
                       decode_images_per_s=round(len(files) / seconds),
                       decode_imagenet_hours_per_worker=round(
                           1.28e6 / (len(files) / seconds / args.workers) / 3600, 2))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(out))
        return
    print(f"{out['train_files']:,} training files in {out['classes']} class folders "
          f"(made in {out['tree_made_s']} s): training folder checked in "
          f"{out['train_check_s']} s, validation folder (50 per class) in {out['val_check_s']} s")
    if args.decode:
        print(f"decoding 256-px JPEGs: {out['decode_images_per_s']:,} images/s on "
              f"{out['decode_workers']} workers; ImageNet's 1.28M training images take about "
              f"{out['decode_imagenet_hours_per_worker']} h of one worker (divide by the CPUs "
              "of the allocation)")


if __name__ == "__main__":
    main()

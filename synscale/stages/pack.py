"""Pack: one FFCV .beton per data source (the real pool, or one generation
config), plus how recognizable and diverse generated images are.

Sizes are not packed separately: train selects per-class prefixes by index.
"""
from __future__ import annotations

import numpy as np

from synscale.plan import state

VERSION = "1"  # image folders are new outputs; the digits ones did not change


def _real_pool(data: dict):
    from synscale.data.digits import load_split
    return load_split(data["split_seed"], data["test_per_class"])


def run(ctx) -> dict:
    if ctx.spec["data"]["dataset"] != "digits":
        return _run_rgb(ctx)
    from synscale.data.ffcv_io import write_beton

    spec = ctx.spec
    split = _real_pool(spec["data"])
    quality = {}
    if spec["source"] == "real":
        images, labels = split.train_x, split.train_y
    else:
        from synscale.models.reference import diversity, fit_reference, recognizability
        from synscale.stages.generate import read_shards

        parts = [read_shards(ctx.inputs[i]) for i in ctx.stage.inputs]
        images = np.concatenate([p["images"] for p in parts])
        labels = np.concatenate([p["labels"] for p in parts])
        # Scored by a classifier of the real pool: how often a generated image
        # is recognized as its class, and how spread out each class is.
        ref = fit_reference(split.train_x, split.train_y, seed=spec["data"]["split_seed"])
        quality = {"recognizability": recognizability(ref, images, labels),
                   "diversity": diversity(ref, images, labels),
                   "real_test_accuracy": recognizability(ref, split.test_x, split.test_y),
                   "real_pool_diversity": diversity(ref, split.train_x, split.train_y)}
        state.write_json(ctx.dir / "quality.json", quality)
    index = write_beton(ctx.dir, images, labels)
    ctx.log.info("packed %d rows", index["rows"])
    return {"rows": index["rows"], **quality}


def _run_rgb(ctx) -> dict:
    """Image folders: the first `per_class` files of each class folder (name
    order), or generated RGB shards, as JPEG rows at the study's resolution."""
    from synscale.data.ffcv_io import write_rgb_beton

    spec = ctx.spec
    quality = {}
    if spec["source"] == "real":
        from synscale.data.folders import class_key, images_of
        from synscale.prompts.classes import of_data

        items, labels = [], []
        for c in of_data(spec["data"]):
            files = images_of(spec["data"]["train_dir"], class_key(c), spec["per_class"])
            items += files
            labels += [c.index] * len(files)
        labels = np.array(labels)
    else:
        from synscale.stages.generate import read_shards

        parts = [read_shards(ctx.inputs[i]) for i in ctx.stage.inputs]
        items = np.concatenate([p["images"] for p in parts])
        labels = np.concatenate([p["labels"] for p in parts])
        order = np.argsort(labels, kind="stable")
        items, labels = items[order], labels[order]
        quality = _mean_scores(ctx)
        if quality:
            state.write_json(ctx.dir / "quality.json", quality)
    index = write_rgb_beton(ctx.dir, items, labels, spec["resolution"],
                            workers=spec.get("workers", 1))
    ctx.log.info("packed %d rows", index["rows"])
    return {"rows": index["rows"], **quality}


def _mean_scores(ctx) -> dict:
    """Means of the per-image scores the generate stages stored, if any."""
    sums: dict[str, list] = {}
    for i in ctx.stage.inputs:
        for shard in sorted(ctx.inputs[i].glob("shard-*.npz")):
            with np.load(shard) as z:
                for key in ("recognizability", "clip_score", "nsfw"):
                    if key in z.files:
                        sums.setdefault(key, []).extend(z[key].astype(float).tolist())
    return {("flagged_fraction" if k == "nsfw" else k): float(np.mean(v)) for k, v in sums.items()}

"""Pack: one FFCV .beton per data source (the real pool, or one generation
config), plus how recognizable and diverse generated images are.

Sizes are not packed separately: train selects per-class prefixes by index.
"""
from __future__ import annotations

import numpy as np

from synscale.plan import state

VERSION = "1"


def _real_pool(data: dict):
    if data["dataset"] != "digits":
        raise ValueError(f"packing dataset {data['dataset']!r} is not available in this version; "
                         "available: 'digits'")
    from synscale.data.digits import load_split
    return load_split(data["split_seed"], data["test_per_class"])


def run(ctx) -> dict:
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

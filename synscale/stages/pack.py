"""Pack: one FFCV .beton per data source (the real pool, or one generation
config), plus how recognizable and diverse generated images are.

Sizes are not packed separately: train selects per-class prefixes by index.
For CLIP studies a pack also holds each row's captions: a generated image's
prompt; a real image's captions from the study's pairs file, or one caption
picked by (seed, class, index) from a prompt strategy on its class name.

`scores.npz` holds per-row values a curation rule can select on, aligned
with the rows: recognizability (digits: the probability the real-pool
reference classifier gives the intended class; image folders: the generate
stage's score when the study asked for it), clip_score and nsfw (the safety
checker's flag) when generation recorded them, and year for real images
whose metadata file dates them.
"""
from __future__ import annotations

import numpy as np

from synscale.plan import state

VERSION = "2"  # 2: per-row scores (scores.npz) for curation


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
    captions = None
    if spec["source"] == "real":
        order = np.argsort(split.train_y, kind="stable")  # the order write_beton keeps
        images, labels = split.train_x[order], split.train_y[order]
        if spec.get("captions"):
            captions = _real_captions(spec, labels)
    else:
        from synscale.models.reference import diversity, fit_reference, recognizability
        from synscale.stages.generate import read_shards

        parts = [read_shards(ctx.inputs[i]) for i in ctx.stage.inputs]
        images = np.concatenate([p["images"] for p in parts])
        labels = np.concatenate([p["labels"] for p in parts])
        if spec.get("captions"):
            captions = [[str(p)] for part in parts for p in part["prompts"]]
        # Scored by a classifier of the real pool: how often a generated image
        # is recognized as its class, and how spread out each class is.
        ref = fit_reference(split.train_x, split.train_y, seed=spec["data"]["split_seed"])
        write_scores(ctx.dir, {"recognizability": ref.proba_of(images, labels)})
        quality = {"recognizability": recognizability(ref, images, labels),
                   "diversity": diversity(ref, images, labels),
                   "real_test_accuracy": recognizability(ref, split.test_x, split.test_y),
                   "real_pool_diversity": diversity(ref, split.train_x, split.train_y)}
        state.write_json(ctx.dir / "quality.json", quality)
    index = write_beton(ctx.dir, images, labels, captions=captions)
    ctx.log.info("packed %d rows", index["rows"])
    return {"rows": index["rows"], **quality}


def _run_rgb(ctx) -> dict:
    """Image folders: the first `per_class` files of each class folder (name
    order), or generated RGB shards, as JPEG rows at the study's resolution."""
    from synscale.data.ffcv_io import write_rgb_beton

    spec = ctx.spec
    quality, captions = {}, None
    if spec["source"] == "real":
        from synscale.data.folders import class_key, images_of
        from synscale.prompts.classes import of_data

        items, labels = [], []
        for c in of_data(spec["data"]):
            files = images_of(spec["data"]["train_dir"], class_key(c), spec["per_class"])
            items += files
            labels += [c.index] * len(files)
        labels = np.array(labels)
        if spec.get("captions"):
            captions = _real_captions(spec, labels, items)
        if spec["data"].get("metadata"):
            from synscale.data.metadata import years_of
            write_scores(ctx.dir, {"year": years_of(spec["data"]["metadata"],
                                                    spec["data"]["train_dir"], items)})
    else:
        from synscale.stages.generate import read_shards

        parts = [read_shards(ctx.inputs[i]) for i in ctx.stage.inputs]
        items = np.concatenate([p["images"] for p in parts])
        labels = np.concatenate([p["labels"] for p in parts])
        order = np.argsort(labels, kind="stable")
        items, labels = items[order], labels[order]
        if spec.get("captions"):
            prompts = np.concatenate([p["prompts"] for p in parts])[order]
            captions = [[str(p)] for p in prompts]
        rows = _row_scores(ctx)
        if rows:
            write_scores(ctx.dir, {k: v[order] for k, v in rows.items()})
        quality = {("flagged_fraction" if k == "nsfw" else k): float(np.mean(v))
                   for k, v in rows.items()}
        if quality:
            state.write_json(ctx.dir / "quality.json", quality)
    index = write_rgb_beton(ctx.dir, items, labels, spec["resolution"],
                            workers=spec.get("workers", 1), captions=captions)
    ctx.log.info("packed %d rows", index["rows"])
    return {"rows": index["rows"], **quality}


def _real_captions(spec: dict, labels: np.ndarray, files=None) -> list[list[str]]:
    """Captions of real rows sorted by class: every caption the pairs file
    gives an image, or one picked from the prompt strategy's pool."""
    c = spec["captions"]
    if c["pairs"]:
        from synscale.data.captions import read_pairs
        return read_pairs(c["pairs"], spec["data"]["train_dir"], files)
    from synscale.prompts import PromptOptions, build_pools, pick
    from synscale.prompts.classes import of_data

    pools = build_pools(c["prompts"], list(of_data(spec["data"])), PromptOptions(), c["seed"])
    first = {int(k): int(np.argmax(labels == k)) for k in np.unique(labels)}
    return [[pick(pools.prompts[int(k)], c["seed"], int(k), i - first[int(k)])]
            for i, k in enumerate(labels)]


def _row_scores(ctx) -> dict[str, np.ndarray]:
    """The per-image scores the generate stages stored, in their shard order."""
    found: dict[str, list] = {}
    for i in ctx.stage.inputs:
        manifest = state.read_json(ctx.inputs[i] / "manifest.json")
        for name in manifest["shards"]:
            with np.load(ctx.inputs[i] / name) as z:
                for key in ("recognizability", "clip_score", "nsfw"):
                    if key in z.files:
                        found.setdefault(key, []).append(z[key].astype(float))
    return {k: np.concatenate(v) for k, v in found.items()}


def write_scores(folder, scores: dict[str, np.ndarray]) -> None:
    """scores.npz: one array per score, aligned with the packed rows."""
    with state.atomic_path(folder / "scores.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v, dtype=float) for k, v in scores.items()})

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

import time

import numpy as np

from synscale.plan import state
from synscale.prompts.classes import output_names
from synscale.study.specs import DataSpec, PackSpec

VERSION = "3"  # 2: per-row scores (scores.npz) for curation; 3: digits' scores in fixed
# blocks (the same for an image in a pack of any size)


# what a generate stage may store per image for curation (generators/scores.py)
SCORE_KEYS = ("recognizability", "clip_score", "nsfw")


def _real_pool(data: DataSpec):
    from synscale.data.digits import load_split
    return load_split(data.split_seed, data.test_per_class)


def run(ctx) -> dict:
    spec: PackSpec = ctx.spec
    if spec.data.dataset != "digits":
        return _run_rgb(ctx)
    from synscale.data.ffcv_io import write_beton

    split = _real_pool(spec.data)
    quality = {}
    captions = None
    if spec.source == "real":
        order = np.argsort(split.train_y, kind="stable")  # the order write_beton keeps
        images, labels = split.train_x[order], split.train_y[order]
        if spec.captions:
            captions = _real_captions(spec, labels)
    else:
        from synscale.models.reference import diversity, fit_reference, recognizability

        # the digits are 8x8: all of them fit in memory (RGB packs stream, below)
        rows = _generated(ctx)
        images = np.stack([rows[r] for r in range(len(rows))])
        labels = rows.labels
        if spec.captions:
            captions = [[str(p)] for p in rows.meta("prompts")]
        # Scored by a classifier of the real pool: how often a generated image
        # is recognized as its class, and how spread out each class is.
        ref = fit_reference(split.train_x, split.train_y, seed=spec.data.split_seed)
        write_scores(ctx.dir, {"recognizability": ref.proba_by_block(images, labels,
                                                                     rows.meta("indices"))})
        quality = {"recognizability": recognizability(ref, images, labels),
                   "diversity": diversity(ref, images, labels),
                   "real_test_accuracy": recognizability(ref, split.test_x, split.test_y),
                   "real_pool_diversity": diversity(ref, split.train_x, split.train_y)}
        state.write_json(ctx.dir / "quality.json", quality)
    began = time.perf_counter()
    index = write_beton(ctx.dir, images, labels, captions=captions,
                        class_names=output_names(spec.data))
    ctx.log.info("packed %d rows", index["rows"])
    return {"rows": index["rows"], "write_seconds": round(time.perf_counter() - began, 3),
            **quality}


def _run_rgb(ctx) -> dict:
    """Image folders: the first `per_class` files of each class folder (name
    order), or generated RGB shards, as JPEG rows at the study's resolution."""
    from synscale.data.ffcv_io import write_rgb_beton

    spec: PackSpec = ctx.spec
    if spec.source == "real":
        return _pack_folder(ctx)
    captions = None
    # decoded one at a time by the writer's workers, in (class, index) order
    items = _generated(ctx)
    labels = items.labels
    # the prompts (as captions) and stored scores, each shard opened once
    wanted = (["prompts"] if spec.captions else []) + [k for k in SCORE_KEYS if k in items.keys]
    meta = items.metas(wanted)
    if spec.captions:
        captions = [[str(p)] for p in meta.pop("prompts")]
    rows = {k: v.astype(float) for k, v in meta.items()}
    if rows:
        write_scores(ctx.dir, rows)
    quality = {("flagged_fraction" if k == "nsfw" else k): float(np.mean(v))
               for k, v in rows.items()}
    if quality:
        state.write_json(ctx.dir / "quality.json", quality)
    began = time.perf_counter()  # the writer's own time: what a pilot's rate reads
    index = write_rgb_beton(ctx.dir, items, labels, spec.resolution, workers=_workers(spec),
                            captions=captions, class_names=output_names(spec.data))
    ctx.log.info("packed %d rows", index["rows"])
    return {"rows": index["rows"], "write_seconds": round(time.perf_counter() - began, 3),
            **quality}


def _pack_folder(ctx) -> dict:
    """The first `per_class` files of each class folder, in name order. With
    [data] bad_images = "skip", a file that does not decode is left out and
    the next one in name order takes its place (so each class's prefix is
    still the first decodable files): the pass that meets one ends and a new
    one packs without it, which costs a pass only where a folder holds such
    files. Without it, the first such file fails the pack within a second."""
    from synscale.data.decode import BadImages

    spec: PackSpec = ctx.spec
    skip = spec.bad_images == "skip"
    left_out: dict[str, str] = {}
    while True:
        items, labels = _folder_rows(spec, left_out)
        began = time.perf_counter()
        try:
            index = _write_folder(ctx, items, labels, skip)
        except BadImages as e:
            if not skip:
                raise
            left_out.update(e.found)
            ctx.log.info("left out %d undecodable file(s) so far; packing again without them",
                         len(left_out))
            continue
        break
    if skip:  # which files, beside the rows: a reader can tell what was trained on
        state.write_json(ctx.dir / "left_out.json", {"bad_images": "skip", "files": [
            {"path": p, "why": w} for p, w in sorted(left_out.items())]})
    ctx.log.info("packed %d rows", index["rows"])
    return {"rows": index["rows"], "write_seconds": round(time.perf_counter() - began, 3),
            **({"images_left_out": len(left_out)} if skip else {})}


def _folder_rows(spec: PackSpec, left_out) -> tuple[list, np.ndarray]:
    from synscale.data.folders import class_key, images_of
    from synscale.prompts.classes import of_data

    items, labels = [], []
    for c in of_data(spec.data):
        files = images_of(spec.data.train_dir, class_key(c), spec.per_class, left_out)
        items += files
        labels += [c.index] * len(files)
    return items, np.array(labels)


def _write_folder(ctx, items, labels, skip: bool) -> dict:
    from synscale.data.ffcv_io import write_rgb_beton

    spec: PackSpec = ctx.spec
    captions = None
    if spec.captions:
        captions = _real_captions(spec, labels, items)
    if spec.data.metadata:
        from synscale.data.metadata import years_of
        write_scores(ctx.dir, {"year": years_of(spec.data.metadata, spec.data.train_dir,
                                                items)})
    return write_rgb_beton(ctx.dir, items, labels, spec.resolution, workers=_workers(spec),
                           captions=captions, fail_fast=not skip,
                           class_names=output_names(spec.data))


def _generated(ctx):
    """The rows of this pack's generate stages, checked against the rows per
    class it was planned for."""
    from synscale.data.shards import Rows

    spec: PackSpec = ctx.spec
    rows = Rows([ctx.inputs[i] for i in ctx.stage.inputs], spec.per_class)
    counts = set(np.bincount(rows.labels).tolist())
    if spec.per_class is not None and counts != {spec.per_class}:
        raise ValueError(f"the generate stages hold {sorted(counts)} images per class; this "
                         f"pack was planned for {spec.per_class}")
    return rows


def after_done(ctx) -> None:
    """[generate] keep_shards = false: once this pack is done, the shards its
    generate stages hold go from the pool (a later plan that reads them again
    renders them again, bit-identically)."""
    from synscale.data.shards import paths

    if not ctx.spec.release_inputs:
        return
    for i, kind in ctx.input_kinds.items():
        if kind == "generate":
            freed = state.release(ctx.inputs[i], paths(ctx.inputs[i]),
                                  f"packed into pack/{ctx.stage.id}")
            ctx.log.info("released generate/%s: %.1f MB of shards", i, freed / 1e6)


def _real_captions(spec: PackSpec, labels: np.ndarray, files=None) -> list[list[str]]:
    """Captions of real rows sorted by class: every caption the pairs file
    gives an image, or one picked from the prompt strategy's pool."""
    c = spec.captions
    if c.pairs:
        from synscale.data.captions import read_pairs
        return read_pairs(c.pairs, spec.data.train_dir, files)
    from synscale.prompts import PromptOptions, build_pools, pick
    from synscale.prompts.classes import of_data

    pools = build_pools(c.prompts, list(of_data(spec.data)), PromptOptions(), c.seed)
    first = {int(k): int(np.argmax(labels == k)) for k in np.unique(labels)}
    return [[pick(pools.prompts[int(k)], c.seed, int(k), i - first[int(k)])]
            for i, k in enumerate(labels)]


def _workers(spec: PackSpec) -> int:
    """The writer's processes: the CPUs this job was given ([resources.pack] cpus on Slurm)."""
    import os
    return int(spec.workers or len(os.sched_getaffinity(0)))


def write_scores(folder, scores: dict[str, np.ndarray]) -> None:
    """scores.npz: one array per score, aligned with the packed rows."""
    with state.atomic_path(folder / "scores.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v, dtype=float) for k, v in scores.items()})

"""Generate: render a class range of one generation config into shards.

A shard is up to `shard_images` consecutive images of one class, written
atomically as `shard-<class>-<first index>.npz`: the images encoded in the
study's `image_format` (data/shards.py) with their per-image metadata
(class, prompt, seed, guidance, generator, steps, resolution, the safety
checker's flag where the pipeline has one, and the scores the study asks
for: generators/scores.py). The sampler renders `batch_size` images at a
time, in batches fixed by the images alone (plan/batches.py: batch k of a
class is indices [k*b, (k+1)*b), rendered whole), so shard and class-range
boundaries never change an image. Each batch of a shard still being filled
is written as a part (`part-<class>-<first index>.npz`, atomically), and the
parts become the shard once all are there. Files stay few (at ImageNet scale
a shard of 1,000 images is one file where batches of 50 were 20), and a
crash loses at most one batch: a rerun keeps finished shards and parts and
renders only the missing batches. Each image's seed comes from (study seed,
class, index), so a re-rendered shard is bit-identical to the one that was
lost (on the same machine and libraries: README, "What is reproducible").
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from synscale.data import shards
from synscale.data.shards import shard_path
from synscale.generators.pipeline import guidance_scale
from synscale.generators.scores import Scorer
from synscale.plan import state
from synscale.plan.batches import render_batches
from synscale.plan.hashing import image_seed
from synscale.prompts.classes import of_data
from synscale.prompts.strategies import pick
from synscale.study.specs import GenerateSpec

VERSION = "5"  # 2: prompts from the prompt strategies, per-image metadata; 3: encoded images;
# 4: shards of shard_images images, filled by several sampler batches; 5: batches aligned to
# batch_size and rendered whole (plan/batches.py)


def shard_plan(classes: tuple[int, int], per_class: int, size: int) -> list[tuple[int, int, int]]:
    """(class, first index, count) for every shard of this stage."""
    return [(c, start, min(size, per_class - start))
            for c in range(*classes) for start in range(0, per_class, size)]


def part_path(folder: Path, c: int, start: int) -> Path:
    return Path(folder) / f"part-{c:05d}-{start:07d}.npz"


def _renderer(spec: GenerateSpec):
    from synscale import generators
    if spec.generator == "embedded-ddpm":
        return generators.EmbeddedDDPM(spec.scheduler)
    from synscale.generators.pipeline import RenderOptions
    model = generators.load(spec.generator, spec.weights, RenderOptions.from_spec(spec),
                            spec.scheduler, spec.options or {})
    return _PromptRenderer(model)


class _PromptRenderer:
    """A diffusers generator, which reads prompts and ignores labels."""

    def __init__(self, model):
        self.model, self.describe = model, model.describe

    def render(self, labels, prompts, seeds, t, steps):
        return self.model.render(prompts, seeds, t, steps)


def _prompt_pools(ctx, classes):
    from synscale.prompts import PromptOptions, build_pools
    from synscale.prompts.word2sen import Word2Sen
    spec: GenerateSpec = ctx.spec
    p = spec.prompt_options
    captions = (p and p.captions) or ""
    for i, kind in ctx.input_kinds.items():  # IN-Captions from a caption stage
        if kind == "caption":
            captions = str(ctx.inputs[i] / "captions.json")
    w = p and p.word2sen
    word2sen = Word2Sen(w.model, w.template, w.per_class) if w else Word2Sen()
    return build_pools(spec.prompts, classes, PromptOptions(word2sen, captions), spec.seed)


def run(ctx) -> dict:
    spec: GenerateSpec = ctx.spec
    if spec.shard_images % spec.batch_size:  # load.py refuses such a study; a hand-made spec
        raise ValueError(f"shard_images {spec.shard_images} is not a multiple of batch_size "
                         f"{spec.batch_size}: a shard holds whole sampler batches")
    lo, hi = spec.classes
    classes = of_data(spec.data)[lo:hi]
    pools = _prompt_pools(ctx, classes)
    plan = shard_plan((lo, hi), spec.images_per_class, spec.shard_images)
    renderer = scorer = None  # loaded only if a shard is missing: a finished rerun stays cheap
    rendered, sampled, flagged, render_seconds = 0, 0, 0, 0.0
    # the quality only matters (and is only planned) for a lossy format
    image_format, quality = spec.image_format, spec.image_quality or 95
    size = spec.batch_size
    for c, start, count in plan:
        path = shard_path(ctx.dir, c, start)
        if path.exists():
            continue
        pieces = render_batches(start, start + count, size)
        parts = [path] if len(pieces) == 1 else [part_path(ctx.dir, c, b) for b, _ in pieces]
        for (b, n), part in zip(pieces, parts):
            if part.exists():  # rendered before a crash
                continue
            renderer = renderer or _renderer(spec)
            # the whole batch, also past the size: its images depend on their companions
            indices = np.arange(b, b + size)
            seeds = [image_seed(spec.seed, c, int(i)) for i in indices]
            prompts = [pick(pools.prompts[c], spec.seed, c, int(i)) for i in indices]
            started = time.perf_counter()
            images, flags = renderer.render(np.full(size, c), prompts, seeds, spec.guidance,
                                            spec.steps)
            render_seconds += time.perf_counter() - started
            meta = {"labels": np.full(size, c), "indices": indices,
                    "seeds": np.array(seeds, dtype=np.int64), "prompts": np.array(prompts),
                    "guidance": np.full(size, float(spec.guidance)),
                    "generator": np.array([spec.generator] * size),
                    "steps": np.full(size, spec.steps),
                    "resolution": np.full(size, images.shape[-2])}
            if flags is not None:
                meta["nsfw"] = flags
            if spec.scores:  # scored as rendered: a scorer's batch rounds like a sampler's
                scorer = scorer or Scorer(spec)
                meta.update(scorer(images, meta["labels"], prompts))
            meta = {k: np.asarray(v)[:n] for k, v in meta.items()}
            flagged += int(meta["nsfw"].sum()) if "nsfw" in meta else 0
            shards.write(part, images[:n], meta, image_format, quality)
            rendered += n
            sampled += size
        if parts != [path]:
            shards.merge(parts, path)
        ctx.log.info("shard class %d [%d, %d) written", c, start, start + count)
    # parts left by a kill between a merge and their deletion
    for stale in ctx.dir.glob("part-*.npz"):
        stale.unlink()
    per_class = {c.index: sorted({pick(pools.prompts[c.index], spec.seed, c.index, i)
                                  for i in range(spec.images_per_class)}) for c in classes}
    import torch
    manifest = {
        "generator": spec.generator, "guidance": spec.guidance,
        # diffusers' convention, recorded beside the paper's t.
        "guidance_scale": guidance_scale(spec.guidance), "scheduler": spec.scheduler,
        "steps": spec.steps, "classes": list(spec.classes),
        # the images' last bits depend on it (plan/batches.py)
        "batch_size": spec.batch_size,
        "images_per_class": spec.images_per_class, "prompts": spec.prompts,
        "distinct_prompts_per_class": {str(c): len(v) for c, v in per_class.items()},
        "prompt_pool_sizes": {str(c): len(set(v)) for c, v in pools.prompts.items()},
        **({"prompt_notes": pools.notes} if pools.notes else {}),
        "shards": [shard_path(ctx.dir, c, s).name for c, s, _ in plan],
        "torch": torch.__version__,
        "image_format": image_format, "image_quality": quality,
        # the encoders' versions: a re-rendered shard is bit-identical under the same ones
        "codecs": shards.codec_versions(),
    }
    first = shards.Shard(shard_path(ctx.dir, *plan[0][:2]))
    manifest.update(image_shape=list(first.shape), encoding=first.encoding,
                    bytes=sum(shard_path(ctx.dir, c, s).stat().st_size for c, s, _ in plan))
    if renderer is not None:
        manifest["pipeline"] = renderer.describe
    summary = {"images_rendered": rendered, "shards": len(plan), "bytes": manifest["bytes"],
               # the sampler's own time, model loading left out: what a GPU budget buys
               "render_seconds": round(render_seconds, 3),
               "images_per_second": round(sampled / render_seconds, 3) if sampled else None}
    if sampled > rendered:  # last batches rendered whole (plan/batches.py)
        summary["images_dropped"] = sampled - rendered
    if flagged:
        summary["flagged_unsafe"] = flagged
    state.write_json(ctx.dir / "manifest.json", manifest)
    # rendered again after a release: every shard is back
    (ctx.dir / "RELEASED").unlink(missing_ok=True)
    return summary


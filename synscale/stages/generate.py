"""Generate: render a range of one generation config's images into its pool.

A generate stage (a chunk) renders images [a, b) (`spec.indices`) of each
class of `spec.classes`. The images go to the config's pool
(`pool/<config content id>/`, beside `stages/`), not to the stage's folder:
a pool holds each image of a config once, whichever chunk rendered it, so a
chunk cut another way (`classes_per_task`, `images_per_task`,
`shard_images`) or a size grown finds what is there and renders only the
missing images (DESIGN.md, "Identity is content"). The stage's folder holds
its manifest (the shards that hold its range), log and DONE.

A shard is consecutive images of one class, `shard-<class>-<first>-<count>.npz`,
written atomically: the images encoded in the study's `image_format`
(data/shards.py) with their per-image metadata (class, index, prompt, seed,
guidance, generator, steps, resolution, the safety checker's flag where the
pipeline has one, and the scores the study asks for: generators/scores.py).
Shards are cut at multiples of `shard_images`. The sampler renders
`batch_size` images at a time, in batches fixed by the images alone
(plan/batches.py: batch k of a class is indices [k*b, (k+1)*b), rendered
whole), so no cut changes an image. Each batch of a shard still being
filled is written as a part (`part-<class>-<first>-<count>.npz`, in the
pool), and the parts become the shard once all are there: a crash loses at
most one batch, and whichever stage fills that range next keeps the parts.
Files stay few (at ImageNet scale a shard of 1,000 images is one file where
batches of 50 were 20). Each image's seed comes from (study seed, class,
index), so a re-rendered shard is bit-identical to the one that was lost (on
the same machine and libraries: README, "What is reproducible").

While it fills a class's range, a stage holds a lock on that range in the
pool's lock file: two stages whose ranges overlap (two studies on one store,
cut differently) never render an image twice, and disjoint ranges of one
class render side by side.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from synscale.data import shards
from synscale.generators.pipeline import guidance_scale
from synscale.generators.scores import Scorer
from synscale.plan import state
from synscale.plan.batches import gaps, pieces, whole_batches, windows
from synscale.plan.hashing import image_seed
from synscale.plan.layout import pool_of, shard_path, shard_range
from synscale.prompts.classes import of_data
from synscale.prompts.strategies import pick
from synscale.study.specs import GenerateSpec

VERSION = "6"  # 2: prompts from the prompt strategies, per-image metadata; 3: encoded images;
# 4: shards of shard_images images, filled by several sampler batches; 5: batches aligned to
# batch_size and rendered whole (plan/batches.py); 6: index ranges, images in the config's pool


def part_path(folder: Path, c: int, first: int, count: int) -> Path:
    return Path(folder) / f"part-{c:05d}-{first:07d}-{count:07d}.npz"


@contextmanager
def range_lock(pool: Path, c: int, start: int, stop: int):
    """An exclusive lock on class `c`'s images [start, stop) of a pool (a byte
    range of one lock file: no file per class, and disjoint ranges do not wait)."""
    fd = os.open(pool / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, stop - start, (c << 32) + start)
        yield
    finally:
        os.close(fd)  # releases the lock


def emulated_half(spec: GenerateSpec) -> str:
    """A warning where 16-bit rendering runs on a CPU that emulates it."""
    if spec.generator == "embedded-ddpm" or spec.precision == "fp32":
        return ""
    from synscale.generators.pipeline import RenderOptions, cpu_has_native_bf16, device_and_dtype
    device, _ = device_and_dtype(RenderOptions.from_spec(spec))
    if device.type != "cpu" or cpu_has_native_bf16():
        return ""
    return (f"generate.precision = {spec.precision!r} on a CPU without native bf16/fp16 "
            "(AVX2): torch emulates it and convolutions run ~300x slower than fp32; "
            "render on a GPU or with precision = \"fp32\" (imagen: text_encoder_precision = "
            "\"bf16\" keeps T5-XXL at 9.5 GB)")


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
    lo, hi = spec.classes
    a, b = spec.indices
    classes = of_data(spec.data)[lo:hi]
    pools = _prompt_pools(ctx, classes)
    pool = pool_of(ctx.dir, ctx.stage.content_key)
    pool.mkdir(parents=True, exist_ok=True)
    work = _Work(ctx, spec, pools, pool)
    held, found = [], 0
    # the last batch whole, and kept: a larger size later finds its images
    top = whole_batches(b, spec.batch_size)
    for c in range(lo, hi):
        with range_lock(pool, c, a, top):
            _drop_temporaries(pool, c, a, top)
            missing = gaps(shards.covered(pool, c), a, top)
            found += (b - a) - sum(min(y, b) - x for x, y in missing if x < b)
            for x, y in missing:
                for p, q in pieces(x, y, spec.shard_images):
                    work.shard(c, p, q)
            have = shards.covered(pool, c)
            held += [path for first, end, path in have if first < b and end > a]
            _drop_merged_parts(pool, c, a, top, have)
        ctx.log.info("class %d [%d, %d) in the pool", c, a, b)
    per_class = {c.index: sorted({pick(pools.prompts[c.index], spec.seed, c.index, i)
                                  for i in range(a, b)}) for c in classes}
    import torch
    manifest = {
        "generator": spec.generator, "guidance": spec.guidance,
        # diffusers' convention, recorded beside the paper's t.
        "guidance_scale": guidance_scale(spec.guidance), "scheduler": spec.scheduler,
        "steps": spec.steps, "classes": list(spec.classes), "indices": [a, b],
        # the images' last bits depend on it (plan/batches.py)
        "batch_size": spec.batch_size, "prompts": spec.prompts,
        "distinct_prompts_per_class": {str(c): len(v) for c, v in per_class.items()},
        "prompt_pool_sizes": {str(c): len(set(v)) for c, v in pools.prompts.items()},
        **({"prompt_notes": pools.notes} if pools.notes else {}),
        # where the images are: the config's pool and the shards of it holding this range
        "pool": ctx.stage.content_key, "shards": [p.name for p in held],
        "torch": torch.__version__,
        "image_format": spec.image_format, "image_quality": spec.image_quality or 95,
        # the encoders' versions: a re-rendered shard is bit-identical under the same ones
        "codecs": shards.codec_versions(),
    }
    first = shards.Shard(held[0])
    manifest.update(image_shape=list(first.shape), encoding=first.encoding,
                    bytes=sum(p.stat().st_size for p in held))
    if work.renderer is not None:
        manifest["pipeline"] = work.renderer.describe
    summary = {"images_rendered": work.rendered, "images_found": found,
               # what plan/outputs.check finds in the pool (its shards may be merged later)
               "covers": {"pool": os.path.relpath(pool, ctx.dir), "classes": [lo, hi],
                          "indices": [a, b]},
               "shards": len(held), "bytes": manifest["bytes"],
               # the sampler's own time, model loading left out: what a GPU budget buys
               "render_seconds": round(work.seconds, 3),
               "images_per_second": round(work.sampled / work.seconds, 3) if work.sampled
               else None}
    if work.sampled > work.rendered:  # batches rendered whole (plan/batches.py)
        summary["images_dropped"] = work.sampled - work.rendered
    if work.flagged:
        summary["flagged_unsafe"] = work.flagged
    state.write_json(ctx.dir / "manifest.json", manifest)
    # rendered again after a release: every shard is back
    (ctx.dir / "RELEASED").unlink(missing_ok=True)
    return summary


def _drop_merged_parts(pool: Path, c: int, a: int, b: int, have) -> None:
    """Parts of this range a kill left beside the shard they were merged into
    (or one a batch size since changed would not name again)."""
    for part in pool.glob(f"part-{c:05d}-*.npz"):
        _, first, count = shard_range(part)
        if a <= first and first + count <= b and any(f <= first and first + count <= e
                                                     for f, e, _ in have):
            part.unlink(missing_ok=True)


def _drop_temporaries(pool: Path, c: int, a: int, b: int) -> None:
    """Files of this range a killed writer left under their temporary names
    (state.atomic_path: `.<name>.<pid>.tmp`). Only this range's: a stage
    filling another range of the class may be writing its own right now."""
    for tmp in pool.glob(f".*-{c:05d}-*{state.TMP_SUFFIX}"):
        name = tmp.name[1:].split(".npz")[0]
        of, first, count = shard_range(Path(name))
        if of == c and a <= first and first + count <= b:
            tmp.unlink(missing_ok=True)


class _Work:
    """What a stage renders: the sampler and scorer (loaded at the first image
    missing, so a stage that finds its range in the pool stays cheap), and
    its counts."""

    def __init__(self, ctx, spec: GenerateSpec, pools, pool: Path):
        self.ctx, self.spec, self.pools, self.pool = ctx, spec, pools, pool
        self.renderer = self.scorer = None
        self.rendered = self.sampled = self.flagged = 0
        self.seconds = 0.0

    def shard(self, c: int, p: int, q: int) -> None:
        """Class `c`'s images [p, q) as one shard, batch by batch (each a part
        until the shard is whole; parts left by a crash are kept)."""
        path = shard_path(self.pool, c, p, q - p)
        batches = windows(p, q, self.spec.batch_size)
        parts = [path] if len(batches) == 1 else \
            [part_path(self.pool, c, k0, k1 - k0) for _, k0, k1 in batches]
        for (first, k0, k1), part in zip(batches, parts):
            if not part.exists():
                self.batch(c, first, k0, k1, part)
        if parts != [path]:
            shards.merge(parts, path)
        self.ctx.log.info("shard class %d [%d, %d) written", c, p, q)

    def batch(self, c: int, first: int, k0: int, k1: int, part: Path) -> None:
        """Render the batch from `first` whole (its images depend on their
        companions) and keep images [k0, k1) of it."""
        spec, size = self.spec, self.spec.batch_size
        if self.renderer is None:
            self.renderer = _renderer(spec)
            slow = emulated_half(spec)
            if slow:
                self.ctx.log.warning(slow)
        indices = np.arange(first, first + size)
        seeds = [image_seed(spec.seed, c, int(i)) for i in indices]
        prompts = [pick(self.pools.prompts[c], spec.seed, c, int(i)) for i in indices]
        started = time.perf_counter()
        images, flags = self.renderer.render(np.full(size, c), prompts, seeds, spec.guidance,
                                             spec.steps)
        self.seconds += time.perf_counter() - started
        meta = {"labels": np.full(size, c), "indices": indices,
                "seeds": np.array(seeds, dtype=np.int64), "prompts": np.array(prompts),
                "guidance": np.full(size, float(spec.guidance)),
                "generator": np.array([spec.generator] * size),
                "steps": np.full(size, spec.steps),
                "resolution": np.full(size, images.shape[-2])}
        if flags is not None:
            meta["nsfw"] = flags
        if spec.scores:  # scored as rendered: a scorer's batch rounds like a sampler's
            self.scorer = self.scorer or Scorer(spec)
            meta.update(self.scorer(images, meta["labels"], prompts))
        keep = slice(k0 - first, k1 - first)
        meta = {k: np.asarray(v)[keep] for k, v in meta.items()}
        self.flagged += int(meta["nsfw"].sum()) if "nsfw" in meta else 0
        shards.write(part, images[keep], meta, spec.image_format, spec.image_quality or 95)
        self.rendered += k1 - k0
        self.sampled += size

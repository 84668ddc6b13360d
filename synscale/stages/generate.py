"""Generate: render a class range of one generation config into shards.

A shard is one sampler batch of one class, written atomically as
`shard-<class>-<first index>.npz` plus its per-image metadata. A rerun after a
crash keeps finished shards and renders only the missing ones; each image's
seed comes from (study seed, class, index), so a re-rendered shard is
bit-identical to the one that was lost.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from synscale.plan import state
from synscale.plan.hashing import image_seed

VERSION = "1"


def shard_plan(classes: tuple[int, int], per_class: int, batch: int) -> list[tuple[int, int, int]]:
    """(class, first index, count) for every shard of this stage."""
    return [(c, start, min(batch, per_class - start))
            for c in range(*classes) for start in range(0, per_class, batch)]


def shard_path(folder: Path, c: int, start: int) -> Path:
    return Path(folder) / f"shard-{c:05d}-{start:07d}.npz"


def _class_names(spec: dict) -> list[str]:
    if spec["data"]["dataset"] == "digits":
        from synscale.data.digits import CLASS_NAMES
        return list(CLASS_NAMES)
    raise ValueError(f"class names for dataset {spec['data']['dataset']!r} arrive with the "
                     "prompt strategies")


def run(ctx) -> dict:
    spec = ctx.spec
    if spec["generator"] != "embedded-ddpm":
        raise ValueError(f"generator {spec['generator']!r} has no runner in this version; "
                         "available: 'embedded-ddpm'")
    import torch

    from synscale.generators import ddpm

    unet, config = ddpm.load_embedded()
    names = _class_names(spec)
    shards = shard_plan(tuple(spec["classes"]), spec["images_per_class"], spec["batch_size"])
    rendered = 0
    for c, start, count in shards:
        path = shard_path(ctx.dir, c, start)
        if path.exists():
            continue
        indices = np.arange(start, start + count)
        seeds = [image_seed(spec["seed"], c, int(i)) for i in indices]
        images = ddpm.sample(unet, config, np.full(count, c), seeds, spec["guidance"],
                             spec["steps"], spec["scheduler"])
        # The DDPM is conditioned on the label itself; the prompt records the
        # class name so every generator's metadata reads the same way.
        with state.atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, images=images.astype(np.float32), labels=np.full(count, c),
                         indices=indices, seeds=np.array(seeds, dtype=np.int64),
                         prompts=np.array([names[c]] * count))
        rendered += count
        ctx.log.info("shard class %d [%d, %d) written", c, start, start + count)
    manifest = {
        "generator": spec["generator"], "guidance": spec["guidance"],
        # diffusers' convention, recorded beside the paper's t.
        "guidance_scale": 1.0 + spec["guidance"], "scheduler": spec["scheduler"],
        "steps": spec["steps"], "resolution": list(images_shape(config)),
        "classes": spec["classes"], "images_per_class": spec["images_per_class"],
        "shards": [shard_path(ctx.dir, c, s).name for c, s, _ in shards],
        "torch": torch.__version__,
    }
    state.write_json(ctx.dir / "manifest.json", manifest)
    return {"images_rendered": rendered, "shards": len(shards)}


def images_shape(config: dict) -> tuple[int, int, int]:
    unet = config["unet"]
    size = unet["sample_size"]
    return (unet.get("in_channels", 1), size, size)


def read_shards(folder: Path) -> dict[str, np.ndarray]:
    """All images of a finished generate stage, in (class, index) order."""
    manifest = state.read_json(Path(folder) / "manifest.json")
    parts = [np.load(Path(folder) / name) for name in manifest["shards"]]
    return {key: np.concatenate([p[key] for p in parts])
            for key in ("images", "labels", "indices", "seeds", "prompts")}

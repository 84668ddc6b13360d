"""Curate: which rows of one pack a curation rule keeps, by index, so that
a filter sweep never re-renders or re-packs an image.

Rules (study.expand builds them from [curate]):
    quality   keep rows whose score (recognizability, clip_score) is >= the
              threshold; inverse keeps exactly the others (score < threshold)
    safety    keep rows the generator's safety checker did not flag
    snapshot  keep real rows dated up to a year (data age)

Writes kept.npy (a mask over the pack's rows) and, in the manifest, the
share kept overall and per class. Training applies the mask to the
per-class prefix it reads, so a size is the generation budget and the kept
images are the ones among it that pass.
"""
from __future__ import annotations

import numpy as np

from synscale.plan import state
from synscale.study.specs import RuleSpec, wire

VERSION = "1"
RULES = ("quality", "safety", "snapshot")


def keep_mask(rule: RuleSpec, scores: dict[str, np.ndarray]) -> np.ndarray:
    kind = rule.kind
    need = {"quality": rule.score, "safety": "nsfw", "snapshot": "year"}[kind]
    if need not in scores:
        why = {"nsfw": "its generator has no safety checker",
               "year": "the study gives no data.metadata with timestamps"}.get(
            need, "the study did not ask for that score ([generate] scores)")
        raise ValueError(f"curation rule {wire(rule)}: this pack has no {need!r} per image ({why}); "
                         f"it has: {', '.join(sorted(scores)) or 'none'}")
    values = scores[need]
    if kind == "quality":
        passed = values >= rule.threshold
        return ~passed if rule.inverse else passed
    if kind == "safety":
        return values == 0
    return values <= rule.year


def read_scores(pack_dir) -> dict[str, np.ndarray]:
    path = pack_dir / "scores.npz"
    if not path.exists():
        return {}
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def run(ctx) -> dict:
    (pack_dir,) = ctx.inputs.values()
    index = state.read_json(pack_dir / "index.json")
    per_class = ctx.spec.per_class
    if per_class is not None and set(index["class_counts"]) != {per_class}:
        raise ValueError(f"{pack_dir}: the pack holds {sorted(set(index['class_counts']))} rows "
                         f"per class; this curation was planned for {per_class}")
    keep = keep_mask(ctx.spec.rule, read_scores(pack_dir))
    if keep.size != index["rows"]:
        raise ValueError(f"{pack_dir}: scores.npz has {keep.size} rows, the pack {index['rows']}")
    labels = np.repeat(np.arange(len(index["class_counts"])), index["class_counts"])
    kept = np.bincount(labels[keep], minlength=len(index["class_counts"]))
    with state.atomic_path(ctx.dir / "kept.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, keep)
    totals = np.asarray(index["class_counts"])
    manifest = {"rule": wire(ctx.spec.rule), "rows": int(keep.size), "kept": int(keep.sum()),
                "share_kept": float(keep.mean()) if keep.size else 0.0,
                "kept_per_class": kept.tolist(),
                "share_kept_per_class": (kept / np.maximum(totals, 1)).tolist()}
    state.write_json(ctx.dir / "manifest.json", manifest)
    ctx.log.info("kept %d of %d rows (%.1f%%)", manifest["kept"], keep.size,
                 100 * manifest["share_kept"])
    return {"kept": manifest["kept"], "share_kept": manifest["share_kept"]}


def load_mask(folder) -> np.ndarray:
    return np.load(folder / "kept.npy")

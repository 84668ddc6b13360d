#!/usr/bin/env python
"""Images per second and peak memory of the pack stage against the number of
images it packs: the memory must not grow with the pack.

    tools/bench_pack.py [--images 5000,10000,20000] [--side 256] [--workers N]
                        [--format jpeg] [--quality 95] [--dir DIR] [--json]

Writes the largest count of procedural RGB images (smooth random fields,
which compress like photos rather than like noise) as generate stages
through the real shard writer, in stages of 5,000 images; each pack reads
the first stages up to its count. Every pack runs the pack stage's own
runner in a fresh process, which reports its peak RSS (getrusage: the
process itself, and the largest of FFCV's writer workers) and its seconds.
Prints, per count: images/s, images/s per worker, peak RSS, bytes of the
shards against the raw pixels, and the slope of peak memory against images
(GB per 10k images; the goal is flat).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PER_STAGE, BATCH, CLASSES_PER_STAGE = 5000, 500, 5


def procedural(n: int, side: int, seed: int) -> np.ndarray:
    """n images: a random 8x8 colour field upsampled (bilinear) plus mild noise."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    out = np.empty((n, side, side, 3), np.uint8)
    for i in range(n):
        base = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        smooth = np.asarray(base.resize((side, side), Image.BILINEAR), dtype=np.float32)
        out[i] = (smooth + rng.normal(0, 2, smooth.shape)).clip(0, 255).astype(np.uint8)
    return out


def _write_shard(job) -> int:
    from synscale.data import shards
    from synscale.plan.layout import shard_path
    folder, c, start, n, side, fmt, quality = job
    meta = {"labels": np.full(n, c), "indices": np.arange(start, start + n),
            "prompts": np.array([f"a photo of class {c}"] * n)}
    return shards.write(shard_path(folder, c, start, n),
                        procedural(n, side, c * 1_000_003 + start), meta, fmt, quality)


def write_stages(run: Path, images: int, side: int, fmt: str, quality: int,
                 workers: int) -> list[str]:
    """Generate stages holding `images` images in all (done, as generate leaves
    them: shards in one config's pool, each stage's manifest naming its own)."""
    from synscale.plan import state
    from synscale.plan.layout import RunDir, shard_path
    ids, jobs = [], []
    per_class = PER_STAGE // CLASSES_PER_STAGE
    pool = RunDir(run).pool("bench")
    pool.mkdir(parents=True, exist_ok=True)
    for k in range(-(-images // PER_STAGE)):
        sid = f"gen{k}"
        folder = run / "stages/generate" / sid
        folder.mkdir(parents=True, exist_ok=True)
        plan = [(c, s, min(BATCH, per_class - s))
                for c in range(k * CLASSES_PER_STAGE, (k + 1) * CLASSES_PER_STAGE)
                for s in range(0, per_class, BATCH)]
        jobs += [(pool, c, s, n, side, fmt, quality) for c, s, n in plan
                 if not shard_path(pool, c, s, n).exists()]
        state.write_json(folder / "manifest.json",
                         {"pool": "bench",
                          "shards": [shard_path(pool, c, s, n).name for c, s, n in plan]})
        ids.append(sid)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_shard, jobs))
    for sid in ids:
        state.mark_done(run / "stages/generate" / sid, {"bench": True})
    return ids


# The pack stage's runner in a fresh process; prints its own peak memory.
PACK = """
import json, resource, sys, time
from synscale.runtime.harness import execute
from synscale.plan.graph import Stage
root, ids, spec = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
started = time.perf_counter()
done = execute(root, Stage(sys.argv[4], "pack", spec, tuple(ids)), {i: "generate" for i in ids})
seconds = time.perf_counter() - started
kb = lambda who: resource.getrusage(who).ru_maxrss
print(json.dumps({"rows": done["rows"], "seconds": seconds,
                  "peak_rss_gb": kb(resource.RUSAGE_SELF) / 2**20,
                  "peak_worker_rss_gb": kb(resource.RUSAGE_CHILDREN) / 2**20}))
"""


def pack(run: Path, ids: list[str], name: str, resolution: int, workers: int) -> dict:
    spec = {"source": "synthetic", "data": {"dataset": "imagefolder"}, "resolution": resolution,
            "num_classes": len(ids) * CLASSES_PER_STAGE, "workers": workers}
    r = subprocess.run([sys.executable, "-c", PACK, str(run), json.dumps(ids), json.dumps(spec),
                        name], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode:
        raise SystemExit(f"pack of {len(ids)} stages failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["beton_bytes"] = (run / "stages/pack" / name / "data.beton").stat().st_size
    index = json.loads((run / "stages/pack" / name / "index.json").read_text())
    out["distinct_class_counts"] = sorted(set(index["class_counts"]))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", default="5000,10000,20000")
    p.add_argument("--side", type=int, default=256)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--format", default="jpeg", choices=("png", "jpeg", "webp"))
    p.add_argument("--quality", type=int, default=95)
    p.add_argument("--dir", type=Path, help="scratch folder (default: a temporary one)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    counts = sorted(int(x) for x in a.images.split(","))
    if any(c % PER_STAGE for c in counts):
        p.error(f"--images: each count must be a multiple of {PER_STAGE}, got {a.images}")
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        run = Path(tmp)
        started = time.perf_counter()
        ids = write_stages(run, counts[-1], a.side, a.format, a.quality, a.workers)
        write_seconds = time.perf_counter() - started
        from synscale.data.shards import paths
        shard_bytes = [sum(f.stat().st_size for f in paths(run / "stages/generate" / i))
                       for i in ids]
        rows = []
        for n in counts:
            k = n // PER_STAGE
            got = pack(run, ids[:k], f"pack{n}", resolution=int(round(a.side * 0.875)),
                       workers=a.workers)
            raw = n * a.side * a.side * 3
            rows.append({"images": n, **got, "images_per_s": n / got["seconds"],
                         "images_per_s_per_worker": n / got["seconds"] / a.workers,
                         "shard_bytes": sum(shard_bytes[:k]), "raw_bytes": raw,
                         "shard_share_of_raw": sum(shard_bytes[:k]) / raw})
    x = np.array([r["images"] for r in rows], float)
    def slope(key):
        return float(np.polyfit(x / 1e4, [r[key] for r in rows], 1)[0]) if len(rows) > 1 else None
    result = {"side": a.side, "format": a.format, "quality": a.quality, "workers": a.workers,
              "write_seconds": write_seconds, "rows": rows,
              "peak_rss_gb_per_10k_images": slope("peak_rss_gb"),
              "peak_worker_rss_gb_per_10k_images": slope("peak_worker_rss_gb")}
    if a.json:
        print(json.dumps(result, indent=1))
    else:
        _show(result)
    return result


def _show(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"pack: {result['side']} px {result['format']} {result['quality']}, "
                    f"{result['workers']} workers")
    for col in ("images", "images/s", "per worker", "peak RSS GB", "worker peak GB",
                "shards MB", "of raw", "beton MB"):
        t.add_column(col, justify="right")
    for r in result["rows"]:
        t.add_row(f"{r['images']:,}", f"{r['images_per_s']:.0f}",
                  f"{r['images_per_s_per_worker']:.0f}", f"{r['peak_rss_gb']:.2f}",
                  f"{r['peak_worker_rss_gb']:.2f}", f"{r['shard_bytes'] / 1e6:.0f}",
                  f"{r['shard_share_of_raw']:.1%}", f"{r['beton_bytes'] / 1e6:.0f}")
    console = Console()
    console.print(t)
    if result["peak_rss_gb_per_10k_images"] is not None:
        console.print(f"peak RSS slope: {result['peak_rss_gb_per_10k_images']:+.3f} GB per 10k "
                      f"images (process), {result['peak_worker_rss_gb_per_10k_images']:+.3f} "
                      "(largest worker)")


if __name__ == "__main__":
    main()

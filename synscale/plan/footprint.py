"""What a plan will occupy, before it runs: images, bytes on disk per stage
kind, and the host memory per node one stage of each kind needs.

Estimates, from rules the README states with the measurements behind them:
- generated images: `BITS_PER_PIXEL` of the shard format at the image side
  (the study's resolution, else the checkpoint's from its configs),
  plus the format's headers (conservative figures for photographs; the
  embedded DDPM's float samples take `FLOAT_SAMPLE_BYTES`); a pack: FFCV's
  file layout, whole pages per writer process (plan/beton.py), of JPEG 90
  rows, the side capped at resolution / 0.875, measured on a sample of a real
  pack's own images or at `BETON_BITS_PER_PIXEL`;
- trainings: the parameter count of the model built on torch's meta device
  (no memory, exact); a DeepSpeed checkpoint holds 16 bytes per parameter
  (fp32: weights, master copy, Adam's two moments; bf16: 14), two exist while
  a save completes, and the finished stage keeps only its fp32 weights;
- memory per node: model states under the ZeRO stage (Rajbhandari et al.,
  2020), activations of a transformer layer s*b*h*(34 + 5*a*s/h) bytes in
  16-bit (Korthikanti et al., 2022; twice in fp32), plus the process
  overheads measured on this project's CPU runs (`HOST_BASE_GB`).
Nothing here imports more than the model builders, and those only once per
distinct model: the cost does not grow with the number of stages beyond one
pass over their specs.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from synscale.plan.batches import pieces, whole_batches

GB = 1e9
# (quality, bits per pixel) points, interpolated; photographs, at the high end
# of what JPEG/WebP give them (procedural 256 px images measured lower: JPEG
# 75/90/95: 0.69/1.24/2.82, WebP 90: 0.67, PNG 11.7)
BITS_PER_PIXEL = {"jpeg": ((1, 0.5), (75, 1.5), (85, 2.0), (90, 2.5), (95, 3.5), (100, 11.0)),
                  "webp": ((1, 0.3), (75, 1.0), (90, 1.6), (95, 2.2), (100, 4.0)),
                  "png": ((1, 12.0), (100, 12.0))}
# a file's own headers (JPEG: JFIF, quantization and Huffman tables; measured
# 620 bytes from PIL), which dominate small images
FORMAT_HEADERS = {"jpeg": 620, "webp": 40, "png": 100}
FLOAT_SAMPLE_BYTES = 270        # an 8x8 float32 digit, DEFLATE-compressed (measured 267)
BETON_BITS_PER_PIXEL = 2.5      # FFCV's JPEG 90, 4:2:0 (measured 1.54 on procedural images)
# a shard's zip and .npy headers, and each image's metadata (numpy strings of its prompt and
# generator, seeds, ...): measured 3.2 kB per shard and ~190 bytes per digit
SHARD_OVERHEAD, META_BYTES = 3000, 250
# native output side of each generator's usual checkpoint ([generate] resolution overrides):
# SD 1.5, IF stage II, aMUSEd-256
NATIVE_SIDE = {"embedded-ddpm": 8, "stable-diffusion": 512, "imagen": 256, "muse": 256}
# parameters of those checkpoints, every part a render loads, for weights that are not on
# this machine (a study's own are counted: generator_params): SD 1.5 (UNet 860M, VAE 84M,
# CLIP text 123M); IF-I-XL 4.3B + IF-II-L 1.2B + T5-XXL encoder 4.8B; aMUSEd-256 ~0.8B
GENERATOR_PARAMS = {"embedded-ddpm": 0.0, "stable-diffusion": 1.07e9, "imagen": 10.3e9,
                    "muse": 0.8e9}
T5_XXL_PARAMS = 4.76e9  # of them, IF's text encoder
PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
# measured resident memory of a process that imported torch and the stage's
# libraries, before its model (pack: the whole pack stage, flat in its rows)
HOST_BASE_GB = {"cpu": 1.4, "gpu": 3.0}
PACK_GB, PACK_BYTES_PER_ROW = 0.7, 200


@dataclass
class KindFootprint:
    stages: int = 0
    images: int = 0
    bytes: float = 0.0          # what its finished stages keep on disk
    transient_bytes: float = 0.0  # more, while one stage runs (checkpoints)
    files: int = 0              # image files kept: shards, .beton files (inode quotas)
    node_gb: float = 0.0        # host memory per node of one stage (the largest), as mem_gb
    gpu_gb: float = 0.0         # trainings on GPUs: memory per GPU
    notes: list = field(default_factory=list)


def bits_per_pixel(fmt: str, quality: int) -> float:
    q, bpp = zip(*BITS_PER_PIXEL[fmt])
    return float(np.interp(quality, q, bpp))


def image_side(spec: dict) -> int:
    """A generated image's side: the study's resolution, else the checkpoint's
    own (from its configs, when it is here), else the usual checkpoint's."""
    if spec.get("resolution"):
        return spec["resolution"]
    if spec["generator"] != "embedded-ddpm":
        refs = spec["weights"]
        # a cascade's side is its last stage's
        last = refs if isinstance(refs, str) else (refs[-1] if refs else "")
        side = _native_side(last) if last else None
        if side:
            return side
    return NATIVE_SIDE[spec["generator"]]


@cache
def _native_side(ref: str) -> int | None:
    from synscale.generators.weights import WeightsError, native_side, resolve
    try:
        return native_side(resolve(ref))
    except (WeightsError, OSError, ValueError, KeyError, TypeError):
        return None


def image_bytes(spec: dict) -> float:
    """Bytes of one generated image in a generate stage's shards."""
    if spec["generator"] == "embedded-ddpm":
        return FLOAT_SAMPLE_BYTES
    side, fmt = image_side(spec), spec["image_format"]
    return side * side * bits_per_pixel(fmt, spec.get("image_quality", 95)) / 8 \
        + FORMAT_HEADERS[fmt]


def _generate(fp: KindFootprint, spec: dict, gpu: bool) -> None:
    lo, hi = spec["classes"]
    a, b = spec["indices"][0], whole_batches(spec["indices"][1], spec["batch_size"])
    n = (hi - lo) * (b - a)  # the last batch is kept whole
    shards = (hi - lo) * len(pieces(a, b, spec.get("shard_images", spec["batch_size"])))
    fp.images += n
    fp.files += shards
    fp.bytes += n * (image_bytes(spec) + META_BYTES) + shards * SHARD_OVERHEAD
    fp.node_gb = max(fp.node_gb, HOST_BASE_GB["gpu" if gpu else "cpu"] + generator_bytes(spec) / GB)


def generator_bytes(spec: dict) -> float:
    """Bytes of the weights a render holds: its parameters at the study's
    precision, imagen's T5 at its own where the study gives it one."""
    per = PRECISION_BYTES[spec.get("precision", "fp32")]
    total = generator_params(spec)
    text = spec.get("text_encoder_precision")
    if not text:
        return total * per
    refs = spec["weights"]
    first = refs if isinstance(refs, str) else refs[0]
    whole = _counted((first,))
    t5 = whole - _counted_without_text(first) if whole else T5_XXL_PARAMS
    return (total - t5) * per + t5 * PRECISION_BYTES[text]


@cache
def _counted_without_text(ref: str) -> int:
    from synscale.generators.weights import WeightsError, parameter_count, resolve
    try:
        return parameter_count(resolve(ref), skip=("text_encoder",))
    except (WeightsError, OSError):
        return 0


def generator_params(spec: dict) -> float:
    """Parameters a render loads: counted from the study's checkpoint files
    when they are here (safetensors headers only), else the table's figure."""
    if spec["generator"] == "embedded-ddpm":
        return GENERATOR_PARAMS["embedded-ddpm"]
    refs = spec["weights"]
    return _counted(tuple([refs] if isinstance(refs, str) else refs)) \
        or GENERATOR_PARAMS[spec["generator"]]


@cache
def _counted(refs: tuple[str, ...]) -> int:
    from synscale.generators.weights import WeightsError, parameter_count, resolve
    try:
        # a cascade's later stages reuse the first one's text embeddings
        # (generators/imagen.py loads them without their text encoder)
        return sum(parameter_count(resolve(r), skip=("text_encoder",) if i else ())
                   for i, r in enumerate(refs))
    except (WeightsError, OSError):
        return 0


def _pack(fp: KindFootprint, spec: dict, rows: int, source_side: int | None,
          workers: int) -> None:
    """`source_side`: the generated images' side (a pack does not upscale them);
    None for a real pack (its own images are measured where they are here)."""
    from synscale.plan import beton
    fp.images += rows
    fp.files += 1
    captions = bool(spec.get("captions"))
    if spec["data"]["dataset"] == "digits":
        fp.bytes += beton.file_bytes(rows, 4 * 64, "array", workers, captions)
    else:
        max_side = int(round(spec["resolution"] / 0.875))
        row = _real_row_bytes(spec, max_side) if source_side is None else None
        side = min(max_side, source_side or 10**9)
        row = row or beton.jpeg_row_bytes(side, BETON_BITS_PER_PIXEL)
        fp.bytes += beton.file_bytes(rows, row, "rgb", workers, captions)
    # each of the writer's workers holds one image's bytes and FFCV's buffers
    fp.node_gb = max(fp.node_gb, PACK_GB + rows * PACK_BYTES_PER_ROW / GB + workers * 0.06)


@dataclass(frozen=True)
class ModelSize:
    params: int
    layers: tuple  # (sequence length, width, heads, depth) of each transformer tower


def image_shape(study) -> tuple[int, int, int]:
    """(channels, height, width) of the images a study's models read."""
    if study.data.dataset == "digits":
        return (1, 8, 8)
    return (3, study.data.resolution, study.data.resolution)


def model_size(model: dict, num_classes: int, image_shape: tuple) -> ModelSize:
    """Parameters and transformer shapes of a train stage's model, built on
    torch's meta device (no weights allocated); once per distinct model and
    process (the dry-run's footprint and cost both ask)."""
    return _model_size(json.dumps(model, sort_keys=True), num_classes, tuple(image_shape))


@cache
def _model_size(model_json: str, num_classes: int, image_shape: tuple) -> ModelSize:
    import torch

    from synscale.study.specs import ModelSpec, parse
    model = parse(ModelSpec, json.loads(model_json), "model")
    with torch.device("meta"):
        if model.objective == "clip":
            from synscale.models.clip import build_clip
            m = build_clip(model, image_shape).clip
            towers = [_tower(getattr(m.visual, "trunk", m.visual)), _tower(m)]
        else:
            from synscale.models.vit import build_classifier
            m = build_classifier(model, num_classes, image_shape)
            towers = [_tower(m)]
    return ModelSize(sum(p.numel() for p in m.parameters()), tuple(t for t in towers if t))


def _tower(m) -> tuple | None:
    """(sequence length, width, heads, depth) of a timm ViT, an open_clip
    vision transformer or an open_clip text transformer."""
    if hasattr(m, "blocks") and hasattr(m, "patch_embed"):  # timm
        return (m.patch_embed.num_patches + 1, m.embed_dim, m.blocks[0].attn.num_heads,
                len(m.blocks))
    t = getattr(m, "transformer", None)
    if t is None or not hasattr(t, "resblocks"):
        return None
    heads = t.resblocks[0].attn.num_heads
    if hasattr(m, "grid_size"):  # open_clip's VisionTransformer
        return (m.grid_size[0] * m.grid_size[1] + 1, t.width, heads, t.layers)
    return (m.context_length, t.width, heads, t.layers)


def activation_bytes(size: ModelSize, micro: int, precision: str) -> float:
    """Activations one rank keeps for backward, per micro batch (no recomputation)."""
    per = sum(depth * s * micro * h * (34 + 5 * a * s / h) for s, h, a, depth in size.layers)
    return per * (1 if precision == "bf16" else 2)


def model_states(params: int, zero: int, ranks: int, precision: str) -> float:
    """Bytes of weights, gradients and Adam state on one rank (ZeRO's partitioning)."""
    w, g, o = (2, 2, 12) if precision == "bf16" else (4, 4, 8)
    if zero >= 1:
        o /= ranks
    if zero >= 2:
        g /= ranks
    if zero >= 3:
        w /= ranks
    return params * (w + g + o)


def checkpoint_bytes(params: int, precision: str) -> float:
    return params * (14 if precision == "bf16" else 16)


def rank_memory(size: ModelSize, zero: int, ranks: int, precision: str, micro: int,
                gpu: bool) -> tuple[float, float]:
    """(host bytes, GPU bytes) of one training rank."""
    states = model_states(size.params, zero, ranks, precision)
    acts = activation_bytes(size, micro, precision)
    if gpu:
        # host: the process, this rank's share of a checkpoint being written, and
        # the whole fp32 weights gathered at the end
        host = HOST_BASE_GB["gpu"] * GB + checkpoint_bytes(size.params, precision) / ranks \
            + 4 * size.params
        return host, states + acts
    # measured on the CPU: DeepSpeed's flat gradient buffers add ~8 bytes per parameter
    return HOST_BASE_GB["cpu"] * GB + states + acts + 8 * size.params, 0.0


def _train(fp: KindFootprint, spec: dict, size: ModelSize, resources, gpu: bool) -> None:
    recipe = spec["recipe"]
    ranks = resources.nodes * resources.tasks_per_node
    per_task = max(1, recipe["batch_size"] // ranks)
    micro = min(per_task, resources.micro_batch_size or recipe.get("micro_batch_size") or per_task)
    host, device = rank_memory(size, recipe["zero_stage"], ranks, recipe["precision"], micro, gpu)
    fp.bytes += 4 * size.params                # model.safetensors, fp32
    fp.transient_bytes = max(fp.transient_bytes, 2 * checkpoint_bytes(size.params,
                                                                      recipe["precision"]))
    fp.gpu_gb = max(fp.gpu_gb, device / GB)
    fp.node_gb = max(fp.node_gb, host * resources.tasks_per_node / GB)


def _evaluate(fp: KindFootprint, params: int, gpu: bool) -> None:
    fp.node_gb = max(fp.node_gb, HOST_BASE_GB["gpu" if gpu else "cpu"] + 4 * params / GB)


def devices(study, kind: str, backend: str) -> tuple[str, int]:
    """("gpu" or "cpu", how many) one stage of `kind` holds: GPUs where a Slurm
    study gives the kind some, CPUs otherwise (what hours and rates count)."""
    from synscale.study.schema import Resources
    res = study.resources.get(kind) or Resources()
    if backend == "slurm" and res.gpus > 0:
        return "gpu", res.gpus * res.nodes
    return "cpu", res.cpus * res.nodes


def estimate(study, plan, backend: str) -> dict[str, KindFootprint]:
    """Per stage kind, what the plan's stages occupy and need."""
    from synscale.study.schema import Resources

    def res(kind):
        return study.resources.get(kind) or Resources()

    def on_gpu(kind):
        return devices(study, kind, backend)[0] == "gpu"

    out: dict[str, KindFootprint] = defaultdict(KindFootprint)
    shape = image_shape(study)
    # the pack's writer processes: the job's CPUs, or this machine's (stages/pack.py)
    pack_workers = res("pack").cpus if backend == "slurm" else len(os.sched_getaffinity(0))
    gen = {s.id: s for s in plan.of_kind("generate")}
    trained: dict[str, int] = {}
    sized: tuple = (None, None)  # the previous training's model dict and its size (cost.py)
    for s in plan.stages:
        fp = out[s.kind]
        fp.stages += 1
        if s.kind == "generate":
            _generate(fp, s.spec, on_gpu("generate"))
        elif s.kind == "pack":
            inputs = [gen[i] for i in s.inputs if i in gen]
            _pack(fp, s.spec, pack_rows(study, s, inputs),
                  image_side(inputs[0].spec) if inputs else None, pack_workers)
        elif s.kind == "train":
            if s.spec["model"] is not sized[0]:
                sized = (s.spec["model"], model_size(s.spec["model"], s.spec["num_classes"],
                                                     shape))
            size = sized[1]
            _train(fp, s.spec, size, res("train"), on_gpu("train"))
            trained[s.id] = size.params
        elif s.kind == "evaluate":
            _evaluate(fp, trained.get(s.inputs[0], 0), on_gpu("evaluate"))
    if "generate" in out and not study.generate.keep_shards:
        # released once packed: nothing kept, but every shard may exist at once
        # (all generation can finish before the first pack)
        g = out["generate"]
        g.transient_bytes, g.bytes = g.bytes, 0.0
    return dict(out)


def pack_rows(study, stage, generated: list) -> int:
    """Rows a pack stage writes: its generate inputs' images, or the real pool's."""
    if generated:
        return sum((g.spec["classes"][1] - g.spec["classes"][0])
                   * (g.spec["indices"][1] - g.spec["indices"][0]) for g in generated)
    return _real_rows(study, stage.spec)


def _real_row_bytes(spec: dict, max_side: int) -> float | None:
    """A real pack's JPEG row, measured on its own images (plan/beton.py)."""
    from synscale.data.folders import class_key
    from synscale.plan.beton import sampled_row_bytes
    from synscale.prompts.classes import of_data
    from synscale.study.specs import DataSpec, parse
    data = parse(DataSpec, spec["data"])
    if not data.train_dir:
        return None
    return sampled_row_bytes(data.train_dir, tuple(class_key(c) for c in of_data(data)),
                             max_side)


def _real_rows(study, spec: dict) -> int:
    if spec["data"]["dataset"] == "digits":
        from synscale.data.digits import smallest_class_pool
        return 10 * smallest_class_pool(spec["data"]["test_per_class"])
    from synscale.prompts.classes import of_data
    from synscale.study.specs import DataSpec, parse
    return len(of_data(parse(DataSpec, spec["data"]))) * spec["per_class"]


def peak_scratch_bytes(kinds: dict[str, KindFootprint], study) -> float:
    """Everything finished stages keep, plus the checkpoints of the trainings
    that may run at once, plus released shards (they may all exist at once)."""
    from synscale.study.schema import Resources
    kept = sum(k.bytes for k in kinds.values())
    if "generate" in kinds:
        kept += kinds["generate"].transient_bytes  # released shards (keep_shards = false)
    train = kinds.get("train")
    if not train:
        return kept
    at_once = min(train.stages, (study.resources.get("train") or Resources()).max_parallel)
    return kept + at_once * train.transient_bytes


def memory_warnings(kinds: dict[str, KindFootprint], study, backend: str) -> list[str]:
    """Requests below the estimate, on Slurm (the local backend asks for none)."""
    from synscale.study.schema import Resources
    if backend != "slurm":
        return []
    out = []
    for kind, fp in kinds.items():
        asked = (study.resources.get(kind) or Resources()).mem_gb
        if fp.node_gb > asked:
            out.append(f"[resources.{kind}] mem_gb = {asked:g} is below the estimated "
                       f"{fp.node_gb:.1f} GB per node one {kind} stage needs (by "
                       f"{fp.node_gb - asked:.1f} GB)")
    return out


def as_json(kinds: dict[str, KindFootprint], study, backend: str) -> dict:
    return {"kinds": {k: {"stages": f.stages, "images": f.images, "bytes": round(f.bytes),
                          "transient_bytes": round(f.transient_bytes), "files": f.files,
                          "memory_per_node_gb": round(f.node_gb, 2),
                          **({"gpu_memory_gb": round(f.gpu_gb, 2)} if f.gpu_gb else {})}
                      for k, f in kinds.items()},
            "total_bytes": round(sum(f.bytes for f in kinds.values())),
            "peak_scratch_bytes": round(peak_scratch_bytes(kinds, study)),
            "memory_warnings": memory_warnings(kinds, study, backend)}

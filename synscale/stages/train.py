"""Train: a timm ViT classifier or a CLIP model (models/objectives.py) on a
per-class prefix of one pack, or of two packs at a fixed share (a mixture),
through DeepSpeed (a torch AdamW handed to deepspeed.initialize), on the
device runtime/device.py chooses from [train] device (NCCL on GPUs, gloo on
the CPU).

How many steps a data size gets is a rule of the study (epochs over the
subset, clamped to [min_steps, max_steps]); the rule and its outcome land in
the manifest, because a scaling curve means nothing without them.
"""
from __future__ import annotations

import math
import resource
import shutil
import time

from synscale.plan import state
from synscale.runtime import checkpoint, preemption
from synscale.runtime.curves import TrainingCurves
from synscale.study.schema import TrainSection, split_counts
from synscale.study.specs import TrainSpec, wire

VERSION = "2"  # 2: a CLIP caption drawn by its image (class, index), not its pack row


def step_count(recipe: TrainSection, images: int) -> int:
    raw = math.ceil(recipe.epochs * images / recipe.batch_size)
    return int(min(max(raw, recipe.min_steps), recipe.max_steps))


def lr_factor(step: int, total: int, warmup_fraction: float) -> float:
    """Linear warmup, then cosine decay to zero."""
    warmup = max(1, int(total * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _parts(ctx, micro: int) -> tuple[list, dict, list[dict]]:
    """The packs this training reads as stream parts, the first pack's
    index, and what each part holds. Inputs are packs, each optionally
    followed by the curate stage that filters it; spec.shares (one per
    pack, default [1]) splits every set and every micro batch among them."""
    from synscale.data.ffcv_io import prefix_indices
    from synscale.data.stream import Part
    from synscale.stages.curate import load_mask

    spec: TrainSpec = ctx.spec
    packs: list[list] = []  # [folder, index, mask or None, pack id]
    for i in ctx.stage.inputs:
        if ctx.input_kinds[i] == "curate":
            packs[-1][2] = load_mask(ctx.inputs[i])
        else:
            packs.append([ctx.inputs[i], state.read_json(ctx.inputs[i] / "index.json"), None, i])
    shares = spec.shares or (1.0,)
    per_micro = [micro * s for s in shares]
    if any(abs(m - round(m)) > 1e-9 for m in per_micro):
        raise ValueError(f"shares {shares}: a micro batch of {micro} images cannot hold them in "
                         "whole images; choose train.batch_size (or micro_batch_size) so that "
                         "every share * micro batch is whole")
    parts, info = [], []
    counts = split_counts(spec.images_per_class, list(shares))
    for (folder, index, mask, pack_id), share, n, m in zip(packs, shares, counts, per_micro):
        if not n:
            continue
        rows = prefix_indices(index, n)
        if mask is not None:
            rows = rows[mask[rows]]
            if rows.size == 0:
                raise ValueError(f"the curation rule keeps none of the first {n} images per "
                                 f"class of pack {pack_id}; nothing to train on")
        parts.append(Part(folder, rows, int(round(m))))
        info.append({"pack": pack_id, "share": share,
                     "images_per_class": n, "images": int(rows.size),
                     "kept_share": float(rows.size / (n * len(index["class_counts"]))),
                     "micro_batch": int(round(m))})
    return parts, packs[0][1], info


def run(ctx) -> dict:
    import torch
    from safetensors.torch import save_file

    from synscale.data.stream import Stream
    from synscale.models.objectives import objective_for, prepare_model
    from synscale.runtime.distributed import ensure_initialized

    spec: TrainSpec = ctx.spec
    recipe = spec.recipe
    # the device first: it sets DeepSpeed's accelerator, read once at its import
    world = ensure_initialized(recipe.device)
    import deepspeed
    if recipe.batch_size % world["world_size"]:
        raise ValueError(f"train.batch_size = {recipe.batch_size} cannot be split evenly over "
                         f"{world['world_size']} tasks; use a multiple of {world['world_size']}")
    per_task = recipe.batch_size // world["world_size"]
    micro = min(per_task, recipe.micro_batch_size or per_task)
    if per_task % micro:
        raise ValueError(f"train.micro_batch_size = {micro} must divide the {per_task} images "
                         f"each of {world['world_size']} tasks computes per step")
    accumulate = per_task // micro  # the global batch stays batch_size whatever the tasks
    parts, index, part_info = _parts(ctx, micro)
    set_size = sum(len(p.rows) for p in parts)
    steps = step_count(recipe, set_size)
    torch.manual_seed(spec.seed)
    objective = objective_for(spec, index["shape"], world, index)
    # what the model costs, for compute-optimal analyses: before DeepSpeed wraps it
    size = {"parameters": sum(p.numel() for p in objective.model.parameters()),
            "forward_flops_per_sample": objective.sample_flops(index["shape"])}
    prepare_model(objective.model, recipe)  # channels_last, compile
    optimizer = torch.optim.AdamW(objective.model.parameters(), lr=recipe.lr,
                                  weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, recipe.warmup_fraction))
    config = {"train_batch_size": recipe.batch_size,
              "train_micro_batch_size_per_gpu": micro,
              "gradient_accumulation_steps": accumulate, "gradient_clipping": 1.0,
              "zero_optimization": {"stage": recipe.zero_stage},
              "bf16": {"enabled": recipe.precision == "bf16"},
              "steps_per_print": 10**9}
    engine, _, _, _ = deepspeed.initialize(model=objective.model, optimizer=optimizer,
                                           lr_scheduler=schedule, config=config)
    stream = Stream(parts, seed=spec.seed, workers=recipe.loader_workers,
                    distributed=world["world_size"] > 1, normalize=objective.normalize,
                    captions=objective.captions)
    progress = {"step": 0, "curve": [], "resumed_at": []}
    checkpoints = ctx.dir / "checkpoints"  # runtime/checkpoint.py: DeepSpeed's, every rank
    restored = checkpoint.load(checkpoints, engine)
    if restored is not None:
        progress = restored
        progress["resumed_at"].append(progress["step"])
        ctx.log.info("resumed at step %d", progress["step"])

    resumed_from, saved_at = progress["step"], [progress["step"] if restored else None]
    curves = TrainingCurves(ctx.dir, world["rank"], progress["step"], recipe.batch_size)

    def save() -> bool:
        """Collective: every rank calls it at the same step boundary."""
        if saved_at[0] != progress["step"]:
            began = time.time()
            where = checkpoint.save(checkpoints, engine, progress["step"], progress)
            saved_at[0] = progress["step"]
            curves.flush()  # the points a resume from here keeps are on disk
            if world["rank"] == 0:  # every rank's part is there once save returns
                size = sum(f.stat().st_size for f in where.iterdir())
                ctx.log.info("checkpoint at step %d: %.3f GB in %.1f s", progress["step"],
                             size / 1e9, time.time() - began)
        return progress["step"] > resumed_from  # a requeue from here makes progress

    # Each epoch's order comes from (seed, epoch): the stream restarts at the
    # micro batch after the last whole optimizer step the checkpoint holds
    # (a half-accumulated step is redone), so the data order is exact.
    # USR2 is only recorded during the loop (runtime/preemption.py): at each
    # step boundary the ranks agree whether any got it, save together, and
    # then let submitit requeue the job from rank 0.
    engine.train()
    pieces = []
    with preemption.hold(save):
        # from here on USR2 is held for a collective save at a step boundary
        ctx.log.info("training from step %d of %d (resident memory %.2f GB)", progress["step"],
                     steps, _rss_gb())
        loop_began, loop_from = time.time(), progress["step"]  # the rate a pilot measures
        for images, labels, captions in stream.batches(progress["step"] * accumulate):
            if progress["step"] >= steps:
                break
            micro_step = progress["step"] * accumulate + len(pieces)
            loss = objective.loss(engine, images, labels, captions, micro_step)
            engine.backward(loss)
            engine.step()
            pieces.append(loss.item())
            if len(pieces) < accumulate:
                continue
            objective.after_step(engine)
            loss, pieces = sum(pieces) / accumulate, []
            progress["step"] += 1
            step = progress["step"]
            if step % recipe.log_every == 0 or step == steps:
                progress["curve"].append([step, round(loss, 5)])
                curves.point(step, loss, schedule.get_last_lr()[0])
                ctx.log.info("step %d/%d loss %.4f", step, steps, loss)
            if step % recipe.checkpoint_every == 0 and step < steps:
                save()
            if _any_rank(preemption.pending(), world, engine.device):
                ctx.log.info("preempted at step %d: saving on every rank", step)
                preemption.act(save(), leave=world["rank"] != 0)
    curves.close()
    curve = progress["curve"]
    # steps per second of this attempt's loop (start-up and the final save left out)
    loop = {"loop_steps": progress["step"] - loop_from,
            "loop_seconds": round(time.time() - loop_began, 3)}

    # Where each rank ran, for the manifest (and for checking multi-node runs).
    ranks = [None] * world["world_size"]
    torch.distributed.all_gather_object(ranks, {"rank": world["rank"], "node": world["node"],
                                                "host": world["host"],
                                                "peak_rss_gb": round(_peak_rss_gb(), 3)})
    weights = checkpoint.full_state_dict(engine)  # every rank: ZeRO-3 gathers the partitions
    if world["rank"] != 0:
        return {}  # rank 0 holds the whole model now, and writes it
    with state.atomic_path(ctx.dir / "model.safetensors") as tmp:
        save_file(weights, str(tmp))
    manifest = {"model": wire(spec.model),  # as planned: evaluate reads it back
                "objective": spec.model.objective or "classifier",
                "num_classes": spec.num_classes,
                "image_shape": index["shape"], "images_per_class": spec.images_per_class,
                "images": int(set_size), "steps": steps,
                "epochs_seen": round(steps * recipe.batch_size / set_size, 3),
                "images_seen": steps * recipe.batch_size,
                "step_rule": f"clamp(ceil({recipe.epochs} * images / {recipe.batch_size}), "
                             f"{recipe.min_steps}, {recipe.max_steps})",
                "final_train_loss": curve[-1][1], "loss_curve": curve, **size,
                # forward + backward (2x forward) over every image seen
                "train_flops": 3 * size["forward_flops_per_sample"] * steps * recipe.batch_size,
                "world_size": world["world_size"], "device": world["device"],
                "micro_batch_size": micro, "zero_stage": recipe.zero_stage,
                "precision": recipe.precision,
                "gradient_accumulation_steps": accumulate,
                "master_addr": world["master_addr"], "ranks": ranks,
                "resumed_at_steps": progress["resumed_at"]}
    manifest.update(_portable(spec, index))
    if len(part_info) > 1 or any(p["kept_share"] < 1 for p in part_info):
        manifest["parts"] = part_info  # mixtures, blends, curated sets: what each pack gave
    state.write_json(ctx.dir / "manifest.json", manifest)
    shutil.rmtree(checkpoints, ignore_errors=True)  # the weights above supersede them
    return {"steps": steps, "final_train_loss": curve[-1][1], **loop,
            "samples_per_step": recipe.batch_size, "world_size": world["world_size"]}


def _portable(spec, index: dict) -> dict:
    """How to rebuild the model with its own library (models/portable.py)."""
    from synscale.models import portable
    built = portable.clip(spec.model, index["shape"]) if spec.model.objective == "clip" else \
        portable.classifier(spec.model, spec.num_classes, index["shape"])
    return {("open_clip" if spec.model.objective == "clip" else "timm"): built,
            "class_names": index.get("class_names"), **portable.preprocessing(index)}


def _any_rank(flag: bool, world: dict, device) -> bool:
    """Whether `flag` holds on any rank (collective: every rank, every step;
    one tiny all_reduce)."""
    if world["world_size"] == 1:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=device)  # NCCL reduces device tensors only
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _peak_rss_gb() -> float:
    """This process's peak resident memory so far (Linux reports kB); a
    local worker that ran other stages first reports their peak if higher."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _rss_gb() -> float:
    """This process's resident memory now."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9

"""Train: a timm ViT classifier on a per-class prefix of one pack, through
DeepSpeed (a torch AdamW handed to deepspeed.initialize, gloo on the CPU).

How many steps a data size gets is a rule of the study (epochs over the
subset, clamped to [min_steps, max_steps]); the rule and its outcome land in
the manifest, because a scaling curve means nothing without them.
"""
from __future__ import annotations

import math

from synscale.backends import preemption
from synscale.plan import state

VERSION = "1"


def step_count(recipe: dict, images: int) -> int:
    raw = math.ceil(recipe["epochs"] * images / recipe["batch_size"])
    return int(min(max(raw, recipe["min_steps"]), recipe["max_steps"]))


def lr_factor(step: int, total: int, warmup_fraction: float) -> float:
    """Linear warmup, then cosine decay to zero."""
    warmup = max(1, int(total * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def run(ctx) -> dict:
    import deepspeed
    import torch
    from safetensors.torch import save_file

    from synscale.backends.distributed import ensure_initialized
    from synscale.data.augment import BatchAugment
    from synscale.data.ffcv_io import loader, prefix_indices
    from synscale.models.vit import build_classifier

    spec, recipe = ctx.spec, ctx.spec["recipe"]
    (pack_dir,) = ctx.inputs.values()
    index = state.read_json(pack_dir / "index.json")
    rows = prefix_indices(index, spec["images_per_class"])
    steps = step_count(recipe, len(rows))

    world = ensure_initialized()
    if recipe["batch_size"] % world["world_size"]:
        raise ValueError(f"train.batch_size = {recipe['batch_size']} cannot be split evenly over "
                         f"{world['world_size']} tasks; use a multiple of {world['world_size']}")
    per_task = recipe["batch_size"] // world["world_size"]
    micro = min(per_task, recipe.get("micro_batch_size") or per_task)
    if per_task % micro:
        raise ValueError(f"train.micro_batch_size = {micro} must divide the {per_task} images "
                         f"each of {world['world_size']} tasks computes per step")
    accumulate = per_task // micro  # the global batch stays batch_size whatever the tasks
    torch.manual_seed(spec["seed"])
    model = build_classifier(spec["model"], spec["num_classes"], tuple(index["shape"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"],
                                  weight_decay=recipe["weight_decay"])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, recipe["warmup_fraction"]))
    config = {"train_batch_size": recipe["batch_size"],
              "train_micro_batch_size_per_gpu": micro,
              "gradient_accumulation_steps": accumulate, "gradient_clipping": 1.0,
              "zero_optimization": {"stage": recipe["zero_stage"]},
              "bf16": {"enabled": recipe["precision"] == "bf16"},
              "steps_per_print": 10**9}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                           lr_scheduler=schedule, config=config)
    augment = BatchAugment(recipe, spec["num_classes"], spec["seed"] * 1000 + world["rank"])
    if augment.randaugment and index.get("kind") != "rgb":
        raise ValueError("train.randaugment works on image folders' RGB images, not the digits")
    data = loader(pack_dir, rows, micro, seed=spec["seed"], workers=recipe["loader_workers"],
                  distributed=world["world_size"] > 1, normalize=not augment.randaugment)
    if augment.soft_targets:  # mixup's targets already carry the label smoothing
        from timm.loss import SoftTargetCrossEntropy
        criterion = SoftTargetCrossEntropy()
    else:
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])
    progress = {"step": 0, "curve": [], "resumed_at": []}
    checkpoint = ctx.dir / "checkpoint.pt"
    if checkpoint.exists():
        progress = _restore(checkpoint, engine, optimizer, schedule)
        progress["resumed_at"].append(progress["step"])
        ctx.log.info("resumed at step %d", progress["step"])

    def save() -> None:
        if world["rank"] == 0:
            _save(checkpoint, engine, optimizer, schedule, progress)

    preemption.register(save)
    per_epoch = len(data)  # micro batches
    # The epoch's order comes from (seed, epoch): resume at the same epoch and
    # skip the micro batches already trained on, so the data order is exact.
    # A checkpoint holds whole optimizer steps: a half-accumulated step is redone.
    done_micro = progress["step"] * accumulate
    data.next_epoch = done_micro // per_epoch
    skip = done_micro % per_epoch
    engine.train()
    pieces = []
    while progress["step"] < steps:
        for images, labels in data:
            if skip:
                skip -= 1
                continue
            if progress["step"] >= steps:
                break
            with preemption.deferred():
                micro_step = progress["step"] * accumulate + len(pieces)
                images, labels = augment(images, labels, micro_step)
                pieces.append(_train_step(engine, criterion, images, labels,
                                          recipe["precision"]))
                if len(pieces) < accumulate:
                    continue
                loss, pieces = sum(pieces) / accumulate, []
                progress["step"] += 1
                step = progress["step"]
                if step % recipe["log_every"] == 0 or step == steps:
                    progress["curve"].append([step, round(loss, 5)])
                    ctx.log.info("step %d/%d loss %.4f", step, steps, loss)
            if step % recipe["checkpoint_every"] == 0 and step < steps:
                save()
    preemption.register(None)
    curve, epochs = progress["curve"], -(-steps * accumulate // per_epoch)

    # Where each rank ran, for the manifest (and for checking multi-node runs).
    ranks = [None] * world["world_size"]
    torch.distributed.all_gather_object(ranks, {"rank": world["rank"], "node": world["node"],
                                                "host": world["host"]})
    if world["rank"] != 0:
        return {}  # rank 0 holds the same weights after every step, and writes them
    weights = {k: v.detach().float().contiguous() for k, v in engine.module.state_dict().items()}
    with state.atomic_path(ctx.dir / "model.safetensors") as tmp:
        save_file(weights, str(tmp))
    manifest = {"model": spec["model"], "num_classes": spec["num_classes"],
                "image_shape": index["shape"], "images_per_class": spec["images_per_class"],
                "images": int(len(rows)), "steps": steps, "epochs_seen": epochs,
                "images_seen": steps * recipe["batch_size"],
                "step_rule": f"clamp(ceil({recipe['epochs']} * images / {recipe['batch_size']}), "
                             f"{recipe['min_steps']}, {recipe['max_steps']})",
                "final_train_loss": curve[-1][1], "loss_curve": curve,
                "world_size": world["world_size"], "micro_batch_size": micro,
                "gradient_accumulation_steps": accumulate,
                "master_addr": world["master_addr"], "ranks": ranks,
                "resumed_at_steps": progress["resumed_at"]}
    state.write_json(ctx.dir / "manifest.json", manifest)
    checkpoint.unlink(missing_ok=True)  # the weights above supersede it
    return {"steps": steps, "final_train_loss": curve[-1][1]}


def _train_step(engine, criterion, images, labels, precision: str) -> float:
    import torch

    images = images.to(engine.device)
    if precision == "bf16":
        images = images.to(torch.bfloat16)
    loss = criterion(engine(images).float(), labels.to(engine.device))
    engine.backward(loss)
    engine.step()
    return loss.item()


def _save(path, engine, optimizer, schedule, progress: dict) -> None:
    """Everything a resume needs to continue exactly, written atomically."""
    import torch

    blob = {"model": engine.module.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "rng": torch.get_rng_state(),
            "progress": progress}
    with state.atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _restore(path, engine, optimizer, schedule) -> dict:
    import torch

    blob = torch.load(path, weights_only=False)
    engine.module.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    schedule.load_state_dict(blob["schedule"])
    torch.set_rng_state(blob["rng"])
    return blob["progress"]

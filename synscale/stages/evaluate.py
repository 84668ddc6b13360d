"""Evaluate: a trained classifier, or a CLIP model zero-shot, on a real
evaluation set.

Its own stage, so adding an evaluation set never retrains. Writes
metrics.json in one schema for every (train stage, eval set), which the
analysis reads: loss (cross-entropy, no smoothing), top-1, top-5, per-class
top-1 and loss (None for classes the set lacks), the classes scored (ImageNet-R and
-A: their 200, the logits masked to them) and the training size behind it.
A CLIP model's logits are its scaled cosine similarities to each class's
text embedding, averaged over a template set (7 or 80 CLIP templates),
computed once per stage.

It runs on spec.device (runtime/device.py: a GPU when torch sees one,
under auto), and a model trained in bf16 is scored under bf16 autocast.
"""
from __future__ import annotations

from synscale.plan import state
from synscale.runtime import curves
from synscale.study.specs import EvaluateSpec, ModelSpec, parse

VERSION = "4"  # 2: top-5, image-folder sets, class masks; 3: per-class loss; 4: bf16 autocast


def _batches(spec: EvaluateSpec, image_shape, pin: bool = False):
    """(images, labels, files left out) batches of the evaluation set, and
    its class mask."""
    import torch

    name = spec.eval_set
    if name == "digits-test":
        from synscale.data.evalsets import load_eval_set
        x, y = load_eval_set(name, spec.data)
        step = spec.batch_size
        return ((torch.from_numpy(x[lo:lo + step]), torch.from_numpy(y[lo:lo + step]), 0)
                for lo in range(0, len(x), step)), None
    from synscale.data.evalsets import ImageFolderSet, class_mask, collate
    from synscale.prompts.classes import of_data
    classes = of_data(spec.data)
    dataset = ImageFolderSet(spec.dir, classes, size=image_shape[1],
                             skip_bad=spec.bad_images == "skip")
    loader = torch.utils.data.DataLoader(dataset, batch_size=spec.batch_size, collate_fn=collate,
                                         num_workers=spec.workers, pin_memory=pin)
    return loader, class_mask(name, classes, spec.mask)


def _scorer(spec: EvaluateSpec, trained: dict, train_dir, device):
    """images (on `device`) -> logits over the class list."""
    from safetensors.torch import load_file

    # the training's manifest holds its model spec as planned
    model_spec = parse(ModelSpec, trained["model"], f"{train_dir}/manifest.json model")
    if trained.get("objective") != "clip":
        from synscale.models.vit import build_classifier
        model = build_classifier(model_spec, trained["num_classes"],
                                 tuple(trained["image_shape"]))
        model.load_state_dict(load_file(str(train_dir / "model.safetensors")))
        return model.to(device).eval()
    from synscale.models.clip import build_clip, tokenizer, zero_shot_weights
    from synscale.prompts.classes import of_data
    from synscale.prompts.strategies import templates

    model = build_clip(model_spec, trained["image_shape"])
    model.load_state_dict(load_file(str(train_dir / "model.safetensors")))
    model.to(device).eval()
    count = int(spec.zero_shot_templates.rsplit("-", 1)[1])  # clip-templates-80 -> 80
    classifier = zero_shot_weights(model, of_data(spec.data), templates(count),
                                   tokenizer(model_spec.context_length))
    scale = model.logit_scale.exp().item()
    return lambda x: scale * model.encode_image(x).float() @ classifier.T


def run(ctx) -> dict:
    import torch

    from synscale.runtime.device import select, to_device

    spec: EvaluateSpec = ctx.spec
    (train_dir,) = ctx.inputs.values()
    trained = state.read_json(train_dir / "manifest.json")
    device = torch.device(select(spec.device).device)
    bf16 = spec.precision == "bf16"
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        score = _scorer(spec, trained, train_dir, device)  # CLIP: its text features, here
        batches, mask = _batches(spec, trained["image_shape"], pin=device.type == "cuda")
        logits, labels, left_out = [], [], 0
        with torch.inference_mode():
            for x, y, gone in batches:
                left_out += gone
                if len(y):
                    logits.append(score(to_device(x, device)).float())
                    labels.append(y)
    logits, labels = torch.cat(logits).cpu(), torch.cat(labels).long()
    if mask is not None:
        logits[:, ~torch.from_numpy(mask)] = float("-inf")
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    scored = int(mask.sum()) if mask is not None else trained["num_classes"]
    top = logits.topk(min(5, scored), dim=1).indices
    y = labels.numpy()
    pred = top[:, 0].numpy()
    per_class = [float((pred[y == c] == c).mean()) if (y == c).any() else None
                 for c in range(trained["num_classes"])]
    losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none").numpy()
    per_class_loss = [float(losses[y == c].mean()) if (y == c).any() else None
                      for c in range(trained["num_classes"])]
    metrics = {"eval_set": spec.eval_set, "n": int(len(y)), "loss": loss,
               "top1": float((pred == y).mean()),
               "top5": float((top == labels[:, None]).any(1).float().mean()),
               "per_class_top1": per_class, "per_class_loss": per_class_loss,
               "classes_scored": scored,
               # classes with images in the set: fewer than scored only with [evaluate] partial
               "classes_present": int(len(set(y.tolist()))),
               "images_per_class": trained["images_per_class"], "images": trained["images"],
               "steps": trained["steps"]}
    if spec.zero_shot_templates:
        metrics["zero_shot_templates"] = spec.zero_shot_templates
    if spec.bad_images == "skip":
        metrics["images_left_out"] = left_out  # undecodable files of the set
    name = spec.eval_set + (f"/{spec.zero_shot_templates}" if spec.zero_shot_templates else "")
    curves.evaluation(ctx.dir, name, metrics, trained["steps"])  # beside its training's curve
    state.write_json(ctx.dir / "metrics.json", metrics)
    return {"loss": loss, "top1": metrics["top1"], "images": metrics["n"]}

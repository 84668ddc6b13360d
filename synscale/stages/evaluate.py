"""Evaluate: a trained classifier on a real evaluation set.

Its own stage, so adding an evaluation set never retrains. Writes
metrics.json: loss (cross-entropy, no smoothing), top-1 and per-class
accuracy, in one schema per (train stage, eval set) that the analysis reads.
"""
from __future__ import annotations

from synscale.plan import state

VERSION = "1"


def run(ctx) -> dict:
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from synscale.data.evalsets import load_eval_set
    from synscale.models.vit import build_classifier

    spec = ctx.spec
    (train_dir,) = ctx.inputs.values()
    trained = state.read_json(train_dir / "manifest.json")
    model = build_classifier(trained["model"], trained["num_classes"],
                             tuple(trained["image_shape"]))
    model.load_state_dict(load_file(str(train_dir / "model.safetensors")))
    model.eval()
    x, y = load_eval_set(spec["eval_set"], spec["data"])
    logits = []
    with torch.inference_mode():
        for lo in range(0, len(x), spec["batch_size"]):
            logits.append(model(torch.from_numpy(x[lo:lo + spec["batch_size"]])).float())
    logits = torch.cat(logits)
    labels = torch.from_numpy(y)
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    pred = logits.argmax(1).numpy()
    classes = np.arange(trained["num_classes"])
    per_class = [float((pred[y == c] == c).mean()) if (y == c).any() else None for c in classes]
    metrics = {"eval_set": spec["eval_set"], "n": int(len(y)), "loss": loss,
               "top1": float((pred == y).mean()), "per_class_top1": per_class,
               "images_per_class": trained["images_per_class"], "images": trained["images"],
               "steps": trained["steps"]}
    state.write_json(ctx.dir / "metrics.json", metrics)
    return {"loss": loss, "top1": metrics["top1"]}

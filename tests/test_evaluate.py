"""The evaluate stage on image folders: ImageNet-style class folders named by
wnid or by index, and ImageNet-R/-A's 200-class logit mask."""
import pytest
import torch
from safetensors.torch import save_file

from conftest import class_folders
from synscale.plan import state
from synscale.plan.graph import Stage
from synscale.prompts.classes import DATA, imagenet1k
from synscale.runtime.harness import execute
from synscale.study.specs import ModelSpec

MODEL = {"arch": "vit", "width": 32, "depth": 1, "heads": 2, "patch_size": 8, "mlp_ratio": 2.0}
KEYS = {"eval_set", "n", "loss", "top1", "top5", "per_class_top1", "per_class_loss",
        "classes_scored", "classes_present", "images_per_class", "images", "steps"}


def trained_stage(run, favourite: int):
    """A train stage's outputs for a 1000-way ViT that strongly prefers one class."""
    from synscale.models.vit import build_classifier
    folder = run / "stages/train/t"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    model = build_classifier(ModelSpec(**MODEL), 1000, (3, 32, 32))
    with torch.no_grad():
        model.head.bias[favourite] = 100.0
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    state.write_json(folder / "manifest.json", {
        "model": MODEL, "num_classes": 1000, "image_shape": [3, 32, 32], "images_per_class": 4,
        "images": 4000, "steps": 10})
    state.mark_done(folder, {})


def evaluate(run, eval_set, folder):
    spec = {"eval_set": eval_set, "batch_size": 4, "dir": str(folder), "workers": 0,
            "device": "auto", "precision": "fp32",
            "data": {"dataset": "imagefolder", "train_dir": "", "val_dir": "",
                     "classes": "imagenet-1k"}}
    stage = Stage(eval_set, "evaluate", spec, ("t",))
    execute(str(run), stage, {"t": "train"})
    return state.read_json(run / "stages/evaluate" / eval_set / "metrics.json")


def test_imagenet_r_logits_are_masked_to_its_200_classes(tmp_path):
    trained_stage(tmp_path, favourite=0)  # tench is not one of ImageNet-R's classes
    r_wnids = (DATA / "imagenet_r_wnids.txt").read_text().split()
    assert len(r_wnids) == 200 and "n01440764" not in r_wnids
    r = evaluate(tmp_path, "imagenet-r", class_folders(tmp_path / "r", r_wnids[:3], 2))
    v2 = evaluate(tmp_path, "imagenet-v2", class_folders(tmp_path / "v2", ["1", "2", "3"], 2))
    assert set(r) == set(v2) == KEYS
    assert r["classes_scored"] == 200 and v2["classes_scored"] == 1000
    assert r["classes_present"] == v2["classes_present"] == 3  # partial sets say so
    assert r["n"] == v2["n"] == 6
    # unmasked, the favourite class wins every image by a margin of ~100 nats
    assert v2["top1"] == 0.0 and v2["loss"] > 50
    # masked, it cannot be chosen: the loss is that of an ordinary random head
    assert r["loss"] < 20 and 0.0 <= r["top1"] <= r["top5"] <= 1.0
    index = {c.wnid: c.index for c in imagenet1k()}
    scored = [i for i, v in enumerate(r["per_class_top1"]) if v is not None]
    assert scored == sorted(index[w] for w in r_wnids[:3])
    # per-class losses exist where the set has images; with 2 images a class they average to the loss
    losses = [(v, r["per_class_top1"][i]) for i, v in enumerate(r["per_class_loss"])]
    assert [i for i, (v, _) in enumerate(losses) if v is not None] == scored
    assert sum(v for v, _ in losses if v is not None) / len(scored) == pytest.approx(r["loss"])
    assert [i for i, v in enumerate(v2["per_class_top1"]) if v is not None] == [1, 2, 3]


def test_an_undecodable_file_in_an_evaluation_folder_fails_naming_it_or_is_left_out(tmp_path):
    trained_stage(tmp_path, favourite=0)
    folder = class_folders(tmp_path / "v2", ["1", "2"], 2)
    (folder / "2" / "zz.JPEG").write_text("not an image")
    with pytest.raises(Exception, match="zz.JPEG: not a readable image"):
        evaluate(tmp_path, "imagenet-v2", folder)
    skip = {"eval_set": "imagenet-v2", "batch_size": 4, "dir": str(folder), "workers": 0,
            "device": "auto", "precision": "fp32", "bad_images": "skip",
            "data": {"dataset": "imagefolder", "train_dir": "", "val_dir": "",
                     "classes": "imagenet-1k"}}
    execute(str(tmp_path), Stage("skip", "evaluate", skip, ("t",)), {"t": "train"})
    m = state.read_json(tmp_path / "stages/evaluate/skip/metrics.json")
    assert m["images_left_out"] == 1 and m["n"] == 4 and m["classes_present"] == 2

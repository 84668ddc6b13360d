"""A study on image folders end to end on the CPU: real class folders and a
tiny Stable Diffusion, packed as JPEG rows, trained, evaluated in-domain and
on an ImageNet-V2-style folder, and fitted."""
import json
import os

import pytest

import tiny_pipelines as tiny
from conftest import class_folders, run_module
from synscale.plan import state

pytestmark = pytest.mark.slow
WNIDS = ("n01440764", "n01443537", "n01484850")  # tench, goldfish, great white shark


STUDY = """
[study]
name = "folders"
[data]
dataset = "imagefolder"
train_dir = "{root}/train"
val_dir = "{root}/val"
classes = "{root}/classes.txt"
resolution = 32
[sweep]
real_images_per_class = [2, 3, 4]
synthetic_images_per_class = [2, 3, 4]
[generate]
generators = ["stable-diffusion"]
weights = {{ stable-diffusion = "{sd}" }}
prompts = ["clip-templates-7"]
guidance = [1.0]
steps = 2
batch_size = 4
device = "cpu"
[model]
width = [32]
depth = 1
heads = 2
patch_size = 8
[train]
batch_size = 6
min_steps = 10
max_steps = 10
# DeiT's augmentations, so that their path runs too (9 images: an odd last batch)
mixup = 0.8
cutmix = 1.0
randaugment = 9
[evaluate]
sets = ["imagenet-val", "imagenet-v2"]
batch_size = 8
workers = 0
[evaluate.dirs]
imagenet-v2 = "{root}/v2"
[backend]
workers = 1
"""


def test_image_folder_study_runs_end_to_end(tmp_path):
    class_folders(tmp_path / "train", WNIDS, 5)
    class_folders(tmp_path / "val", WNIDS, 3, seed=1)
    class_folders(tmp_path / "v2", ("0", "1", "2"), 2, seed=2)
    (tmp_path / "classes.txt").write_text("\n".join(WNIDS) + "\n")
    sd = tiny.stable_diffusion(tmp_path / "sd")
    study = tmp_path / "folders.toml"
    study.write_text(STUDY.format(root=tmp_path, sd=sd))
    umask = os.umask(0o022)  # the usual one, whatever the suite was started with
    try:
        r = run_module("synscale.launch", study, "--root", tmp_path / "runs", "--json")
    finally:
        os.umask(umask)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    # readable by the group: every file has the umask's mode, none the owner's alone
    # (safetensors writes its files 0600)
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name == "model.safetensors" for p in files)
    assert [p for p in files if p.stat().st_mode & 0o044 != 0o044] == []
    assert out["stages"] == {"generate": 1, "pack": 2, "train": 6, "evaluate": 12}
    run = tmp_path / "runs/folders"
    real_pack = next(p for p in run.glob("stages/pack/*/index.json")
                     if state.read_json(p)["rows"] == 12)  # 4 per class, the largest size
    index = state.read_json(real_pack)
    assert index["kind"] == "rgb" and index["shape"] == [3, 32, 32]
    assert index["class_counts"] == [4, 4, 4]
    metrics = [state.read_json(p) for p in run.glob("stages/evaluate/*/metrics.json")]
    assert {m["eval_set"] for m in metrics} == {"imagenet-val", "imagenet-v2"}
    assert all(m["classes_scored"] == 3 and 0 <= m["top1"] <= m["top5"] <= 1 for m in metrics)
    assert {m["n"] for m in metrics} == {9, 6}
    assert (run / "results/metrics.csv").exists()
    _every_training_is_a_tensorboard_run(run)
    _rebuilt_with_timm_alone_scores_as_synscale(run, tmp_path / "val")


def _every_training_is_a_tensorboard_run(run):
    """`tensorboard --logdir runs/<study>/tensorboard`: one run per training
    named by its axes (its curve: the manifest's), with its evaluations
    beside it, read by TensorBoard's own multiplexer."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    from synscale.plan.graph import Plan
    board = EventMultiplexer().AddRunsFromDirectory(str(run / "tensorboard"))
    board.Reload()
    runs = board.Runs()
    assert len(runs) == 6 + 12 and "real,vit,width=32,n=4,seed=0/train" in runs, sorted(runs)
    plan = Plan.from_json((run / "plan.json").read_text())
    for e in plan.of_kind("evaluate"):
        t = plan.by_id[e.inputs[0]]
        name = f"{_name(t)}/eval-{e.axes['eval_set']}"
        manifest = state.read_json(run / "stages/train" / t.id / "manifest.json")
        curve = [(p.step, p.value) for p in board.Scalars(f"{_name(t)}/train", "train/loss")]
        assert [s for s, _ in curve] == [s for s, _ in manifest["loss_curve"]]
        assert curve[-1][1] == pytest.approx(manifest["loss_curve"][-1][1], abs=1e-4)
        metrics = state.read_json(run / "stages/evaluate" / e.id / "metrics.json")
        (top1,) = board.Scalars(name, f"eval/{e.axes['eval_set']}/top1")
        assert top1.step == manifest["steps"] and top1.value == pytest.approx(metrics["top1"])


def _name(train) -> str:
    from synscale.plan.tensorboard import run_name
    return run_name(train.axes, train.spec["seed"])


def _rebuilt_with_timm_alone_scores_as_synscale(run, val):
    """README, "Taking models away": each trained model, rebuilt from its
    manifest with timm, torchvision and PIL only, loads strictly and gets
    synscale's top-1 and loss on the validation folder."""
    import timm
    import torch
    from PIL import Image
    from safetensors.torch import load_file
    from torchvision import transforms as T

    from synscale.plan.graph import Plan
    plan = Plan.from_json((run / "plan.json").read_text())
    checked = 0
    for e in plan.of_kind("evaluate"):
        if e.spec["eval_set"] != "imagenet-val":
            continue
        folder = run / "stages/train" / e.inputs[0]
        m = json.loads((folder / "manifest.json").read_text())
        model = timm.create_model(m["timm"]["model"], pretrained=False, **m["timm"]["kwargs"])
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
        model.eval()
        t = m["eval_transform"]
        assert t["interpolation"] == "bilinear"
        prep = T.Compose([T.Resize(t["resize_short_side"]), T.CenterCrop(t["center_crop"]),
                          T.ToTensor(), T.Normalize(**m["normalization"])])
        assert m["class_names"] == list(WNIDS)
        x, y = [], []
        for c, name in enumerate(m["class_names"]):
            for f in sorted((val / name).iterdir()):
                with Image.open(f) as im:
                    x.append(prep(im.convert("RGB")))
                y.append(c)
        with torch.no_grad():
            logits = model(torch.stack(x))
        ours = state.read_json(run / "stages/evaluate" / e.id / "metrics.json")
        right = int((logits.argmax(1) == torch.tensor(y)).sum())
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(y)).item()
        assert right == round(ours["top1"] * ours["n"]) and len(y) == ours["n"], (right, ours)
        assert abs(loss - ours["loss"]) < 1e-4, (loss, ours)
        checked += 1
    assert checked == 6


def test_missing_class_folders_stop_the_launch(tmp_path):
    class_folders(tmp_path / "train", WNIDS[:2], 2)
    class_folders(tmp_path / "val", WNIDS, 2)
    class_folders(tmp_path / "v2", ("0", "1", "2"), 2)
    (tmp_path / "classes.txt").write_text("\n".join(WNIDS) + "\n")
    study = tmp_path / "folders.toml"
    study.write_text(STUDY.format(root=tmp_path, sd=tmp_path / "no-sd")
                     .replace('real_images_per_class = [2, 3, 4]\n', 'sources = ["real"]\n'
                              'real_images_per_class = [2, 3, 4]\n'))
    r = run_module("synscale.launch", study, "--root", tmp_path / "runs")
    assert r.returncode == 2
    assert "no folder for 1 of 3 classes: n01484850" in " ".join(r.stderr.split())
    assert not (tmp_path / "runs").exists()


def test_clip_on_real_caption_pairs_mixed_with_generated_images(tmp_path):
    """A CLIP study on image folders: real images with the captions a pairs
    file gives them, generated ones with their prompts, half and half in
    every batch, scored zero-shot on the validation folder."""
    class_folders(tmp_path / "train", WNIDS, 4)
    class_folders(tmp_path / "val", WNIDS, 3, seed=1)
    (tmp_path / "classes.txt").write_text("\n".join(WNIDS) + "\n")
    pairs = ["image\tcaption"] + [f"{w}/{w}_{i}.JPEG\tphoto {i} of class {w}"
                                  for w in WNIDS for i in range(4)]
    (tmp_path / "pairs.tsv").write_text("\n".join(pairs) + "\n")
    sd = tiny.stable_diffusion(tmp_path / "sd")
    text = (STUDY.format(root=tmp_path, sd=sd)
            .replace("real_images_per_class = [2, 3, 4]\nsynthetic_images_per_class = [2, 3, 4]",
                     'sources = ["mixture"]\nmixture_images_per_class = [4]\n'
                     "synthetic_shares = [0.5]")
            .replace("resolution = 32", f'resolution = 32\ncaption_pairs = "{tmp_path}/pairs.tsv"')
            .replace("[model]", '[model]\nobjective = "clip"\nembed_dim = 16\ncontext_length = 12')
            .replace("mixup = 0.8\ncutmix = 1.0\nrandaugment = 9", "")
            .replace('sets = ["imagenet-val", "imagenet-v2"]',
                     'sets = ["imagenet-val"]\nzero_shot_templates = ["clip-templates-7"]')
            .replace(f'[evaluate.dirs]\nimagenet-v2 = "{tmp_path}/v2"', ""))
    study = tmp_path / "clip.toml"
    study.write_text(text)
    r = run_module("synscale.launch", study, "--root", tmp_path / "runs", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["stages"] == {"generate": 1, "pack": 2, "train": 1, "evaluate": 1}
    run = tmp_path / "runs/folders"
    captions = [state.read_json(p) for p in run.glob("stages/pack/*/captions.json")]
    assert len(captions) == 2
    real = next(c for c in captions if c[0][0].startswith("photo"))
    # the first real images of each class (2 of 4 in a half-and-half mixture of 4)
    assert real == [[f"photo {i} of class {w}"] for w in WNIDS for i in range(2)]
    generated = next(c for c in captions if c is not real)
    assert len(generated) == 6 and all(len(c) == 1 and not c[0].startswith("photo")
                                       for c in generated)
    (manifest,) = run.glob("stages/train/*/manifest.json")
    m = state.read_json(manifest)
    assert m["objective"] == "clip" and [p["micro_batch"] for p in m["parts"]] == [3, 3]
    (metrics,) = [state.read_json(p) for p in run.glob("stages/evaluate/*/metrics.json")]
    assert metrics["zero_shot_templates"] == "clip-templates-7"
    assert metrics["classes_scored"] == 3 and metrics["n"] == 9 and 0 <= metrics["top1"] <= 1

"""The mission's model sizes take real steps at 224 px on two ranks (gloo),
ZeRO-2, one image per rank and step: ViT-B/16 and ViT-L/16 classifiers and a
CLIP with a ViT-L/14 image tower. Each training is preempted with USR2 after
it starts (a collective checkpoint at step 1, written by both ranks), and
its processes end "requeued"; new ones resume from the checkpoint, take
step 2, write the whole weights, and evaluate them. What each costs is printed: parameters, checkpoint size
and seconds, peak resident memory per rank.

On this CPU a ViT-L/16 image costs ~10-20 s forward and backward, so these
are two steps, not training: the scores are not asserted, the shapes,
checkpoints and resume are. One launch per model, so that one model's
memory is gone before the next one's is taken (CLIP-L: ~7 GB per rank)."""
import re
import signal
import time

import pytest

from conftest import class_folders
from ranks import finish, start, wait_for
from synscale.plan import state

pytestmark = pytest.mark.slow

WNIDS = ("n01440764", "n01443537")  # tench, goldfish

STUDY = """
[study]
name = "{name}"
[data]
dataset = "imagefolder"
train_dir = "{root}/train"
val_dir = "{root}/val"
classes = "{root}/classes.txt"
resolution = 224
caption_prompts = "classnames"
[sweep]
sources = ["real"]
real_images_per_class = [2]
[model]
objective = "{objective}"
arch = "{arch}"
[train]
batch_size = 2
micro_batch_size = 1
min_steps = 2
max_steps = 2
zero_stage = 2
log_every = 1
checkpoint_every = 100
loader_workers = 1
[evaluate]
sets = ["imagenet-val"]
batch_size = 2
workers = 0
zero_shot_templates = ["clip-templates-7"]
[backend]
workers = 1
"""

MODELS = {  # name: (objective, arch)
    "vit-b16": ("classifier", "vit_base_patch16_224"),
    "vit-l16": ("classifier", "vit_large_patch16_224"),
    "clip-l14": ("clip", "ViT-L-14"),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("mission")
    class_folders(root / "train", WNIDS, 2)
    class_folders(root / "val", WNIDS, 2, seed=1)
    (root / "classes.txt").write_text("\n".join(WNIDS) + "\n")
    return root


@pytest.mark.parametrize("name", list(MODELS))
def test_mission_size_model_steps_checkpoints_resumes_and_evaluates(images, name):
    from safetensors import safe_open

    from synscale.study.expand import expand
    from synscale.study.load import load_study

    objective, arch = MODELS[name]
    study = images / f"{name}.toml"
    study.write_text(STUDY.format(name=name, root=images, objective=objective, arch=arch))
    plan = expand(load_study(study))
    (train,) = plan.of_kind("train")
    run = images / "runs" / name
    stage = run / "stages/train" / train.id
    log = stage / "log.txt"
    began = time.time()
    items = [(run, study, s.id) for s in plan.stages]
    procs = start(items, mode="exit", attempt=f"{name}-0", folder=images)
    # USR2 once the loop holds it: step 1 ends in a checkpoint on both ranks,
    # and the processes end "requeued", as on Slurm
    wait_for(lambda: log.exists() and "training from step 0 of 2 (" in log.read_text(), procs,
             timeout=900)
    procs[1].send_signal(signal.SIGUSR2)
    codes, outs = finish(procs, timeout=900)
    assert (run / f"requeued-{train.id}").read_text() == "True", outs[0][-3000:]
    # the requeued job: new processes resume from the checkpoint
    procs = start(items, mode="exit", attempt=f"{name}-1", folder=images)
    codes, outs = finish(procs, timeout=1200)
    assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]

    text = log.read_text()
    assert "preempted at step 1" in text and "exiting to be requeued" in text, text
    assert "training from step 1 of 2 (" in text, text  # the requeued attempt resumed
    saved = re.search(r"checkpoint at step 1: ([\d.]+) GB in ([\d.]+) s", text)
    assert saved, text
    manifest = state.read_json(stage / "manifest.json")
    assert manifest["resumed_at_steps"] == [1] and manifest["steps"] == 2
    assert [s for s, _ in manifest["loss_curve"]] == [1, 2]
    assert len(manifest["ranks"]) == 2
    # the weights are whole: as many values as the model has parameters
    with safe_open(stage / "model.safetensors", "pt") as f:
        values = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    assert values >= manifest["parameters"] * 0.999, (values, manifest["parameters"])
    (evaluation,) = plan.of_kind("evaluate")
    metrics = state.read_json(run / "stages/evaluate" / evaluation.id / "metrics.json")
    assert metrics["n"] == 4 and 0 <= metrics["top1"] <= 1
    print(f"\n{name} ({arch}, {objective}, 224 px, 2 ranks, ZeRO-2): "
          f"{manifest['parameters'] / 1e6:.1f}M parameters; checkpoint {saved.group(1)} GB "
          f"written in {saved.group(2)} s; weights {(stage / 'model.safetensors').stat().st_size / 1e9:.2f} GB; "
          f"peak RSS per rank {[r['peak_rss_gb'] for r in manifest['ranks']]} GB; "
          f"losses {manifest['loss_curve']}; top1 {metrics['top1']}; "
          f"{time.time() - began:.0f} s in all")


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n

"""The caption stage (real images -> captions, for IN-Captions prompts) with a
tiny BLIP-2, and how studies plan it."""
import pytest

import tiny_pipelines as tiny
from conftest import class_folders, read_generated
from synscale.plan import state
from synscale.plan.graph import Stage
from synscale.runtime.harness import execute

pytestmark = pytest.mark.slow
WNIDS = ("n01440764", "n01443537")  # tench, goldfish


def image_folder(root):
    class_folders(root, WNIDS, 3)
    for wnid in WNIDS:
        (root / wnid / "notes.txt").write_text("not an image")
    return root


def caption_spec(model, train_dir):
    return {"model": str(model), "per_class": 2, "classes": [0, 2], "batch_size": 2,
            "max_new_tokens": 6, "precision": "fp32", "device": "cpu",
            "data": {"dataset": "imagefolder", "train_dir": str(train_dir), "val_dir": "",
                     "classes": "imagenet-1k"}}


def test_caption_stage_feeds_in_captions_prompts_and_resumes_per_class(tmp_path):
    model = tiny.blip2(tmp_path / "blip2")
    spec = caption_spec(model, image_folder(tmp_path / "train"))
    caption = Stage("cap", "caption", spec)
    done = execute(str(tmp_path / "run"), caption, {})
    assert done == {**done, "images_captioned": 4, "classes": 2}
    folder = tmp_path / "run/stages/caption/cap"
    captions = state.read_json(folder / "captions.json")
    assert set(captions) == set(WNIDS) and all(len(v) == 2 for v in captions.values())
    part = state.read_json(folder / "captions-00000.json")
    assert part["images"] == ["n01440764_0.JPEG", "n01440764_1.JPEG"]  # first in name order

    # killed after the first class: the rerun captions the second only, the same way
    before = captions
    (folder / "DONE").unlink()
    (folder / "captions-00001.json").unlink()
    again = execute(str(tmp_path / "run"), caption, {})
    assert again["images_captioned"] == 2
    assert state.read_json(folder / "captions.json") == before

    gen = Stage("gen", "generate", {
        "generator": "embedded-ddpm", "weights": "", "prompts": "in-captions", "guidance": 0.0,
        "scheduler": "default", "steps": 2, "batch_size": 2, "shard_images": 2,
        "image_format": "png", "seed": 0, "indices": [0, 2],
        "classes": [0, 2], "data": spec["data"]}, ("cap",))
    execute(str(tmp_path / "run"), gen, {"cap": "caption"})
    prompts = list(read_generated(tmp_path / "run/stages/generate/gen")["prompts"])
    tench = [p for p in prompts[:2]]
    assert all(p.startswith("Tench, Tinca tinca") for p in tench)
    assert all(p.startswith("Goldfish, Carassius auratus") for p in prompts[2:])
    expected = {f"Tench, Tinca tinca, {c.rstrip('.')}" if c.strip() else "Tench, Tinca tinca"
                for c in captions["n01440764"]}
    assert set(tench) <= expected


def test_a_missing_class_folder_is_named(tmp_path):
    from synscale.data.folders import images_of
    with pytest.raises(FileNotFoundError, match="n01440764"):
        images_of(str(tmp_path), "n01440764", 2)

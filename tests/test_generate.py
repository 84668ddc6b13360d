"""The generate stage: shards with per-image metadata, and resume after a
crash that re-renders only missing shards, bit-identically."""
import numpy as np

from conftest import read_generated
from synscale.plan import state
from synscale.plan.graph import Stage
from synscale.plan.hashing import image_seed
from synscale.runtime.harness import execute
from synscale.stages.generate import shard_plan

SPEC = {"generator": "embedded-ddpm", "weights": "", "prompts": "classnames", "guidance": 1.0,
        "scheduler": "ddpm", "steps": 10, "batch_size": 4, "shard_images": 4,
        "image_format": "png", "seed": 3, "images_per_class": 6,
        "classes": [2, 4], "data": {"dataset": "digits", "split_seed": 0, "test_per_class": 45}}


def test_shard_plan_covers_every_image_once():
    shards = shard_plan((2, 4), 6, 4)
    assert shards == [(2, 0, 4), (2, 4, 2), (3, 0, 4), (3, 4, 2)]


def test_resume_renders_only_missing_shards_bit_identically(tmp_path):
    stage = Stage("gen1", "generate", SPEC)
    first = execute(str(tmp_path), stage, {})
    assert first["images_rendered"] == 12 and first["shards"] == 4
    folder = tmp_path / "stages/generate/gen1"
    shards = sorted(folder.glob("shard-*.npz"))
    before = {p.name: p.read_bytes() for p in shards}
    data = read_generated(folder)
    assert data["images"].shape == (12, 1, 8, 8)
    assert list(data["labels"]) == [2] * 6 + [3] * 6
    assert list(data["indices"]) == list(range(6)) * 2
    assert data["seeds"][7] == image_seed(3, 3, 1)
    assert set(data["prompts"]) == {"Digit 2", "Digit 3"}  # the classnames strategy
    manifest = state.read_json(folder / "manifest.json")
    assert manifest["guidance_scale"] == 2.0 and manifest["image_shape"] == [1, 8, 8]
    assert manifest["distinct_prompts_per_class"] == {"2": 1, "3": 1}

    # a crash after two shards: the others and DONE are gone
    (folder / "DONE").unlink()
    shards[1].unlink()
    shards[3].unlink()
    again = execute(str(tmp_path), stage, {})
    assert again["images_rendered"] == 4  # only the two lost shards (2 images each)
    assert {p.name: p.read_bytes() for p in folder.glob("shard-*.npz")} == before


def test_shards_gather_several_batches_and_a_crash_keeps_the_batches_rendered(tmp_path,
                                                                               monkeypatch):
    import pytest

    from synscale.data import shards
    spec = {**SPEC, "batch_size": 2, "shard_images": 6, "images_per_class": 7}
    # per class: [0, 6) in three batches; [6, 7) from the batch [6, 8) rendered whole
    whole = execute(str(tmp_path / "whole"), Stage("g", "generate", spec), {})
    assert whole["images_rendered"] == 14 and whole["shards"] == 4
    assert whole["images_dropped"] == 2  # index 7 of each class, rendered beside 6
    folder = tmp_path / "whole/stages/generate/g"
    assert sorted(p.name for p in folder.glob("*.npz")) == [
        "shard-00002-0000000.npz", "shard-00002-0000006.npz",
        "shard-00003-0000000.npz", "shard-00003-0000006.npz"]
    assert [len(shards.Shard(p)) for p in sorted(folder.glob("*.npz"))] == [6, 1, 6, 1]
    assert read_generated(folder)["indices"].tolist() == list(range(7)) * 2
    # the same images as one shard per batch: batches are the same, so bit for bit
    execute(str(tmp_path / "batches"),
            Stage("g", "generate", {**spec, "shard_images": 2}), {})
    assert np.array_equal(read_generated(tmp_path / "batches/stages/generate/g")["images"],
                          read_generated(folder)["images"])

    # killed as the first shard's three batches are to become the shard
    real_merge = shards.merge
    monkeypatch.setattr(shards, "merge", lambda parts, path: (_ for _ in ()).throw(
        RuntimeError("killed")))
    with pytest.raises(RuntimeError, match="killed"):
        execute(str(tmp_path / "killed"), Stage("g", "generate", spec), {})
    killed = tmp_path / "killed/stages/generate/g"
    assert sorted(p.name for p in killed.glob("*.npz")) == [
        "part-00002-0000000.npz", "part-00002-0000002.npz", "part-00002-0000004.npz"]
    monkeypatch.setattr(shards, "merge", real_merge)
    again = execute(str(tmp_path / "killed"), Stage("g", "generate", spec), {})
    assert again["images_rendered"] == 14 - 6  # the three batches rendered before were kept
    assert not list(killed.glob("part-*"))
    for p in folder.glob("*.npz"):
        assert (killed / p.name).read_bytes() == p.read_bytes()  # bit-identical shards


def test_images_do_not_depend_on_shards_class_ranges_or_size(tmp_path):
    """One class rendered under three cuts (shards, class range, largest size)
    keeps bit-identical images: batches are fixed by the indices alone."""
    from synscale.data import shards
    from synscale.plan.batches import render_batches

    assert render_batches(4, 10, 4) == [(4, 4), (8, 2)]  # [8, 12) rendered, 10 and 11 dropped
    cuts = {  # classes, images per class, shard_images (all with batch_size 4)
        "one shard, two classes": ([2, 4], 5, 8),
        "shards of 4, three classes": ([1, 4], 5, 4),
        "grown to 11, shards of 8, one class": ([3, 4], 11, 8),
    }
    seen = {}
    for name, (classes, per_class, shard_images) in cuts.items():
        spec = {**SPEC, "classes": classes, "images_per_class": per_class,
                "shard_images": shard_images}
        folder = tmp_path / name
        execute(str(folder), Stage("g", "generate", spec), {})
        rows = read_generated(folder / "stages/generate/g")
        of3 = rows["labels"] == 3
        assert rows["indices"][of3].tolist() == list(range(per_class))
        seen[name] = rows["images"][of3]
    first, *others = seen.values()
    for name, images in zip(list(seen)[1:], others):
        assert np.array_equal(images[:5], first), name  # bit for bit, not within a tolerance
    # the same cut twice gives the same bytes (encoding included)
    spec = {**SPEC, "classes": [3, 4], "images_per_class": 11, "shard_images": 8}
    execute(str(tmp_path / "again"), Stage("g", "generate", spec), {})
    for p in (tmp_path / "again/stages/generate/g").glob("shard-*.npz"):
        assert p.read_bytes() == (tmp_path / "grown to 11, shards of 8, one class/stages/"
                                  "generate/g" / p.name).read_bytes()
    assert len(shards.Shard(tmp_path / "again/stages/generate/g/shard-00003-0000008.npz")) == 3


def test_a_shard_that_cuts_a_batch_is_refused(tmp_path):
    import pytest
    spec = {**SPEC, "batch_size": 4, "shard_images": 6, "images_per_class": 12}
    with pytest.raises(Exception, match="shard_images 6 is not a multiple of batch_size 4"):
        execute(str(tmp_path), Stage("g", "generate", spec), {})

"""The generate stage: chunks of a config's images into its pool, with
per-image metadata; resume after a crash that re-renders only what is
missing, bit-identically; images that no cut (shards, class ranges, index
ranges, a grown size) changes."""
import numpy as np
import pytest

from conftest import read_generated
from synscale.data import shards
from synscale.plan import state
from synscale.plan.batches import gaps, pieces, whole_batches, windows
from synscale.plan.graph import Stage
from synscale.plan.hashing import content_id, image_seed
from synscale.runtime.harness import execute
from synscale.stages import runner_versions

SPEC = {"generator": "embedded-ddpm", "weights": "", "prompts": "classnames", "guidance": 1.0,
        "scheduler": "ddpm", "steps": 10, "batch_size": 4, "shard_images": 4,
        "image_format": "png", "seed": 3, "indices": [0, 6],
        "classes": [2, 4], "data": {"dataset": "digits", "split_seed": 0, "test_per_class": 45}}


def chunk(sid: str, **change) -> Stage:
    """A generate stage of SPEC's config, as expand plans it: its content is the
    config's (so every chunk of it shares one pool)."""
    spec = {**SPEC, **change}
    return Stage(sid, "generate", spec,
                 content=content_id("generate", spec, (), runner_versions()["generate"]))


def pool_files(root, stage: Stage, pattern="*.npz") -> list[str]:
    return sorted(p.name for p in (root / "pool" / stage.content).glob(pattern))


def test_ranges_cut_into_gaps_shards_and_whole_batches():
    have = [(0, 4, "a"), (8, 12, "b")]
    assert gaps(have, 0, 16) == [(4, 8), (12, 16)] and gaps(have, 2, 10) == [(4, 8)]
    assert gaps([], 3, 5) == [(3, 5)] and gaps(have, 0, 4) == []
    assert pieces(5, 19, 8) == [(5, 8), (8, 16), (16, 19)]
    # batches start at multiples of the batch size and render whole; they keep the range
    assert windows(4, 10, 4) == [(4, 4, 8), (8, 8, 10)]  # [8, 12) rendered, 10 and 11 dropped
    assert windows(5, 8, 4) == [(4, 5, 8)]  # a grown size's gap inside a batch


def test_resume_renders_only_missing_shards_bit_identically(tmp_path):
    stage = chunk("gen1")
    first = execute(str(tmp_path), stage, {})
    # [4, 8) of each class renders whole, and 6 and 7 are kept for a larger size
    assert first["images_rendered"] == 16 and first["shards"] == 4
    assert "images_dropped" not in first
    folder = tmp_path / "stages/generate/gen1"
    pool = tmp_path / "pool" / stage.content
    before = {p.name: p.read_bytes() for p in pool.glob("shard-*.npz")}
    assert sorted(before) == ["shard-00002-0000000-0000004.npz", "shard-00002-0000004-0000004.npz",
                              "shard-00003-0000000-0000004.npz", "shard-00003-0000004-0000004.npz"]
    assert not list(folder.glob("*.npz"))  # the images are the config's, in its pool
    data = read_generated(folder)
    assert data["images"].shape == (16, 1, 8, 8)
    assert list(data["labels"]) == [2] * 8 + [3] * 8
    assert list(data["indices"]) == list(range(8)) * 2
    assert data["seeds"][9] == image_seed(3, 3, 1)  # class 3, image 1
    assert set(data["prompts"]) == {"Digit 2", "Digit 3"}  # the classnames strategy
    manifest = state.read_json(folder / "manifest.json")
    assert manifest["guidance_scale"] == 2.0 and manifest["image_shape"] == [1, 8, 8]
    assert manifest["distinct_prompts_per_class"] == {"2": 1, "3": 1}
    assert manifest["pool"] == stage.content and len(manifest["shards"]) == 4

    # a crash after two shards: the others and DONE are gone
    (folder / "DONE").unlink()
    for name in ("shard-00002-0000004-0000004.npz", "shard-00003-0000000-0000004.npz"):
        (pool / name).unlink()
    again = execute(str(tmp_path), stage, {})
    assert again["images_rendered"] == 8 and again["images_found"] == 4 + 2  # of [0, 6)
    assert {p.name: p.read_bytes() for p in pool.glob("shard-*.npz")} == before


def test_shards_gather_several_batches_and_a_crash_keeps_the_batches_rendered(tmp_path,
                                                                               monkeypatch):
    spec = {"batch_size": 2, "shard_images": 6, "indices": [0, 7]}
    # per class: [0, 6) in three batches; [6, 8), the batch holding 6, whole
    stage = chunk("g", **spec)
    whole = execute(str(tmp_path / "whole"), stage, {})
    assert whole["images_rendered"] == 16 and whole["shards"] == 4
    pool = tmp_path / "whole/pool" / stage.content
    assert pool_files(tmp_path / "whole", stage) == [
        "shard-00002-0000000-0000006.npz", "shard-00002-0000006-0000002.npz",
        "shard-00003-0000000-0000006.npz", "shard-00003-0000006-0000002.npz"]
    assert [len(shards.Shard(p)) for p in sorted(pool.glob("*.npz"))] == [6, 2, 6, 2]
    assert read_generated(tmp_path / "whole/stages/generate/g")["indices"].tolist() == \
        list(range(8)) * 2
    # the same images as one shard per batch: batches are the same, so bit for bit
    execute(str(tmp_path / "batches"), chunk("g", **{**spec, "shard_images": 2}), {})
    assert np.array_equal(read_generated(tmp_path / "batches/stages/generate/g")["images"],
                          read_generated(tmp_path / "whole/stages/generate/g")["images"])

    # killed as the first shard's three batches are to become the shard
    real_merge = shards.merge
    monkeypatch.setattr(shards, "merge", lambda parts, path: (_ for _ in ()).throw(
        RuntimeError("killed")))
    with pytest.raises(RuntimeError, match="killed"):
        execute(str(tmp_path / "killed"), stage, {})
    assert pool_files(tmp_path / "killed", stage) == [
        "part-00002-0000000-0000002.npz", "part-00002-0000002-0000002.npz",
        "part-00002-0000004-0000002.npz"]
    monkeypatch.setattr(shards, "merge", real_merge)
    again = execute(str(tmp_path / "killed"), stage, {})
    assert again["images_rendered"] == 16 - 6  # the three batches rendered before were kept
    assert not pool_files(tmp_path / "killed", stage, "part-*")
    for p in pool.glob("*.npz"):  # bit-identical shards
        assert (tmp_path / "killed/pool" / stage.content / p.name).read_bytes() == p.read_bytes()


def test_images_do_not_depend_on_shards_chunks_or_size(tmp_path):
    """Class 3's first five images under three cuts (shards; class ranges; index
    ranges, one a grown size), each rendered from nothing in a pool of its own:
    bit-identical, batches being fixed by the indices alone."""
    cuts = {  # chunks as (classes, indices), and shard_images (all with batch_size 4)
        "one chunk of two classes, shards of 8": ([([2, 4], [0, 5])], 8),
        "three classes in two chunks to 8, shards of 4": ([([1, 4], [0, 4]), ([1, 4], [4, 8])],
                                                          4),
        "one class in three chunks to 11, shards of 4": ([([3, 4], [0, 4]), ([3, 4], [4, 8]),
                                                          ([3, 4], [8, 11])], 4),
    }
    seen = {}
    for name, (chunks, shard_images) in cuts.items():
        folders = []
        for k, (classes, indices) in enumerate(chunks):
            stage = chunk(f"g{k}", classes=classes, indices=indices, shard_images=shard_images)
            execute(str(tmp_path / name), stage, {})
            folders.append(tmp_path / name / "stages/generate" / stage.id)
        rows = read_generated(*folders)
        of3 = rows["labels"] == 3
        stop = whole_batches(chunks[-1][1][1], 4)  # the last batch is kept whole
        assert rows["indices"][of3].tolist() == list(range(stop))
        seen[name] = rows["images"][of3][:5]
    first, *others = seen.values()
    for name, images in zip(list(seen)[1:], others):
        assert np.array_equal(images, first), name  # bit for bit, not within a tolerance


def test_a_grown_or_recut_config_renders_only_the_images_its_pool_lacks(tmp_path):
    """Chunks of one config share its pool: a size grown from 5 to 11 renders
    the batch [8, 12) only (5 to 7 came with the batch [4, 8), kept whole), a
    class range cut another way renders nothing, and the images equal a render
    from nothing."""
    small = chunk("small", classes=[2, 4], indices=[0, 5])
    execute(str(tmp_path / "run"), small, {})
    grown = chunk("grown", classes=[2, 4], indices=[0, 11])
    done = execute(str(tmp_path / "run"), grown, {})
    assert (done["images_rendered"], done["images_found"]) == (2 * 4, 2 * 8)
    recut = chunk("recut", classes=[3, 4], indices=[0, 11], shard_images=8)
    done = execute(str(tmp_path / "run"), recut, {})
    assert (done["images_rendered"], done["images_found"]) == (0, 11)
    assert state.read_json(tmp_path / "run/stages/generate/recut/manifest.json")["shards"] == [
        "shard-00003-0000000-0000004.npz", "shard-00003-0000004-0000004.npz",
        "shard-00003-0000008-0000004.npz"]
    fresh = chunk("fresh", classes=[2, 4], indices=[0, 11])
    execute(str(tmp_path / "fresh"), fresh, {})
    a = read_generated(tmp_path / "run/stages/generate/grown")
    b = read_generated(tmp_path / "fresh/stages/generate/fresh")
    assert a["indices"].tolist() == b["indices"].tolist() == list(range(12)) * 2
    assert np.array_equal(a["images"], b["images"])


def test_a_shard_that_cuts_a_batch_still_holds_the_images_of_whole_batches(tmp_path):
    """A study whose shards would cut a batch is refused (test_study.py), as it
    renders such a batch twice; a chunk cut so still gives the same images."""
    cut = chunk("g", batch_size=4, shard_images=6, indices=[0, 12])
    done = execute(str(tmp_path / "cut"), cut, {})
    assert done["images_rendered"] == 24 and done["images_dropped"] == 2 * 4  # [4, 8) twice
    execute(str(tmp_path / "whole"), chunk("g", batch_size=4, shard_images=4, indices=[0, 12]), {})
    assert np.array_equal(read_generated(tmp_path / "cut/stages/generate/g")["images"],
                          read_generated(tmp_path / "whole/stages/generate/g")["images"])

"""Shards of encoded images: lossless where promised, deterministic bytes,
one image decoded without the rest, and rows across stages in class order."""
import numpy as np
import pytest

from synscale.data import shards
from synscale.plan import state


def _rgb(n, side=32, seed=0):
    """Smooth images (gradients plus a little noise): compress like photos, not like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:side, :side] / side
    base = np.stack([x, y, (x + y) / 2], axis=-1)
    out = [(base * rng.uniform(0.3, 1, 3) + rng.normal(0, 0.01, base.shape)).clip(0, 1)
           for _ in range(n)]
    return (np.stack(out) * 255).round().astype(np.uint8)


def _meta(label, n, start=0):
    return {"labels": np.full(n, label), "indices": np.arange(start, start + n),
            "prompts": np.array([f"p{label}-{start + i}" for i in range(n)])}


def test_png_is_lossless_for_pixels_and_float_samples(tmp_path):
    images = _rgb(3)
    shards.write(tmp_path / "a.npz", images, _meta(0, 3), "png", 95)
    back = shards.Shard(tmp_path / "a.npz")
    assert back.encoding == "png" and np.array_equal(back.images(), images)
    floats = np.random.default_rng(1).uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    shards.write(tmp_path / "f.npz", floats, _meta(0, 4), "png", 95)
    back = shards.Shard(tmp_path / "f.npz")
    assert back.encoding == shards.FLOAT_ENCODING
    assert back.images().dtype == np.float32 and back.images().tobytes() == floats.tobytes()


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_lossy_formats_are_close_smaller_and_deterministic(tmp_path, fmt):
    images = _rgb(4, side=64)
    size = shards.write(tmp_path / "a.npz", images, _meta(0, 4), fmt, 90)
    shards.write(tmp_path / "b.npz", images, _meta(0, 4), fmt, 90)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    back = shards.Shard(tmp_path / "a.npz").images()
    assert back.shape == images.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - images).mean() < 3
    assert size < images.nbytes / 2


def test_lossy_formats_refuse_float_samples(tmp_path):
    with pytest.raises(ValueError, match="losslessly"):
        shards.write(tmp_path / "f.npz", np.zeros((1, 1, 8, 8), np.float32), _meta(0, 1),
                     "jpeg", 95)
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_one_image_decodes_from_its_own_bytes(tmp_path):
    images = _rgb(5)
    shards.write(tmp_path / "a.npz", images, _meta(0, 5), "png", 95)
    shard = shards.Shard(tmp_path / "a.npz")
    assert len(shard) == 5 and np.array_equal(shard.image(3), images[3])
    assert list(shard.meta("indices")) == [0, 1, 2, 3, 4]


def test_an_image_is_read_from_its_own_bytes_alone_and_merges_keep_them(tmp_path, monkeypatch):
    images = _rgb(7)
    parts = [tmp_path / "p0.npz", tmp_path / "p1.npz"]
    shards.write(parts[0], images[:4], _meta(0, 4), "jpeg", 95)
    shards.write(parts[1], images[4:], _meta(0, 3, start=4), "jpeg", 95)
    single = tmp_path / "single.npz"
    shards.write(single, images, _meta(0, 7), "jpeg", 95)
    merged = tmp_path / "merged.npz"
    shards.merge(parts, merged)
    assert not any(p.exists() for p in parts)
    # the same file as writing the seven images at once
    assert merged.read_bytes() == single.read_bytes()
    shard = shards.Shard(merged)
    reads = []
    real_open = open

    def counting_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if str(path) == str(merged):
            real_read = f.read
            f.read = lambda n=-1: reads.append(n) or real_read(n)
        return f
    monkeypatch.setattr("builtins.open", counting_open)
    monkeypatch.setattr(np, "load", None)  # no whole-array read
    got = shard.image(5)
    monkeypatch.undo()
    assert np.array_equal(got, shards.Shard(single).image(5))
    size = int(shard.offsets[6] - shard.offsets[5])
    assert size in reads and sum(r for r in reads if r > 0) < size + 200  # its bytes, a header


def _stage(root, name, classes, per_class, batch, seed):
    """A finished generate stage's folder, as generate.run leaves it: its
    shards in the config's pool, its manifest naming them."""
    from synscale.plan.layout import shard_path
    folder, pool = root / "stages/generate" / name, root / "pool/config"
    folder.mkdir(parents=True)
    pool.mkdir(parents=True, exist_ok=True)
    plan = [(c, start, min(batch, per_class - start))
            for c in range(*classes) for start in range(0, per_class, batch)]
    for c, start, n in plan:
        shards.write(shard_path(pool, c, start, n), _rgb(n, seed=seed + c * 100 + start),
                     _meta(c, n, start), "png", 95)
    state.write_json(folder / "manifest.json",
                     {"pool": "config", "shards": [shard_path(pool, c, s, n).name
                                                   for c, s, n in plan]})
    return folder


def test_rows_of_several_stages_come_in_class_then_index_order(tmp_path):
    # stages given out of class order, shards smaller than a class
    b = _stage(tmp_path, "b", (2, 4), 3, 2, seed=1)
    a = _stage(tmp_path, "a", (0, 2), 3, 2, seed=1)
    rows = shards.Rows([b, a])
    assert rows.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert rows.meta("indices").tolist() == [0, 1, 2] * 4
    assert rows.meta("prompts")[4] == "p1-1"
    # row 4 is class 1, index 1: the second image of shard (1, 0)
    assert np.array_equal(rows[4], _rgb(2, seed=1 + 100)[1])
    # a prefix per class: the first two images of each, whatever the shards hold
    first = shards.Rows([b, a], per_class=2)
    assert first.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert first.meta("indices").tolist() == [0, 1] * 4 and first.meta("prompts")[3] == "p1-1"
    assert np.array_equal(first[3], rows[4])

"""The digits split and nested subsets read from one FFCV file by index."""
import numpy as np
import pytest

from synscale.data.digits import NUM_CLASSES, load_split
from synscale.data.ffcv_io import loader, prefix_indices, write_beton


def test_split_is_fixed_stratified_and_disjoint():
    a, b = load_split(0, 45), load_split(0, 45)
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.test_y, b.test_y)
    assert np.all(np.bincount(a.test_y, minlength=NUM_CLASSES) == 45)
    assert len(a.train_y) + len(a.test_y) == 1797
    from sklearn.datasets import load_digits
    total = np.bincount(load_digits().target, minlength=NUM_CLASSES)
    assert np.array_equal(a.train_per_class(), total - 45)
    assert a.train_x.min() >= -1 and a.train_x.max() <= 1
    assert not np.array_equal(load_split(1, 45).train_x, a.train_x)


def test_sizes_are_nested_per_class_prefixes(tmp_path):
    split = load_split(0, 45)
    index = write_beton(tmp_path, split.train_x, split.train_y)
    assert index["rows"] == len(split.train_y)
    seen = {}
    for n in (4, 8, 16):
        rows = prefix_indices(index, n)
        data = loader(tmp_path, rows, batch_size=64, seed=0, train=False)
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in data])
        x, y = np.concatenate(xs), np.concatenate(ys)
        assert np.all(np.bincount(y, minlength=NUM_CLASSES) == n)
        seen[n] = {c: x[y == c] for c in range(NUM_CLASSES)}
        # the rows are the pool's own first n images of each class, in order
        for c in range(NUM_CLASSES):
            assert np.array_equal(seen[n][c], split.train_x[split.train_y == c][:n])
    for c in range(NUM_CLASSES):
        assert np.array_equal(seen[8][c][:4], seen[4][c])
        assert np.array_equal(seen[16][c][:8], seen[8][c])


def test_asking_beyond_a_class_is_an_error(tmp_path):
    index = {"class_counts": [5, 3], "class_offsets": [0, 5]}
    try:
        prefix_indices(index, 4)
    except ValueError as e:
        assert "classes [1]" in str(e) and "only 3" in str(e)
    else:
        raise AssertionError("expected ValueError")


def _pack(folder, split, tag):
    captions = [[f"{tag} {y} {i}"] for i, y in enumerate(split.train_y)]
    return write_beton(folder, split.train_x, split.train_y, captions=captions)


def test_a_mixture_stream_holds_its_share_in_every_batch_and_resumes_anywhere(tmp_path):
    from synscale.data.stream import Part, Stream

    split = load_split(0, 45)
    packs = {}
    for tag in ("real", "synthetic"):
        (tmp_path / tag).mkdir()
        packs[tag] = _pack(tmp_path / tag, split, tag)
    parts = [Part(tmp_path / "real", prefix_indices(packs["real"], 6), 3),
             Part(tmp_path / "synthetic", prefix_indices(packs["synthetic"], 2), 1)]
    stream = Stream(parts, seed=0, workers=1, distributed=False, captions=True)
    first = []
    for _, (x, y, captions) in zip(range(50), stream.batches()):
        assert x.shape[0] == len(y) == len(captions) == 4
        # three real images then one generated, each with its own pack's caption of its class
        assert [c.split()[0] for c in captions] == ["real"] * 3 + ["synthetic"]
        assert all(int(c.split()[1]) == label for c, label in zip(captions, y.tolist()))
        first.append((x.numpy(), captions))
    # 20 real micro batches per epoch, 20 generated ones: 50 cross both epoch ends
    for start in (7, 20, 33):
        for (x, _, captions), (x0, c0) in zip(stream.batches(start), first[start:start + 5]):
            assert np.array_equal(x.numpy(), x0) and captions == c0


def test_real_pairs_give_every_packed_image_its_captions(tmp_path):
    from synscale.data.captions import read_pairs
    from synscale.data.stream import _pick

    root = tmp_path / "train"
    files = [root / "n01/a.jpg", root / "n01/b.jpg"]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("image\tcaption\nn01/a.jpg\ta fish\nn01/a.jpg\ta tench\nn01/b.jpg\tfins\n")
    assert read_pairs(pairs, root, files) == [["a fish", "a tench"], ["fins"]]
    # an image with several captions shows another one in some epoch
    assert {_pick(["a fish", "a tench"], 0, (0, 0), epoch) for epoch in range(8)} == {
        "a fish", "a tench"}
    with pytest.raises(ValueError, match=r"1 of the 3 packed .*first: n01/c.jpg"):
        read_pairs(pairs, root, files + [root / "n01/c.jpg"])

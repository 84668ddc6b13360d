"""The digits split and nested subsets read from one FFCV file by index."""
import numpy as np

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

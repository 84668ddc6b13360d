"""The reference classifier that scores generated images.

It is fitted on the real training pool only, so that its verdict on a
synthetic image says "this looks like a real digit of that class", not
"this looks like what the generator makes". A one-hidden-layer MLP on the 64
pixels is accurate enough on digits (~97%) and fits in about a second; its
hidden layer doubles as the feature space for the diversity measure, because
distances there track class-relevant shape more than raw pixel noise does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIDDEN = 64
BLOCK = 256  # images a score is computed with (Reference.proba_by_block)


@dataclass(frozen=True)
class Reference:
    clf: object  # a fitted sklearn MLPClassifier

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.clf.predict(_flat(x))

    def proba_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The probability it gives each image's intended class."""
        p = self.clf.predict_proba(_flat(x))
        column = {c: i for i, c in enumerate(self.clf.classes_)}
        return p[np.arange(len(p)), [column[int(c)] for c in y]]

    def proba_by_block(self, x: np.ndarray, y: np.ndarray, index: np.ndarray) -> np.ndarray:
        """`proba_of`, computed in blocks of a class's images [k*BLOCK, (k+1)*BLOCK)
        by index, each padded to BLOCK rows: a matrix product's rounding may
        depend on its row count, and an image's score must not depend on how
        many images its pack holds (a grown pack scores the old rows alike)."""
        out = np.empty(len(y), dtype=np.float64)
        y, index = np.asarray(y), np.asarray(index)
        for c in np.unique(y):
            rows = np.flatnonzero(y == c)
            block = index[rows] // BLOCK
            for k in np.unique(block):
                sel = rows[block == k]
                padded = np.zeros((BLOCK, *x.shape[1:]), dtype=x.dtype)
                padded[:len(sel)] = x[sel]
                out[sel] = self.proba_of(padded, np.full(BLOCK, c))[:len(sel)]
        return out

    def features(self, x: np.ndarray) -> np.ndarray:
        # The MLP's own hidden layer, recomputed from its weights (sklearn has
        # no public hook for it); ReLU matches the activation it was fitted with.
        h = _flat(x) @ self.clf.coefs_[0] + self.clf.intercepts_[0]
        return np.maximum(h, 0.0)


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def fit_reference(train_x: np.ndarray, train_y: np.ndarray, seed: int = 0) -> Reference:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    # A fixed iteration count with no early stopping (tol=0) makes the fit a
    # pure function of (data, seed): no held-out split, no stopping rule.
    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), alpha=1e-3, max_iter=300,
                        tol=0.0, n_iter_no_change=300, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(_flat(train_x), np.asarray(train_y))
    return Reference(clf)


def recognizability(ref: Reference, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of images the reference classifies as their intended label."""
    return float(np.mean(ref.predict(x) == np.asarray(y)))


def diversity(ref: Reference, x: np.ndarray, y: np.ndarray) -> float:
    """Mean over classes of the per-class feature std, averaged over feature dims.

    Within-class spread, so that a generator cannot look diverse merely by
    covering all ten classes; classes with fewer than two images are skipped.
    """
    feats, y = ref.features(x), np.asarray(y)
    spreads = [feats[y == c].std(axis=0).mean() for c in np.unique(y) if np.sum(y == c) > 1]
    return float(np.mean(spreads)) if spreads else 0.0

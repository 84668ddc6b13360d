"""Training input: micro batches from one pack, or from two at a fixed share
(a mixture of real and generated images), from any position.

Each pack's epoch order comes from (seed, epoch), so a position counted in
micro batches maps to an (epoch, batches into it) per pack: a resumed run
starts there and sees the same batches as an uninterrupted one. A mixture
draws `micro` images of each micro batch from each pack, so every batch holds
the study's share, and each pack runs through its own epochs.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synscale.plan import state


@dataclass(frozen=True)
class Part:
    folder: Path        # a finished pack stage
    rows: np.ndarray    # its rows this training reads (per-class prefixes)
    micro: int          # its images in every micro batch of one task


def _pick(captions: list[str], seed: int, image: tuple[int, int], epoch: int) -> str:
    """One of an image's captions, a new draw each epoch. `image` is its
    (class, index within the class), not its row: a grown pack holds the same
    image at another row, and must draw the same caption for it."""
    if len(captions) == 1:
        return captions[0]
    digest = hashlib.sha256(f"caption:{seed}:{image[0]}:{image[1]}:{epoch}".encode()).digest()
    return captions[int.from_bytes(digest[:8], "little") % len(captions)]


class Stream:
    def __init__(self, parts: list[Part], seed: int, workers: int, distributed: bool,
                 normalize: bool = True, captions: bool = False):
        from synscale.data.ffcv_io import loader

        self.parts, self.seed = parts, seed
        self.loaders = [loader(p.folder, p.rows, p.micro, seed=seed, workers=workers,
                               distributed=distributed, normalize=normalize, rows=captions)
                        for p in parts]
        self.captions = [state.read_json(Path(p.folder) / "captions.json") if captions else None
                         for p in parts]
        # where each class starts, to name a row's image by (class, index)
        self.offsets = [np.asarray(state.read_json(Path(p.folder) / "index.json")
                                   ["class_offsets"]) if captions else None for p in parts]

    def _cycle(self, k: int, start: int) -> Iterator[tuple]:
        """Batches of part k forever, from micro batch `start` on."""
        from synscale.data.ffcv_io import threads_kept

        data = self.loaders[k]
        epoch, skip = divmod(start, len(data))
        while True:
            data.next_epoch = epoch
            with threads_kept():  # FFCV's iter() sets torch's threads to its workers
                batches = iter(data)
            for i, batch in enumerate(batches):
                if i >= skip:
                    yield batch, epoch
            skip, epoch = 0, epoch + 1

    def batches(self, start: int = 0) -> Iterator[tuple]:
        """(images, labels, captions or None) micro batches from micro batch `start` on."""
        import torch

        for got in zip(*(self._cycle(k, start) for k in range(len(self.parts)))):
            images = torch.cat([b[0] for b, _ in got])
            labels = torch.cat([b[1] for b, _ in got])
            captions = None
            if self.captions[0] is not None:
                captions = [_pick(table[row], self.seed, (label, row - offsets[label]), epoch)
                            for (b, epoch), table, offsets in zip(got, self.captions,
                                                                  self.offsets)
                            for row, label in zip(b[2].tolist(), b[1].tolist())]
            yield images, labels, captions
